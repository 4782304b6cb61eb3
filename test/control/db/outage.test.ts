// Database outages under load (real Postgres only): requests during the outage get 503
// SERVICE_UNAVAILABLE in the spec's shape, never a 500, and the API recovers without a restart.
import t, { type Test } from 'tap'
import { relayedPostgres } from '../../helpers/outage-relay.ts'
import { postgresOrSkip } from '../../helpers/postgres.ts'
import knexFactory from 'knex'
import { assertError, bearer, openTestDatabase, signUp, startApp, type Reply, type TestApp } from '../harness.ts'


function assertOkOr503 (t: Test, res: Reply, label: string): void {
  if (res.status === 503) assertError(t, res, 'SERVICE_UNAVAILABLE', label)
  else t.ok(res.status < 500, `${label}: ${res.status} (not a 5xx other than 503)`)
}


async function until (check: () => Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check()) return true
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  return false
}

/** Bounded background load: `count` requests, `concurrency` at a time; every response recorded. */
async function load (h: TestApp, token: string, count: number, concurrency: number, gapMs: number): Promise<Reply[]> {
  const replies: Reply[] = []
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < count) {
      const i = next++
      const res = i % 3 === 0
        ? await h.request('GET', '/health')
        : i % 3 === 1
          ? await h.request('GET', '/v1/user', undefined, bearer(token))
          : await h.request('POST', '/v1/auth/forgot-password', { email: 'load@example.com' })
      replies.push(res)
      await new Promise(resolve => setTimeout(resolve, gapMs))
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return replies
}

async function run (url: string): Promise<void> {
  t.test('Postgres goes away and comes back', async t => {
    const { relay, url: viaRelay } = await relayedPostgres(t, url)
    const db = await openTestDatabase(t, 'postgres', { url: viaRelay, acquireTimeoutMs: 1500, poolMax: 4 })
    const h = await startApp(t, db)
    const login = await signUp(h, 'load@example.com')

    const background = load(h, login.access_token, 150, 4, 20)
    await new Promise(resolve => setTimeout(resolve, 200))
    await relay.down()

    // During the outage: every kind of request is 503 in the contract's shape.
    const during = [
      await h.request('GET', '/health'),
      await h.request('GET', '/v1/user', undefined, bearer(login.access_token)),
      await h.request('POST', '/v1/auth/login', { email: 'load@example.com', password: 'correct horse battery' }),
      await h.request('POST', '/v1/auth/register', { name: 'X', email: 'outage@example.com', password: 'password123', password_confirmation: 'password123', accept_terms: true, accept_privacy: true }),
      await h.request('POST', '/v1/auth/refresh', { refresh_token: login.refresh_token }),
    ]
    for (const [i, res] of during.entries()) assertError(t, res, 'SERVICE_UNAVAILABLE', `during outage #${i}`)
    t.ok(during.every(r => r.headers['retry-after'] !== undefined), 'Retry-After on every 503')

    await new Promise(resolve => setTimeout(resolve, 300))
    await relay.up()
    t.ok(await until(async () => (await h.request('GET', '/health')).status === 200, 15_000), 'health recovers without a restart')
    t.equal((await h.request('GET', '/v1/user', undefined, bearer(login.access_token))).status, 200, 'authenticated reads recover')
    t.equal((await h.request('POST', '/v1/auth/login', { email: 'load@example.com', password: 'correct horse battery' })).status, 200, 'login recovers')

    const replies = await background
    t.equal(replies.length, 150, 'every background request answered')
    for (const [i, res] of replies.entries()) assertOkOr503(t, res, `background #${i}`)
    t.ok(replies.some(r => r.status === 503), 'some background requests met the outage')
    t.ok(replies.some(r => r.status === 200), 'some were served')
    const users = await db('users').where({ email: 'outage@example.com' })
    t.equal(users.length, 0, 'the registration refused during the outage left no row')
  })

  t.test('backends terminated under load (pg_terminate_backend)', async t => {
    const appName = `cc-outage-${process.pid}`
    const db = await openTestDatabase(t, 'postgres', { applicationName: appName, poolMax: 4, acquireTimeoutMs: 1500 })
    const h = await startApp(t, db)
    const login = await signUp(h, 'load@example.com')
    const admin = knexFactory({ client: 'pg', connection: url, pool: { min: 0, max: 1 } })
    t.teardown(async () => { await admin.destroy() })

    const background = load(h, login.access_token, 120, 4, 10)
    let terminated = 0
    for (let round = 0; round < 3; round++) {
      await new Promise(resolve => setTimeout(resolve, 150))
      const rows = await admin.raw('select pg_terminate_backend(pid) as ok from pg_stat_activity where application_name = ?', [appName])
      terminated += rows.rows.filter((r: { ok: boolean }) => r.ok).length
    }
    const replies = await background
    t.ok(terminated > 0, `terminated ${terminated} backends`)
    t.equal(replies.length, 120)
    for (const [i, res] of replies.entries()) assertOkOr503(t, res, `request #${i}`)
    const health = await h.request('GET', '/health')
    t.equal(health.status, 200, 'healthy right after', { body: health.body })
    t.equal((await h.request('GET', '/v1/user', undefined, bearer(login.access_token))).status, 200)
  })
}

const url = await postgresOrSkip(t, 'database outages', 'outage tests need a real Postgres server')
if (url !== undefined) await run(url)
