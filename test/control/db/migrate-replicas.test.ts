import t from 'tap'
import pino from 'pino'
import knexFactory from 'knex'
import { migrationNames } from '../../../control/db/migrate.ts'
import { startControl, type RunningControl } from '../../../control/server.ts'
import { postgresReplicaTest, testConfig } from '../harness.ts'

const REPLICAS = 4

await postgresReplicaTest(t, 'empty database four replicas starting at once all come up, migrated once', async (t, database) => {
  const starts = Array.from({ length: REPLICAS }, async () => {
    const config = testConfig(t, { DATABASE_URL: database.url, CC_API_HOST: '127.0.0.1', CC_API_PORT: '0' })
    return await startControl(config, pino({ level: 'silent' }))
  })
  const outcomes = await Promise.allSettled(starts)
  const running = outcomes.flatMap(o => o.status === 'fulfilled' ? [o.value] : [])
  t.teardown(async () => { await Promise.all(running.map(async (r: RunningControl) => { await r.stop(0) })) })
  for (const o of outcomes) {
    if (o.status === 'rejected') t.fail(`a replica failed to start: ${(o.reason as Error).message}`)
  }
  t.equal(running.length, REPLICAS, 'every replica started')

  const admin = knexFactory({ client: 'pg', connection: database.url, pool: { min: 0, max: 1 } })
  t.teardown(async () => { await admin.destroy() })
  const rows = await admin('knex_migrations').select('name', 'batch') as Array<{ name: string, batch: number }>
  t.same(rows.map(r => r.name).sort(), migrationNames(), 'each migration recorded exactly once')
  t.same([...new Set(rows.map(r => r.batch))], [1], 'in one batch, by one replica')

  for (const replica of running) {
    const res = await fetch(`${replica.app.info.uri}/health`)
    t.equal(res.status, 200, `${replica.app.info.uri} answers /health`)
    await res.arrayBuffer()
  }
})
