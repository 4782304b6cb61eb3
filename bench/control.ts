/**
 * Control API throughput on real Postgres: the app listening on loopback, 20 users x 10 instances
 * (Business plan) with registered keys, then wrk against
 *   - POST /v1/tunnel/heartbeat, rotating over the 200 instance tokens,
 *   - GET /v1/instances, rotating over the 20 users' access tokens,
 * each for BENCH_SECONDS (default 10) after a 2 s warm-up, rate limits raised out of the way.
 * Target: >= 2,000 heartbeats/s with p99 < 50 ms on a 2-core machine.
 *
 * Run: CC_TEST_DATABASE_URL=postgres://... node bin/run-ts.js bench/control.ts
 * (or DATABASE_URL; --help lists the settings). Uses a fresh schema, dropped at the end. Needs
 * `wrk` on PATH; not root. BENCH_CONNECTIONS (default 16) and BENCH_POOL (default 10) set wrk's
 * connections and the database pool.
 * Besides wrk's numbers it prints the API process's CPU time per request (user + system), which
 * says what one core could serve even when the machine is shared. BENCH_PROFILE=DIR writes a
 * .cpuprofile of each measured run. A reference row runs the heartbeat's UPDATE straight through
 * knex with as many in flight as wrk has connections: the database's share, without HTTP.
 */
import { execFile } from 'node:child_process'
import { Session } from 'node:inspector/promises'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, hostname, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import knexFactory from 'knex'
import pino from 'pino'
import { createApp } from '../control/app.ts'
import { loadConfig } from '../control/config.ts'
import { createDb } from '../control/db/knex.ts'
import { migrateLatest } from '../control/db/migrate.ts'
import { generatePrivateKey, publicKeyFromPrivate } from '../proto/noise/keys.ts'
import { UsageError, exitOnBrokenPipe, numberSetting, parseBenchArgs } from './baseline/cli.ts'

const run = promisify(execFile)

const SPEC = {
  name: 'bench/control.ts',
  about: `Control API throughput on real Postgres: the app on loopback, 20 users x 10 instances with
registered keys, then wrk against POST /v1/tunnel/heartbeat (rotating over the 200 instance tokens)
and GET /v1/instances (rotating over the users' access tokens), each after a 2 s warm-up, plus the
heartbeat's UPDATE alone through knex as a reference. Prints a table with requests/s, p50/p99 and
the API's CPU time per request. Target: >= 2,000 heartbeats/s with p99 < 50 ms on 2 cores.

Needs a Postgres database (a fresh schema, dropped at the end) and wrk; not root. Settings come
from the environment.`,
  options: {},
  env: {
    CC_TEST_DATABASE_URL: 'Postgres URL (or DATABASE_URL); required',
    BENCH_SECONDS: 'seconds of each measured run, 1-30 (default 10)',
    BENCH_CONNECTIONS: 'wrk connections, 1-1000 (default 16)',
    BENCH_POOL: 'database pool size, 1-100 (default 10)',
    BENCH_PROFILE: 'directory for a .cpuprofile of each measured run (default: none)',
  },
} as const

exitOnBrokenPipe()
const { URL_ENV, SECONDS, CONNECTIONS, POOL } = parseBenchArgs(SPEC, () => {
  const url = process.env.CC_TEST_DATABASE_URL ?? process.env.DATABASE_URL
  if (url === undefined || url === '') throw new UsageError('set CC_TEST_DATABASE_URL or DATABASE_URL to a Postgres database')
  return {
    URL_ENV: url,
    SECONDS: numberSetting('BENCH_SECONDS', process.env.BENCH_SECONDS ?? '10', 1, 30),
    CONNECTIONS: numberSetting('BENCH_CONNECTIONS', process.env.BENCH_CONNECTIONS ?? '16', 1, 1000),
    POOL: numberSetting('BENCH_POOL', process.env.BENCH_POOL ?? '10', 1, 100),
  }
})
const USERS = 20
const PER_USER = 10
const GATEWAY_KEY = publicKeyFromPrivate(generatePrivateKey()).toString('base64')

interface WrkResult {
  /** API process CPU microseconds per request. */
  cpuUsPerRequest?: number
  requests: number
  seconds: number
  non2xx: number
  socketErrors: number
  p50: number
  p99: number
  max: number
}

