/**
 * Control's metrics (control/metrics.ts) over its real CC_METRICS_LISTEN listener: API latency by
 * route template (never the raw path) and status class, responses by status, refused tunnel
 * registrations as failed attempts, and the business gauges from Stripe webhook events, on PGlite
 * and on Postgres. The business query runs once per cache period however many gauges and scrapes.
 */
import t, { type Test } from 'tap'
import type { Server } from 'node:http'
import { pino } from 'pino'
import { ControlMetrics, serveMetrics, boundAddress } from '../../control/metrics.ts'
import type { Queryable } from '../../control/db/knex.ts'
import { parseExposition, sampleValue } from '../helpers/prometheus.ts'
import { bearer, forEachDatabase, openTestDatabase, signUp } from './harness.ts'
import { mustDeliver, newUser, startBillingApp, type BillingHarness } from './routes/billing-fixtures.ts'
import { mustCreate } from './routes/tunnel-fixtures.ts'

const DAY = 86400

async function listen (t: Test, metrics: ControlMetrics): Promise<string> {
  const server: Server = await serveMetrics(metrics.registry, { host: '127.0.0.1', port: 0 }, pino({ level: 'silent' }))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return `http://${boundAddress(server)}/metrics`
}

async function scrape (url: string): Promise<string> {
  const res = await fetch(url)
  if (res.status !== 200) throw new Error(`${url}: ${res.status}`)
  return await res.text()
}

let customers = 0

/** A subscription that began `startedDaysAgo` days ago, delivered as Stripe's created event; returns its id. */
async function subscribed (t: Test, b: BillingHarness, userId: string, plan: 'pro' | 'business', startedDaysAgo: number): Promise<string> {
  const at = b.seconds() - startedDaysAgo * DAY
  const sub = b.fake.createSubscription({ customer: `cus_metrics${process.pid}x${++customers}`, price: b.fake.prices[plan], at, metadata: { user_id: userId } })
  await mustDeliver(t, b, b.fake.event('customer.subscription.created', sub, at))
  return sub.id as string
}

await forEachDatabase(t, async (t, db) => {
  const b = await startBillingApp(t, db, { deps: { metrics: { businessCacheMs: 0 } } })
  const url = await listen(t, b.h.app.app.metrics)

  await t.test('API requests: latency by route template and status class, responses by status', async t => {
    const owner = await newUser(b.h, 'metrics-api')
    t.equal((await b.h.request('GET', '/v1/instances/inst_doesnotexist0000000000', undefined, bearer(owner.token))).status, 404)
    t.equal((await b.h.request('GET', '/v1/instances', undefined, bearer(owner.token))).status, 200)
    const text = await scrape(url)
    const samples = parseExposition(text)
    t.equal(sampleValue(samples, 'cc_api_request_duration_seconds_count', { route: '/v1/instances/{instance_id}', method: 'GET', status_class: '4xx' }), 1, 'the 404, under its route template')
    t.equal(sampleValue(samples, 'cc_api_request_duration_seconds_count', { route: '/v1/instances', method: 'GET', status_class: '2xx' }), 1)
    t.equal(sampleValue(samples, 'cc_api_request_duration_seconds_bucket', { route: '/v1/instances', method: 'GET', status_class: '2xx', le: '+Inf' }), 1)
    t.notMatch(text, /inst_doesnotexist/, 'never the raw path')
    t.ok(sampleValue(samples, 'cc_api_requests_total', { status: '404' })! >= 1)
    t.ok(sampleValue(samples, 'cc_api_requests_total', { status: '200' })! >= 2)
    t.ok(sampleValue(samples, 'nodejs_eventloop_lag_seconds') !== undefined, 'process metrics served too')
  })

  await t.test('POST /v1/tunnel/register refused: counted as failed attempts by status', async t => {
    t.equal((await b.h.request('POST', '/v1/tunnel/register', { public_key: 'x' })).status, 401)
    const owner = await newUser(b.h, 'metrics-register')
    const inst = await mustCreate(t, b.h, owner.token, 'metrics-register')
    t.equal((await b.h.request('POST', '/v1/tunnel/register', { public_key: 'not a key' }, bearer(inst.token))).status, 422)
    const text = await scrape(url)
    t.equal(sampleValue(text, 'cc_tunnel_failed_attempts_total', { reason: 'register_refused_401' }), 1)
    t.equal(sampleValue(text, 'cc_tunnel_failed_attempts_total', { reason: 'register_refused_422' }), 1)
  })

  await t.test('business gauges: sign-ups, verified, paying by plan, conversion and churn from webhook events', async t => {
    const base = parseExposition(await scrape(url))
    const signupsBefore = sampleValue(base, 'cc_business_signups')!
    const verifiedBefore = sampleValue(base, 'cc_business_verified_accounts')!
    t.equal(sampleValue(base, 'cc_business_paying_accounts', { plan: 'pro' }), 0)
    t.equal(sampleValue(base, 'cc_business_churn_ratio'), 0, 'no churn without anyone paying')

    const [a, bee, c, d] = [await newUser(b.h, 'pay-a'), await newUser(b.h, 'pay-b'), await newUser(b.h, 'pay-c'), await newUser(b.h, 'pay-d')]
    await signUp(b.h, `unverified-${process.pid}@example.com`)
    await subscribed(t, b, a.id, 'pro', 40)
    await subscribed(t, b, bee.id, 'business', 40)
    const cSub = await subscribed(t, b, c.id, 'pro', 40)
    await subscribed(t, b, d.id, 'pro', 5)
    // C cancelled ten days ago: paying at the window's start, not now.
    const ended = b.seconds() - 10 * DAY
    await mustDeliver(t, b, b.fake.event('customer.subscription.deleted', b.fake.updateSubscription(cSub, { status: 'canceled', canceledAt: ended, endedAt: ended }), ended))

    const text = parseExposition(await scrape(url))
    t.equal(sampleValue(text, 'cc_business_signups'), signupsBefore + 5)
    const verified = verifiedBefore + 4
    t.equal(sampleValue(text, 'cc_business_verified_accounts'), verified)
    t.equal(sampleValue(text, 'cc_business_paying_accounts', { plan: 'pro' }), 2, 'A and D')
    t.equal(sampleValue(text, 'cc_business_paying_accounts', { plan: 'business' }), 1, 'B')
    t.equal(sampleValue(text, 'cc_business_conversion_ratio'), 3 / verified)
    t.equal(sampleValue(text, 'cc_business_paying_accounts_30d_ago'), 3, 'A, B and C (D began within the window)')
    t.equal(sampleValue(text, 'cc_business_cancellations_30d'), 1, 'C')
    t.equal(sampleValue(text, 'cc_business_churn_ratio'), 1 / 3)
  })
})

t.test('business gauges: one query per cache period for every gauge and scrape', async t => {
  const db = await openTestDatabase(t, 'pglite')
  let queries = 0
  const counting = { raw: async (...args: Parameters<Queryable['raw']>) => { queries++; return await db.raw(...args) } } as unknown as Queryable
  const metrics = new ControlMetrics({ db: counting, now: () => new Date(), pastDueGraceSeconds: 0, logger: pino({ level: 'silent' }), businessCacheMs: 60_000 })
  const url = await listen(t, metrics)
  const first = await scrape(url)
  await scrape(url)
  t.equal(queries, 1, 'seven gauges, two scrapes, one query')
  t.equal(sampleValue(first, 'cc_business_signups'), 0)
})
