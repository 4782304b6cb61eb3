/**
 * CC_DATA_DIR belongs to the service's user alone: the embedded database (emails and password
 * hashes in its tables and WAL), the signing keys and the mail outbox. Checked on disk after the
 * real control service starts on PGlite, after writes through its API, and after Postgres has
 * created new files of its own (WAL segments, relations, a checkpoint).
 */
import t from 'tap'
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, relative } from 'node:path'
import pino from 'pino'
import { startControl } from '../../../control/server.ts'
import { PASSWORD, registration, testConfig } from '../harness.ts'

// A common default: without our own umask PGlite's files would come out 0666 and 0755.
process.umask(0o022)

/** Every entry under `root` (itself included) that grants anything to group or others. */
function exposed (root: string): string[] {
  const out: string[] = []
  const stack = [root]
  for (let guard = 0; stack.length > 0 && guard < 100_000; guard++) {
    const path = stack.pop()!
    const stat = lstatSync(path)
    if ((stat.mode & 0o077) !== 0) out.push(`${relative(root, path) || '.'} ${(stat.mode & 0o777).toString(8)}`)
    if (stat.isDirectory()) for (const entry of readdirSync(path)) stack.push(join(path, entry))
  }
  return out
}

function countFiles (root: string): number {
  let n = 0
  const stack = [root]
  for (let guard = 0; stack.length > 0 && guard < 100_000; guard++) {
    const path = stack.pop()!
    if (lstatSync(path).isDirectory()) for (const entry of readdirSync(path)) stack.push(join(path, entry))
    else n++
  }
  return n
}

async function start (t: Parameters<typeof testConfig>[0], dataDir?: string): Promise<Awaited<ReturnType<typeof startControl>> & { dataDir: string }> {
  const config = testConfig(t, { CC_API_HOST: '127.0.0.1', CC_API_PORT: '0', ...(dataDir !== undefined ? { CC_DATA_DIR: dataDir } : {}) })
  const control = await startControl(config, pino({ level: 'silent' }))
  t.teardown(async () => { await control.stop(1000) })
  return { ...control, dataDir: config.dataDir }
}

t.test('a new data directory: private after start-up, after API writes and after new WAL segments', async t => {
  const control = await start(t)
  t.equal(lstatSync(control.dataDir).mode & 0o777, 0o700, 'CC_DATA_DIR 0700')
  t.equal(lstatSync(join(control.dataDir, 'pglite')).mode & 0o777, 0o700, 'the PGlite directory 0700')
  t.ok(countFiles(join(control.dataDir, 'pglite')) > 100, 'PGlite wrote its cluster there')
  t.same(exposed(control.dataDir), [], 'after start-up nothing is open to group or others')

  const email = `modes-${process.pid}@example.com`
  const reg = await control.app.inject({ method: 'POST', url: '/v1/auth/register', payload: registration(email), remoteAddress: '127.0.0.1' })
  t.equal(reg.statusCode, 201, 'registered through the API')
  const login = await control.app.inject({ method: 'POST', url: '/v1/auth/login', payload: { email, password: PASSWORD }, remoteAddress: '127.0.0.1' })
  t.equal(login.statusCode, 200)

  const walBefore = readdirSync(join(control.dataDir, 'pglite', 'pg_wal')).filter(f => /^[0-9A-F]{24}$/.test(f))
  await control.db.raw('create table mode_probe (x text)')
  await control.db.raw("insert into mode_probe select repeat('x', 500) from generate_series(1, 2000)")
  await control.db.raw('select pg_switch_wal()')
  await control.db.raw("insert into mode_probe select repeat('y', 500) from generate_series(1, 2000)")
  await control.db.raw('checkpoint')
  const walAfter = readdirSync(join(control.dataDir, 'pglite', 'pg_wal')).filter(f => /^[0-9A-F]{24}$/.test(f))
  t.ok(walAfter.some(f => !walBefore.includes(f)), `a new WAL segment was created (${walAfter.join(', ')})`)
  t.same(exposed(control.dataDir), [], 'after writes, a new relation, a WAL switch and a checkpoint: still nothing open')

  // The mail outbox (no SMTP configured) holds the verification link.
  await control.app.app.services.mailer.drain()
  const outbox = join(control.dataDir, 'outbox')
  t.ok(readdirSync(outbox).length > 0, 'a verification mail in the outbox')
  t.ok(readdirSync(outbox).some(f => readFileSync(join(outbox, f), 'utf8').includes(email)))
  t.same(exposed(control.dataDir), [], 'the outbox too')
})

t.test('an existing data directory left open: closed at start-up', async t => {
  const config = testConfig(t)
  const dataDir = config.dataDir
  chmodSync(dataDir, 0o755)
  writeFileSync(join(dataDir, 'token-keys.json'), '{}\n', { mode: 0o644 })
  chmodSync(join(dataDir, 'token-keys.json'), 0o666)
  mkdirSync(join(dataDir, 'outbox'), { mode: 0o755 })
  chmodSync(join(dataDir, 'outbox'), 0o777)
  writeFileSync(join(dataDir, 'outbox', 'old.eml'), 'To: someone@example.com\n')
  chmodSync(join(dataDir, 'outbox', 'old.eml'), 0o644)
  mkdirSync(join(dataDir, 'tls'))
  chmodSync(join(dataDir, 'tls'), 0o755)
  t.ok(exposed(dataDir).length >= 4, 'open before')

  await start(t, dataDir)
  t.same(exposed(dataDir), [], 'nothing open after start-up')
})