/** A wrk Lua script that cycles through `tokens` and prints its summary as one JSON line. */
function script (method: string, path: string, tokens: string[], body: string | undefined): string {
  return `
local tokens = { ${tokens.map(t => JSON.stringify(t)).join(', ')} }
local body = ${body === undefined ? 'nil' : JSON.stringify(body)}
local i = 0
request = function ()
  i = i + 1
  local headers = { ["Authorization"] = "Bearer " .. tokens[(i % #tokens) + 1] }
  if body then headers["Content-Type"] = "application/json" end
  return wrk.format("${method}", "${path}", headers, body)
end
done = function (summary, latency, requests)
  local e = summary.errors
  io.write(string.format('RESULT {"requests":%d,"us":%d,"non2xx":%d,"socket":%d,"p50":%d,"p99":%d,"max":%d}\\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
`
}

async function wrk (dir: string, url: string, method: string, path: string, tokens: string[], body: string | undefined, seconds: number): Promise<WrkResult> {
  const file = join(dir, `${method}-${path.replace(/\W/g, '_')}.lua`)
  writeFileSync(file, script(method, path, tokens, body))
  const { stdout } = await run('wrk', ['-t1', `-c${CONNECTIONS}`, `-d${seconds}s`, '--timeout', '5s', '-s', file, url], { timeout: (seconds + 20) * 1000 })
  const line = stdout.split('\n').find(l => l.startsWith('RESULT '))
  if (line === undefined) throw new Error(`no result from wrk:\n${stdout}`)
  const r = JSON.parse(line.slice(7)) as { requests: number, us: number, non2xx: number, socket: number, p50: number, p99: number, max: number }
  return { requests: r.requests, seconds: r.us / 1e6, non2xx: r.non2xx, socketErrors: r.socket, p50: r.p50 / 1000, p99: r.p99 / 1000, max: r.max / 1000 }
}

const PROFILE_DIR = process.env.BENCH_PROFILE

/** Runs a measured wrk pass, with the API process's CPU time (and optionally a CPU profile) around it. */
async function measured (name: string, pass: () => Promise<WrkResult>): Promise<WrkResult> {
  const session = PROFILE_DIR === undefined ? undefined : new Session()
  if (session !== undefined) {
    session.connect()
    await session.post('Profiler.enable')
    await session.post('Profiler.start')
  }
  const before = process.cpuUsage()
  const result = await pass()
  const used = process.cpuUsage(before)
  if (session !== undefined) {
    const { profile } = await session.post('Profiler.stop')
    writeFileSync(join(PROFILE_DIR!, `${name}.cpuprofile`), JSON.stringify(profile))
    session.disconnect()
  }
  return { ...result, cpuUsPerRequest: (used.user + used.system) / result.requests }
}

/** The heartbeat's statement alone, CONNECTIONS at a time, for `seconds`: requests/s and latencies. */
async function databaseAlone (ids: Array<{ id: string, token_jti: string }>, seconds: number): Promise<WrkResult> {
  const latencies: number[] = []
  const deadline = performance.now() + seconds * 1000
  const start = performance.now()
  let next = 0
  await Promise.all(Array.from({ length: CONNECTIONS }, async () => {
    while (performance.now() < deadline) {
      const row = ids[next++ % ids.length]
      const t0 = performance.now()
      await db('instances').where(row).whereRaw("set_config('synchronous_commit', 'off', true) is not null").update({ tunnel_state: 'connected' })
      latencies.push(performance.now() - t0)
    }
  }))
  const elapsed = (performance.now() - start) / 1000
  latencies.sort((a, b) => a - b)
  const at = (q: number): number => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]
  return { requests: latencies.length, seconds: elapsed, non2xx: 0, socketErrors: 0, p50: at(0.5), p99: at(0.99), max: latencies[latencies.length - 1] }
}

