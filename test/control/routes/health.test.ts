// GET /ready against the real app: each component turns failing with its reason and the answer
// turns 503 naming it; Stripe and gateway RPC being off is not a failure.
import t, { type Test } from 'tap'
import { relayedPostgres } from '../../helpers/outage-relay.ts'
import { postgresOrSkip } from '../../helpers/postgres.ts'
import type { Db } from '../../../control/db/knex.ts'
import { GatewayRegistry } from '../../../control/rpc/registry.ts'
import { recordCertificateReports } from '../../../control/rpc/reports.ts'
import { assertError, forEachDatabase, openTestDatabase, startApp, type Reply, type TestApp } from '../harness.ts'
import { deliver, failSubscriptionWrites, startBillingApp, subscribe, type BillingHarness } from './billing-fixtures.ts'
import { newUser } from './tunnel-fixtures.ts'

const DAY_MS = 24 * 3600_000
const CORE = ['certificates', 'database', 'gateways', 'stripe_webhooks']

/** The fleet as control's RPC would record it: hellos and reports on the app's clock. */
function fleet (b: BillingHarness, db: Db): GatewayRegistry {
  return new GatewayRegistry({ db, ipam: b.h.services.ipam, fallback: b.h.services.gateway, configuredEndpoint: 'connect.example.test:51820', now: b.clock.now })
}

async function hello (registry: GatewayRegistry, gatewayId: string, port: number): Promise<void> {
  await registry.record({ protocol: 1, gatewayId, publicKey: `key-${gatewayId}`, endpoint: `${gatewayId}.example.test:${port}`, listenPort: port })
  await registry.noteReport(gatewayId, 0)
}

async function ready (h: TestApp): Promise<Reply> {
  return await h.request('GET', '/ready')
}

/** Asserts a 503 in the error shape whose message and details name `component` as failing. */
function assertNotReady (t: Test, res: Reply, component: string, detail: RegExp): void {
  assertError(t, res, 'SERVICE_UNAVAILABLE', component)
  t.match(res.body.error.message, new RegExp(`^Not ready: .*\\b${component}\\b`), `the message names ${component}`)
  t.equal(res.body.error.details.status, 'not_ready')
  t.ok(res.body.error.details.failing.includes(component), `${component} listed as failing`)
  t.equal(res.body.error.details.components[component].status, 'failing')
  t.match(res.body.error.details.components[component].detail, detail, `${component}: the reason`)
}

