// `cloud-connect control` and `cloud-connect migrate` as a user runs them.
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import knexFactory from 'knex'
import { migrationNames } from '../../control/db/migrate.ts'
import { freshSchemaName, TEST_DATABASE_URL } from './harness.ts'

const BIN = fileURLToPath(new URL('../../bin/cloud-connect.js', import.meta.url))
const dataDir = mkdtempSync(join(tmpdir(), 'cc-cli-'))
t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
const env: NodeJS.ProcessEnv = { ...process.env, CC_DATA_DIR: dataDir, CC_LOG_LEVEL: 'info' }
delete env.DATABASE_URL

function cli (args: string[], extraEnv: Record<string, string> = {}): { status: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [BIN, ...args], { env: { ...env, ...extraEnv }, encoding: 'utf8', timeout: 60_000 })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

// Against Postgres (a private schema through the URL's search_path) when there is one: each PGlite
// start costs seconds, and `control` below covers the embedded database.
t.test('migrate up, status, down', async t => {
  let dbEnv: Record<string, string> = {}
  if (TEST_DATABASE_URL !== undefined) {
    const schema = freshSchemaName()
    const admin = knexFactory({ client: 'pg', connection: TEST_DATABASE_URL, pool: { min: 0, max: 1 } })
    await admin.raw(`create schema "${schema}"`)
    t.teardown(async () => {
      await admin.raw(`drop schema if exists "${schema}" cascade`)
      await admin.destroy()
    })
    const url = new URL(TEST_DATABASE_URL)
    url.searchParams.set('options', `-c search_path=${schema}`)
    dbEnv = { DATABASE_URL: url.toString() }
  }
  const names = migrationNames()
  const up = cli(['migrate', 'up'], dbEnv)
  t.equal(up.status, 0, up.stderr)
  t.match(up.stdout, `applied ${names[0]}`)
  t.match(cli(['migrate', 'status'], dbEnv).stdout, `applied  ${names[0]}`)
  t.match(cli(['migrate', 'down', '--all'], dbEnv).stdout, `rolled back ${names[0]}`)
  const bad = cli(['migrate', 'sideways'])
  t.equal(bad.status, 2)
  t.match(bad.stderr, /unknown action 'sideways'/)
})

t.test('control: a bad variable is one line and exit 2', async t => {
  const r = spawnSync(process.execPath, [BIN, 'control'], { env: { ...env, CC_API_PORT: 'eighty' }, encoding: 'utf8', timeout: 60_000 })
  t.equal(r.status, 2)
  t.equal(r.stderr.trim().split('\n').length, 1)
  t.match(r.stderr, /^cloud-connect control: CC_API_PORT: /)
  const rpc = spawnSync(process.execPath, [BIN, 'control'], { env: { ...env, CC_RPC_PORT: '65536' }, encoding: 'utf8', timeout: 60_000 })
  t.equal(rpc.status, 2, 'a bad RPC listener variable too')
  t.equal(rpc.stderr.trim().split('\n').length, 1)
  t.match(rpc.stderr, /^cloud-connect control: CC_RPC_PORT: /)
})

t.test('control: serves, migrates, stops on SIGTERM', async t => {
  const child = spawn(process.execPath, [BIN, 'control'], { env: { ...env, CC_API_HOST: '127.0.0.1', CC_API_PORT: '0', CC_RPC_HOST: '127.0.0.1', CC_RPC_PORT: '0' }, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let output = ''
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening line in: ${output}`)), 120_000)
    child.stdout.on('data', (chunk: Buffer) => {
      output += chunk.toString()
      const match = /"url":"(http:\/\/127\.0\.0\.1:\d+)"/.exec(output)
      if (match !== null) { clearTimeout(timer); resolve(match[1]) }
    })
    child.on('exit', code => { clearTimeout(timer); reject(new Error(`exited ${code}: ${output}`)) })
  })
  t.match(output, /migrations applied/)
  const health = await fetch(`${url}/health`)
  t.equal(health.status, 200)
  t.same(await health.json(), { status: 'ok', database: 'ok' })
  const missing = await fetch(`${url}/v1/missing`)
  t.equal(missing.status, 404)
  const exited = new Promise<number | null>(resolve => child.on('exit', code => resolve(code)))
  child.kill('SIGTERM')
  t.equal(await exited, 0, 'clean exit')
})