const schema = `ccbench_${process.pid}_${randomBytes(3).toString('hex')}`
const db = createDb({ url: URL_ENV, schema, poolMax: POOL })
const dataDir = mkdtempSync(join(tmpdir(), 'cc-bench-'))
let app: Awaited<ReturnType<typeof createApp>> | undefined
try {
  await migrateLatest(db)
  const config = loadConfig({
    CC_API_HOST: '127.0.0.1',
    CC_API_PORT: '0',
    CC_DATA_DIR: dataDir,
    CC_ARGON2_MEMORY_KIB: '64',
    CC_ARGON2_TIME_COST: '1',
    CC_RATE_PER_TOKEN: '10000000/10000000',
    CC_RATE_PER_IP: '10000000/10000000',
    CC_RATE_AUTH_PER_IP: '10000000/10000000',
    CC_RATE_LOGIN_FAILURES_PER_ADDRESS: '10000000/10000000',
    CC_RATE_LOGIN_FAILURES_PER_ACCOUNT: '10000000/10000000',
    CC_RATE_MAIL_PER_ACCOUNT: '10000000/10000000',
    CC_RATE_AUTH_FAILURES_PER_IP: '10000000/10000000',
    CC_GATEWAY_PUBLIC_KEY: GATEWAY_KEY,
    CC_LOG_LEVEL: 'silent',
  })
  app = await createApp(config, {
    db,
    logger: pino({ level: 'silent' }),
    mailTransport: { deliver: async () => {} },
    subscriptions: async () => ({ plan: 'business', status: 'active' }),
  })
  await app.start()
  const base = app.info.uri
  const { services } = app.app

  // Accounts are set up through the services (argon2 and mail are not what is measured here).
  const accessTokens: string[] = []
  const instanceTokens: string[] = []
  for (let u = 0; u < USERS; u++) {
    const email = `bench-${u}@example.com`
    await services.accounts.register({ name: `Bench ${u}`, email, password: 'correct horse battery', acceptMarketing: false, erugoVersion: null })
    await db('users').where({ email }).update({ account_status: 'active' })
    const user = (await services.accounts.findByEmail(email))!
    const { accessToken } = await services.sessions.start(user)
    accessTokens.push(accessToken)
    for (let i = 0; i < PER_USER; i++) {
      const created = await app.inject({ method: 'POST', url: '/v1/instances', headers: { authorization: `Bearer ${accessToken}` }, payload: { name: `Server ${i}`, subdomain: `bench-${u}-${i}` } })
      if (created.statusCode !== 201) throw new Error(`create: ${created.statusCode} ${created.payload}`)
      const token = (JSON.parse(created.payload) as { credentials: { instance_token: string } }).credentials.instance_token
      const key = publicKeyFromPrivate(generatePrivateKey()).toString('base64')
      const registered = await app.inject({ method: 'POST', url: '/v1/tunnel/register', headers: { authorization: `Bearer ${token}` }, payload: { public_key: key } })
      if (registered.statusCode !== 200) throw new Error(`register: ${registered.statusCode} ${registered.payload}`)
      instanceTokens.push(token)
    }
  }

  const wrkDir = mkdtempSync(join(tmpdir(), 'cc-bench-wrk-'))
  const heartbeatBody = JSON.stringify({ timestamp: new Date().toISOString() })
  const results: Array<[string, WrkResult]> = []
  try {
    await wrk(wrkDir, base, 'POST', '/v1/tunnel/heartbeat', instanceTokens, heartbeatBody, 2)
    results.push(['POST /v1/tunnel/heartbeat (200 instance tokens)', await measured('heartbeat', async () => await wrk(wrkDir, base, 'POST', '/v1/tunnel/heartbeat', instanceTokens, heartbeatBody, SECONDS))])
    const ids = await db('instances').select('id', 'token_jti') as Array<{ id: string, token_jti: string }>
    results.push(['reference: the heartbeat UPDATE alone through knex (no HTTP)', await measured('database', async () => await databaseAlone(ids, SECONDS))])
    await wrk(wrkDir, base, 'GET', '/v1/instances', accessTokens, undefined, 2)
    results.push([`GET /v1/instances (20 users, ${PER_USER} instances each)`, await measured('list', async () => await wrk(wrkDir, base, 'GET', '/v1/instances', accessTokens, undefined, SECONDS))])
  } finally {
    rmSync(wrkDir, { recursive: true, force: true })
  }

  const cpu = cpus()[0]?.model ?? 'unknown cpu'
  console.log(`Control API bench ${new Date().toISOString()} on ${hostname()} (${cpus().length} x ${cpu}), node ${process.version}, Postgres, wrk -t1 -c${CONNECTIONS} -d${SECONDS}s, load average ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
  console.log('| request | requests/s | p50 ms | p99 ms | max ms | non-2xx | socket errors | API CPU per request |')
  console.log('|---|---|---|---|---|---|---|---|')
  for (const [what, r] of results) {
    console.log(`| ${what} | ${Math.round(r.requests / r.seconds).toLocaleString('en-US')} | ${r.p50.toFixed(2)} | ${r.p99.toFixed(2)} | ${r.max.toFixed(1)} | ${r.non2xx} | ${r.socketErrors} | ${Math.round(r.cpuUsPerRequest!)} us |`)
  }
  const hb = results[0][1]
  const ok = hb.requests / hb.seconds >= 2000 && hb.p99 < 50 && hb.non2xx === 0
  console.log(`heartbeat target (>= 2,000/s, p99 < 50 ms, no errors): ${ok ? 'met' : 'NOT met'}`)
} finally {
  await app?.stop({ timeout: 2000 })
  await db.destroy()
  const admin = knexFactory({ client: 'pg', connection: URL_ENV, pool: { min: 0, max: 1 } })
  try { await admin.raw(`drop schema if exists "${schema}" cascade`) } finally { await admin.destroy() }
  rmSync(dataDir, { recursive: true, force: true })
}