await forEachDatabase(t, async (t, db) => {
  t.test('every component ok, then each one failing with its reason, then ok again', async t => {
    const b = await startBillingApp(t, db)
    const h = b.h
    const registry = fleet(b, db)
    await hello(registry, 'gw-a', 51820)
    await hello(registry, 'gw-b', 51821)
    const start = b.clock.now()
    await recordCertificateReports(db, 'gw-a', [{ hostname: 'site.example.test', state: 'active', notAfter: new Date(start.getTime() + 60 * DAY_MS).toISOString() }], start)
    const payer = await newUser(h, 'ready-payer')
    await subscribe(t, b, payer.token, 'pro')

    let res = await ready(h)
    t.equal(res.status, 200, res.raw)
    t.equal(res.headers['cache-control'], 'no-store')
    t.equal(res.body.status, 'ready')
    t.same(res.body.failing, [])
    t.same(Object.keys(res.body.components).sort(), CORE, 'one entry per component')
    for (const name of CORE) {
      t.equal(res.body.components[name].status, 'ok', `${name} ok: ${res.body.components[name].detail}`)
      t.equal(res.body.components[name].checked_at, start.toISOString().replace(/\.\d{3}Z$/, 'Z'), `${name} checked now`)
    }
    t.match(res.body.components.gateways.detail, /^2\/2 gateways reporting \(alive window 15 s\)/)
    t.match(res.body.components.stripe_webhooks.detail, /^last event processed \d{4}-\d\d-\d\dT[\d:]+Z; 0 failed/)
    t.match(res.body.components.certificates.detail, /^1 certificate\(s\) reported, none failing/)

    // gw-b stops reporting; gw-a goes on.
    const okAt = res.body.components.gateways.checked_at
    b.clock.advance(10)
    await registry.noteReport('gw-a', 0)
    b.clock.advance(10)
    await registry.noteReport('gw-a', 0)
    res = await ready(h)
    assertNotReady(t, res, 'gateways', /^1\/2 gateways reporting \(alive window 15 s\); stopped reporting: gw-b \(last heard 20 s ago\)$/)
    t.equal(res.body.error.details.components.gateways.checked_at, okAt, 'checked_at stays at the last good check')
    t.same(res.body.error.details.failing, ['gateways'], 'only the gateways')
    t.equal(res.headers['retry-after'], '5')
    await registry.noteReport('gw-b', 0)
    t.equal((await ready(h)).status, 200, 'gw-b reports again: ready')

    // A gateway silent for over a day is retired, not down.
    b.clock.advance(25 * 3600)
    await registry.noteReport('gw-a', 0)
    res = await ready(h)
    t.equal(res.status, 200, res.raw)
    t.match(res.body.components.gateways.detail, /^1\/1 gateways reporting .*; 1 silent for over 24 h counted as retired$/)
    await registry.noteReport('gw-b', 0)

    // Certificates: one failing issuance, one expiring in 10 days.
    const now = b.clock.now()
    await recordCertificateReports(db, 'gw-a', [
      { hostname: 'broken.example.test', state: 'failing', lastError: 'acme: rate limited', nextRetryAt: new Date(now.getTime() + 3600_000).toISOString() },
      { hostname: 'soon.example.test', state: 'active', notAfter: new Date(now.getTime() + 10 * DAY_MS).toISOString() },
    ], now)
    res = await ready(h)
    assertNotReady(t, res, 'certificates', /^3 certificate\(s\) reported; 1 failing: broken\.example\.test; 1 expiring within 14 days: soon\.example\.test \(expires in 10 days\)$/)
    t.notMatch(res.raw, /rate limited/, 'no error text on the public route')
    await recordCertificateReports(db, 'gw-a', [
      { hostname: 'broken.example.test', state: 'active', notAfter: new Date(now.getTime() + 90 * DAY_MS).toISOString() },
      { hostname: 'soon.example.test', state: 'active', notAfter: new Date(now.getTime() + 90 * DAY_MS).toISOString() },
    ], now)
    t.equal((await ready(h)).status, 200, 'certificates renewed: ready')

    // A verified webhook whose processing fails, then the retry succeeds.
    const other = await newUser(h, 'ready-failing')
    const { events } = await subscribe(t, b, other.token, 'pro', { deliver: false })
    const drop = await failSubscriptionWrites(t, db, 'cc_test_ready_fail')
    t.ok((await deliver(b, events[0])).status >= 500, 'processing failed')
    res = await ready(h)
    assertNotReady(t, res, 'stripe_webhooks', new RegExp(`^last event processed .*; 1 event\\(s\\) failed in the last 60 min and not yet processed: ${events[0].id} \\(customer\\.subscription\\.created\\)$`))
    t.notMatch(res.raw, /injected failure/, 'no error text on the public route')
    await drop()
    t.equal((await deliver(b, events[0])).status, 200, 'the retry succeeds')
    res = await ready(h)
    t.equal(res.status, 200, res.raw)
    t.match(res.body.components.stripe_webhooks.detail, /; 1 failed in the last 60 min, none left unresolved$/)
  })

  t.test('Stripe and the gateway RPC off: not_configured, still ready', async t => {
    await Promise.all([db('gateways').del(), db('certificate_states').del()]) // left by the test above
    const h = await startApp(t, db)
    const res = await ready(h)
    t.equal(res.status, 200, res.raw)
    t.match(res.body.components.stripe_webhooks, { status: 'not_configured', detail: /CC_STRIPE_SECRET_KEY is not set/, checked_at: null })
    t.match(res.body.components.gateways, { status: 'not_configured', checked_at: null })
    t.equal(res.body.components.database.status, 'ok')
  })

  t.test('the OpenAPI document describes /ready', async t => {
    const h = await startApp(t, db)
    const doc = (await h.request('GET', '/v1/openapi.json')).body
    const get = doc.paths['/ready']?.get
    t.ok(get, '/ready is in the document')
    const schema = get.responses['200'].content['application/json'].schema
    t.same(schema.required?.sort(), ['components', 'failing', 'status'])
    t.same(schema.properties.status.enum, ['ready', 'not_ready'])
    t.same(schema.properties.components.properties.database.properties.status.enum, ['ok', 'failing', 'not_configured'])
    t.ok(get.responses['503'], 'the 503 is documented')
    t.match(get.description, /503 SERVICE_UNAVAILABLE/)
  })

  t.test('an RPC listener no gateway has said hello to: not ready', async t => {
    await Promise.all([db('gateways').del(), db('certificate_states').del()]) // left by the test above
    const h = await startApp(t, db, { deps: { readiness: { reportIntervalMs: 5_000, gatewayListener: true } } })
    assertNotReady(t, await ready(h), 'gateways', /^no gateway has said hello to the RPC listener$/)
  })
})

t.test('the embedded database closed: not ready, naming the database', async t => {
  const db = await openTestDatabase(t, 'pglite')
  const h = await startApp(t, db)
  t.equal((await ready(h)).status, 200)
  await db.destroy()
  const res = await ready(h)
  assertNotReady(t, res, 'database', /^the database does not answer$/)
  t.equal(res.body.error.details.failing[0], 'database', 'the database first')
})


const url = await postgresOrSkip(t, 'Postgres outage', 'a database outage needs a real Postgres server')
if (url !== undefined) {
  t.test('Postgres goes away: not ready naming the database; back: ready again', async t => {
    const { relay, url: viaRelay } = await relayedPostgres(t, url)
    const db = await openTestDatabase(t, 'postgres', { url: viaRelay, acquireTimeoutMs: 1500, poolMax: 2 })
    const h = await startApp(t, db)
    t.equal((await ready(h)).status, 200)
    await relay.down()
    const res = await ready(h)
    assertNotReady(t, res, 'database', /^the database does not answer$/)
    t.ok(res.body.error.details.components.database.checked_at !== null, 'the last good check is kept')
    await relay.up()
    const deadline = Date.now() + 15_000
    let back = await ready(h)
    while (back.status !== 200 && Date.now() < deadline) {
      await new Promise(resolve => setTimeout(resolve, 200))
      back = await ready(h)
    }
    t.equal(back.status, 200, 'ready again without a restart')
  })
}
