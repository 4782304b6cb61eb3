// The operator webhook against a local receiver on 127.0.0.1: each event once per occurrence, a
// recovery event when it clears, nothing for what vanished; a slow or failing receiver never holds
// the job, and retries are bounded. Two control replicas on one Postgres send gateway.down once.
import t, { type Test } from 'tap'
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import pino from 'pino'
import { createApp, type ControlApp } from '../../../control/app.ts'
import { createDb, type Db } from '../../../control/db/knex.ts'
import { migrateLatest } from '../../../control/db/migrate.ts'
import { runAlerts } from '../../../control/jobs/alerts.ts'
import { OperatorWebhook, type OperatorEvent } from '../../../control/services/operator-events.ts'
import { forEachDatabase, postgresReplicaTest, startApp, testConfig, type TestApp } from '../harness.ts'
import { Clock } from '../routes/tunnel-fixtures.ts'
import { until } from '../../helpers/until.ts'

interface Receiver { url: string, events: OperatorEvent[], requests: number, contentTypes: string[] }

/** An HTTP server on 127.0.0.1 that keeps every JSON body; `answer` decides the reply. */
async function startReceiver (t: Test, answer: (req: IncomingMessage, res: ServerResponse) => void = (_req, res) => { res.writeHead(204).end() }): Promise<Receiver> {
  const receiver: Receiver = { url: '', events: [], requests: 0, contentTypes: [] }
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      receiver.requests++
      receiver.contentTypes.push(String(req.headers['content-type']))
      receiver.events.push(JSON.parse(Buffer.concat(chunks).toString('utf8')) as OperatorEvent)
      answer(req, res)
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => { server.closeAllConnections(); server.close(() => resolve()) }))
  receiver.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks/cc`
  return receiver
}

async function eventApp (t: Test, db: Db, receiver: Receiver, clock: Clock, env: Record<string, string> = {}): Promise<TestApp> {
  // The subtests share one database: each starts from no gateways, certificates or failures.
  for (const table of ['operator_alerts', 'gateways', 'certificate_states', 'stripe_webhook_failures']) await db(table).delete()
  return await startApp(t, db, { env: { CC_OPERATOR_WEBHOOK_URL: receiver.url, CC_ALERT_CERTIFICATE_FAILING_AFTER: '3600', ...env }, deps: { now: clock.now } })
}

async function runJob (h: TestApp, times = 1): Promise<void> {
  for (let i = 0; i < times; i++) await runAlerts({ instanceAlerts: h.services.instanceAlerts, operatorEvents: h.services.operatorEvents, logger: pino({ level: 'silent' }) })
  await h.services.operatorWebhook!.drain()
}

async function addGateway (db: Db, id: string, heardAt: Date): Promise<void> {
  await db('gateways').insert({ id, public_key: 'k'.repeat(43) + '=', endpoint: `${id}.example.test:51820`, listen_port: 51820, protocol: 1, hello_at: heardAt, report_at: heardAt, alive: true, region: 'eu' })
}

function named (receiver: Receiver, event: string, subject?: string): OperatorEvent[] {
  return receiver.events.filter(e => e.event === event && (subject === undefined || e.subject === subject))
}

await forEachDatabase(t, async (t, db) => {
  t.test('gateway stops reporting -> one gateway.down, then one gateway.recovered when it reports again', async t => {
    const receiver = await startReceiver(t)
    const clock = new Clock()
    const h = await eventApp(t, db, receiver, clock)
    await addGateway(db, 'gw-steady', clock.now())
    await addGateway(db, 'gw-flaky', clock.now())
    await runJob(h)
    t.equal(receiver.requests, 0, 'both reporting: nothing sent')
    clock.advance(10)
    await db('gateways').where({ id: 'gw-steady' }).update({ report_at: clock.now() })
    clock.advance(10) // gw-flaky last heard 20 s ago: past the 15 s alive window
    await db('gateways').where({ id: 'gw-steady' }).update({ report_at: clock.now() })
    await runJob(h, 4)
    const down = named(receiver, 'gateway.down')
    t.equal(down.length, 1, 'one event after four runs')
    t.equal(down[0].subject, 'gw-flaky')
    t.equal(down[0].since, '2026-03-01T12:00:00Z', 'since: when it was last heard')
    t.equal(down[0].occurred_at, '2026-03-01T12:00:20Z')
    t.match(down[0].details, { gateway_id: 'gw-flaky', region: 'eu', draining: false, last_heard_at: '2026-03-01T12:00:00Z' })
    t.match(down[0].id, /^[0-9a-f-]{36}$/)
    t.same(receiver.contentTypes, ['application/json'])
    clock.advance(60)
    await db('gateways').where({ id: 'gw-steady' }).update({ report_at: clock.now() })
    await runJob(h, 2)
    t.equal(named(receiver, 'gateway.down').length, 1, 'still down a minute later: no repeat')
    await db('gateways').where({ id: 'gw-flaky' }).update({ report_at: clock.now() })
    await runJob(h, 3)
    const up = named(receiver, 'gateway.recovered')
    t.equal(up.length, 1, 'reports again: one recovery')
    t.equal(up[0].subject, 'gw-flaky')
    clock.advance(30)
    await db('gateways').where({ id: 'gw-steady' }).update({ report_at: clock.now() })
    await runJob(h)
    t.equal(named(receiver, 'gateway.down', 'gw-flaky').length, 2, 'a second outage is a second occurrence')
    t.equal(named(receiver, 'gateway.down', 'gw-steady').length, 0, 'the steady one never')
  })

  t.test('gateway silent for over a day -> retired: nothing raised; one down while retired is dropped without a recovery', async t => {
    const receiver = await startReceiver(t)
    const clock = new Clock()
    const h = await eventApp(t, db, receiver, clock)
    await addGateway(db, 'gw-ancient', new Date(clock.time - 2 * 24 * 3600_000))
    await addGateway(db, 'gw-fading', clock.now())
    clock.advance(60)
    await runJob(h)
    t.same(receiver.events.map(e => e.subject), ['gw-fading'], 'the long-retired one raises nothing')
    clock.advance(25 * 3600)
    await runJob(h)
    t.equal(receiver.events.length, 1, 'fading into retirement is not a recovery')
    t.equal((await db('operator_alerts').count('* as n').first() as { n: string | number }).n.toString(), '0', 'its alert row is gone')
  })

  t.test('certificate failing -> certificate.failing only after CC_ALERT_CERTIFICATE_FAILING_AFTER, once; recovered when active', async t => {
    const receiver = await startReceiver(t)
    const clock = new Clock()
    const h = await eventApp(t, db, receiver, clock)
    const row = { gateway_id: 'gw-1', state: 'failing', last_error: 'urn:ietf:params:acme:error:rateLimited', reported_at: clock.now() }
    await db('certificate_states').insert([{ hostname: 'bad.erugo.test', ...row }, { hostname: 'brief.erugo.test', ...row }])
    await runJob(h)
    clock.advance(1800)
    await db('certificate_states').where({ hostname: 'brief.erugo.test' }).update({ state: 'active' })
    await runJob(h)
    t.equal(receiver.requests, 0, 'failing for half an hour: nothing yet; one recovered before the hour: never raised')
    clock.advance(1801)
    await runJob(h, 3)
    const failing = named(receiver, 'certificate.failing')
    t.equal(failing.length, 1, 'an hour of failing: one event')
    t.equal(failing[0].subject, 'bad.erugo.test')
    t.equal(failing[0].since, '2026-03-01T12:00:00Z', 'since the first check that saw it')
    t.match(failing[0].details, { hostname: 'bad.erugo.test', gateway_id: 'gw-1', last_error: 'urn:ietf:params:acme:error:rateLimited' })
    await db('certificate_states').where({ hostname: 'bad.erugo.test' }).update({ state: 'active' })
    await runJob(h, 2)
    t.equal(named(receiver, 'certificate.recovered', 'bad.erugo.test').length, 1, 'issued: one recovery')
    t.equal(receiver.events.length, 2, 'nothing else')
  })

  t.test('Stripe webhook processing failing -> one webhooks.failing; one webhooks.recovered once a retry succeeds', async t => {
    const receiver = await startReceiver(t)
    const clock = new Clock()
    const h = await eventApp(t, db, receiver, clock)
    await db('stripe_webhook_failures').insert({ event_id: 'evt_1', event_type: 'customer.subscription.updated', attempts: 2, last_error: 'database unavailable', first_failed_at: clock.now(), last_failed_at: clock.now() })
    await runJob(h, 3)
    const failing = named(receiver, 'webhooks.failing')
    t.equal(failing.length, 1)
    t.equal(failing[0].subject, 'stripe')
    t.same(failing[0].details, { unresolved: 1, events: [{ id: 'evt_1', type: 'customer.subscription.updated', attempts: 2 }] })
    await db('stripe_webhook_failures').where({ event_id: 'evt_1' }).update({ resolved_at: clock.now() })
    await runJob(h, 2)
    t.equal(named(receiver, 'webhooks.recovered').length, 1)
    t.equal(receiver.events.length, 2)
  })

  t.test('no CC_OPERATOR_WEBHOOK_URL -> no operator events, nothing recorded', async t => {
    const clock = new Clock()
    await db('operator_alerts').delete()
    const h = await startApp(t, db, { deps: { now: clock.now } })
    t.equal(h.services.operatorEvents, undefined)
    await addGateway(db, 'gw-unwatched', new Date(clock.time - 60_000))
    await runAlerts({ instanceAlerts: h.services.instanceAlerts, operatorEvents: h.services.operatorEvents, logger: pino({ level: 'silent' }) })
    t.equal((await db('operator_alerts').where('subject', 'gw-unwatched').count('* as n').first() as { n: string | number }).n.toString(), '0')
  })
})

t.test('receiver that never answers -> the job returns at once; each event tried a bounded number of times, each with the timeout', async t => {
  const held: ServerResponse[] = []
  const receiver = await startReceiver(t, (_req, res) => { held.push(res) })
  const lines: string[] = []
  const webhook = new OperatorWebhook({ url: receiver.url, timeoutMs: 200, attempts: 3, retryDelayMs: 50, logger: pino({ level: 'info' }, { write: (l: string) => { lines.push(l) } }) })
  const started = Date.now()
  webhook.send({ id: 'e1', event: 'gateway.down', subject: 'gw-x', since: '2026-03-01T12:00:00Z', occurred_at: '2026-03-01T12:00:20Z', details: {} })
  t.ok(Date.now() - started < 50, 'send does not wait for the receiver')
  await webhook.drain()
  const took = Date.now() - started
  t.equal(receiver.requests, 3, 'three attempts, no more')
  t.ok(took >= 3 * 200 + 50 + 100 && took < 5_000, `timeouts and backoff bound the delivery (${took} ms)`)
  t.ok(lines.some(l => l.includes('operator webhook not delivered') && l.includes('no answer within 200 ms')), 'the loss is logged')
  for (const res of held) res.destroy()
})

t.test('receiver answering 400 -> not retried; 503 -> retried, delivered on the second attempt', async t => {
  let answers = [400]
  const receiver = await startReceiver(t, (_req, res) => { res.writeHead(answers.shift() ?? 200).end() })
  const webhook = new OperatorWebhook({ url: receiver.url, timeoutMs: 1000, attempts: 3, retryDelayMs: 10, logger: pino({ level: 'silent' }) })
  webhook.send({ id: 'e1', event: 'webhooks.failing', subject: 'stripe', since: '', occurred_at: '', details: {} })
  await webhook.drain()
  t.equal(receiver.requests, 1, '400: one attempt')
  answers = [503, 200]
  webhook.send({ id: 'e2', event: 'webhooks.failing', subject: 'stripe', since: '', occurred_at: '', details: {} })
  await webhook.drain()
  t.equal(receiver.requests, 3, '503 then 200: two attempts')
  t.same(receiver.events.slice(1).map(e => e.id), ['e2', 'e2'], 'the retry carries the same id')
})

t.test('more events than the queue holds -> the rest are dropped and logged, not queued without bound', async t => {
  const held: ServerResponse[] = []
  const receiver = await startReceiver(t, (_req, res) => { held.push(res) })
  const lines: string[] = []
  const webhook = new OperatorWebhook({ url: receiver.url, timeoutMs: 300, attempts: 1, maxPending: 2, logger: pino({ level: 'info' }, { write: (l: string) => { lines.push(l) } }) })
  for (let i = 0; i < 5; i++) webhook.send({ id: `e${i}`, event: 'gateway.down', subject: `gw-${i}`, since: '', occurred_at: '', details: {} })
  t.equal(lines.filter(l => l.includes('queue full')).length, 3)
  await webhook.drain()
  t.equal(receiver.requests, 2)
  for (const res of held) res.destroy()
})

await postgresReplicaTest(t, 'two control replicas with their own alert timers -> the receiver gets gateway.down once', async (t, database) => {
  const receiver = await startReceiver(t)
  const dbs = [createDb({ url: database.url, poolMax: 4 }), createDb({ url: database.url, poolMax: 4 })]
  t.teardown(async () => { for (const db of dbs) await db.destroy() })
  await migrateLatest(dbs[0])
  await addGateway(dbs[0], 'gw-gone', new Date(Date.now() - 60_000))
  await addGateway(dbs[0], 'gw-here', new Date())
  const keepReporting = setInterval(() => { dbs[1]('gateways').where({ id: 'gw-here' }).update({ report_at: new Date() }).then(() => {}, () => {}) }, 500)
  t.teardown(() => { clearInterval(keepReporting) })
  const apps: ControlApp[] = []
  t.teardown(async () => { for (const app of apps) await app.stop({ timeout: 0 }) })
  for (const db of dbs) {
    const app = await createApp(testConfig(t, { CC_API_HOST: '127.0.0.1', CC_API_PORT: '0', CC_ALERT_INTERVAL: '1', CC_OPERATOR_WEBHOOK_URL: receiver.url }), { db, logger: pino({ level: 'silent' }) })
    apps.push(app)
    await app.start()
  }
  await until('gateway.down', () => receiver.events.length > 0, 15_000, 50)
  await new Promise(resolve => setTimeout(resolve, 3_500)) // three more periods on two replicas
  t.same(receiver.events.map(e => `${e.event} ${e.subject}`), ['gateway.down gw-gone'], 'once, from one replica')
})
