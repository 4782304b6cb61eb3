import t from 'tap'
import { migrateLatest, migrateRollback, migrationNames, migrationStatus } from '../../../control/db/migrate.ts'
import { forEachDatabase } from '../harness.ts'

t.test('migration files are timestamped and unique', async t => {
  const names = migrationNames()
  t.ok(names.length >= 1)
  for (const n of names) t.match(n, /^\d{14}_[a-z0-9_]+$/)
  t.equal(new Set(names.map(n => n.slice(0, 14))).size, names.length, 'no two share a timestamp')
})

await forEachDatabase(t, async (t, db) => {
  // The harness applied everything.
  let status = await migrationStatus(db)
  t.same(status, { applied: migrationNames(), pending: [] })
  t.same(await migrateLatest(db), [], 'up again: nothing to do')

  await db('users').insert({ id: 'usr_x', email: 'x@example.com', name: 'x', password_hash: 'x', terms_accepted_at: new Date(), privacy_accepted_at: new Date() })
  const rolledBack = await migrateRollback(db, true)
  t.same(rolledBack.sort(), migrationNames().sort(), 'down --all rolls every migration back')
  status = await migrationStatus(db)
  t.same(status, { applied: [], pending: migrationNames() })
  const exists = await db.schema.hasTable('users')
  t.equal(exists, false, 'tables dropped')

  t.same(await migrateLatest(db), migrationNames(), 'and up again')
  t.equal(await db.schema.hasTable('refresh_tokens'), true)
  await db('users').insert({ id: 'usr_y', email: 'y@example.com', name: 'y', password_hash: 'x', terms_accepted_at: new Date(), privacy_accepted_at: new Date() })
  const dup = await db('users').insert({ id: 'usr_z', email: 'y@example.com', name: 'z', password_hash: 'x', terms_accepted_at: new Date(), privacy_accepted_at: new Date() }).then(() => undefined, (e: { code?: string }) => e)
  t.equal(dup?.code, '23505', 'emails unique, same SQLSTATE on both databases')
})
