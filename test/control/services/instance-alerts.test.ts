// Owner alerts over real SMTP: an instance offline past the threshold -> exactly one "offline" mail
// however often the job runs, one "back online" mail when it returns; opt-out respected; two control
// replicas on one Postgres send each mail once.
import t, { type Test } from 'tap'
import pino from 'pino'
import { createApp, type ControlApp } from '../../../control/app.ts'
import { createDb, type Db } from '../../../control/db/knex.ts'
import { migrateLatest } from '../../../control/db/migrate.ts'
import { runAlerts } from '../../../control/jobs/alerts.ts'
import { SmtpTransport, type MailTransport } from '../../../control/services/mail.ts'
import { bearer, CapturingTransport, forEachDatabase, postgresReplicaTest, registration, signUp, startApp, testConfig, type TestApp } from '../harness.ts'
import { Clock, mustCreate, newPublicKey, GATEWAY_KEY, GATEWAY_ENDPOINT, BASE_DOMAIN } from '../routes/tunnel-fixtures.ts'
import { decodeQuotedPrintable, startSmtp, type CapturedMail } from '../../helpers/smtp.ts'
import { until } from '../../helpers/until.ts'

const THRESHOLD = 120
const WINDOW = 60

let users = 0

async function alertApp (t: Test, db: Db, smtpUrl: string, clock: Clock): Promise<TestApp> {
  const smtp = new SmtpTransport(smtpUrl)
  t.teardown(() => { smtp.close() })
  // The harness reads verification mails from its capture; alert mails go over SMTP as well.
  const captured = new CapturingTransport()
  const transport: MailTransport = { deliver: async (from, message) => { await captured.deliver(from, message); await smtp.deliver(from, message) } }
  const h = await startApp(t, db, {
    env: {
      CC_GATEWAY_PUBLIC_KEY: GATEWAY_KEY,
      CC_GATEWAY_ENDPOINT: GATEWAY_ENDPOINT,
      CC_BASE_DOMAIN: BASE_DOMAIN,
      CC_ALERT_OFFLINE_AFTER: String(THRESHOLD),
      CC_TUNNEL_STATUS_WINDOW: String(WINDOW),
    },
    deps: { now: clock.now, mailTransport: transport },
  })
  h.mail = captured
  return h
}

/** A verified owner with one instance whose key is registered and whose tunnel is up at the clock's time. */
async function connectedInstance (t: Test, h: TestApp, db: Db, clock: Clock, subdomain: string): Promise<{ id: string, email: string, token: string }> {
  const email = `owner-${process.pid}-${++users}@example.com`
  const login = await signUp(h, email, { verify: true })
  const inst = await mustCreate(t, h, login.access_token, subdomain)
  t.equal((await h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(inst.token))).status, 200)
  await handshake(db, inst.id, clock)
  return { id: inst.id, email, token: login.access_token }
}

/** A fresh app on its own clock with one owner whose instance `subdomain` is connected. */
async function connectedOwner (t: Test, db: Db, smtpUrl: string, subdomain: string): Promise<{ clock: Clock, h: TestApp, owner: { id: string, email: string, token: string } }> {
  const clock = new Clock()
  const h = await alertApp(t, db, smtpUrl, clock)
  return { clock, h, owner: await connectedInstance(t, h, db, clock, subdomain) }
}

/** What a gateway's report of a fresh handshake records (the report path itself: test/control/rpc). */
async function handshake (db: Db, instanceId: string, clock: Clock): Promise<void> {
  await db('instances').where({ id: instanceId }).update({ last_handshake_at: clock.now(), last_seen: clock.now() })
}

async function runJob (h: TestApp, times = 1): Promise<void> {
  for (let i = 0; i < times; i++) await runAlerts({ instanceAlerts: h.services.instanceAlerts, operatorEvents: h.services.operatorEvents, logger: pino({ level: 'silent' }) })
  await h.services.mailer.drain()
}

function mailsTo (messages: CapturedMail[], email: string, subject: RegExp): CapturedMail[] {
  return messages.filter(m => m.to.includes(email) && subject.test(decodeQuotedPrintable(m.raw)))
}

const OFFLINE = /Subject: Your Erugo Cloud instance [a-z0-9.-]+ is offline/
const BACK = /Subject: Your Erugo Cloud instance [a-z0-9.-]+ is back online/

await forEachDatabase(t, async (t, db) => {
  const smtp = await startSmtp(t)

  t.test('connected instance stops handshaking -> one offline mail past the threshold, one back-online mail after it returns', async t => {
    const { clock, h, owner } = await connectedOwner(t, db, smtp.url, 'goes-down')
    await runJob(h)
    t.equal(mailsTo(smtp.messages, owner.email, OFFLINE).length, 0, 'connected: no mail')
    clock.advance(WINDOW + THRESHOLD - 5)
    await runJob(h, 3)
    t.equal((await h.request('GET', `/v1/instances/${owner.id}`, undefined, bearer(owner.token))).body.status, 'disconnected', 'offline for less than the threshold')
    t.equal(mailsTo(smtp.messages, owner.email, OFFLINE).length, 0, 'not yet past the threshold: no mail')
    clock.advance(10)
    await runJob(h, 4)
    const offline = mailsTo(smtp.messages, owner.email, OFFLINE)
    t.equal(offline.length, 1, 'exactly one offline mail after four runs')
    const body = decodeQuotedPrintable(offline[0].raw)
    t.match(body, `goes-down.${BASE_DOMAIN}`, 'names the instance by its domain')
    t.match(body, `https://api.example.test/instances/${owner.id}`, 'links to the dashboard page of the instance')
    t.match(body, '2026-03-01T12:01:00Z', 'says since when: the last handshake plus the status window')
    clock.advance(3600)
    await runJob(h, 2)
    t.equal(mailsTo(smtp.messages, owner.email, OFFLINE).length, 1, 'an hour later, still one')
    t.equal(mailsTo(smtp.messages, owner.email, BACK).length, 0)

    await handshake(db, owner.id, clock)
    await runJob(h, 3)
    t.equal(mailsTo(smtp.messages, owner.email, BACK).length, 1, 'back: exactly one back-online mail')
    t.equal(mailsTo(smtp.messages, owner.email, OFFLINE).length, 1, 'and no second offline mail')
    t.match(decodeQuotedPrintable(mailsTo(smtp.messages, owner.email, BACK)[0].raw), `https://api.example.test/instances/${owner.id}`)
  })

  t.test('back within the threshold period of the offline mail -> the back-online mail waits for the period; a flap inside it sends nothing', async t => {
    const { clock, h, owner } = await connectedOwner(t, db, smtp.url, 'flapping')
    clock.advance(WINDOW + THRESHOLD + 1)
    await runJob(h)
    t.equal(mailsTo(smtp.messages, owner.email, OFFLINE).length, 1)
    clock.advance(10)
    await handshake(db, owner.id, clock)
    await runJob(h, 2)
    t.equal(mailsTo(smtp.messages, owner.email, BACK).length, 0, 'ten seconds after the offline mail: held back')
    clock.advance(THRESHOLD - 20)
    await handshake(db, owner.id, clock)
    await runJob(h)
    t.equal(mailsTo(smtp.messages, owner.email, BACK).length, 0, 'still inside the period')
    clock.advance(15)
    await runJob(h, 2)
    t.equal(mailsTo(smtp.messages, owner.email, BACK).length, 1, 'period over, still connected: one back-online mail')
    // Down again right away: the next offline mail needs a full threshold of being offline, and a
    // full period since the last mail.
    clock.advance(WINDOW + 1)
    await runJob(h)
    t.equal(mailsTo(smtp.messages, owner.email, OFFLINE).length, 1, 'offline again, not yet for the threshold: no mail')
    clock.advance(THRESHOLD)
    await runJob(h)
    t.equal(mailsTo(smtp.messages, owner.email, OFFLINE).length, 2, 'second outage: its own mail')
  })

  t.test('goodbye (POST /tunnel/disconnect) -> offline counts from the goodbye', async t => {
    const { clock, h, owner } = await connectedOwner(t, db, smtp.url, 'says-bye')
    const inst = await db('instances').where({ id: owner.id }).first('token_jti')
    t.ok(inst)
    clock.advance(5)
    await db('instances').where({ id: owner.id }).update({ disconnected_at: clock.now(), tunnel_state: 'disconnected' })
    clock.advance(THRESHOLD - 1)
    await runJob(h)
    t.equal(mailsTo(smtp.messages, owner.email, OFFLINE).length, 0, 'goodbye less than the threshold ago')
    clock.advance(2)
    await runJob(h)
    t.equal(mailsTo(smtp.messages, owner.email, OFFLINE).length, 1, 'one mail, before the handshake would have gone stale')
  })

  t.test('owner turned alerts.offline off -> no mail, neither offline nor back', async t => {
    const { clock, h, owner } = await connectedOwner(t, db, smtp.url, 'quiet')
    const off = await h.request('PATCH', `/v1/instances/${owner.id}`, { alerts: { offline: false } }, bearer(owner.token))
    t.equal(off.status, 200)
    clock.advance(WINDOW + THRESHOLD + 60)
    await runJob(h, 3)
    t.equal(mailsTo(smtp.messages, owner.email, OFFLINE).length, 0, 'opted out: no offline mail')
    await handshake(db, owner.id, clock)
    await runJob(h)
    t.equal(mailsTo(smtp.messages, owner.email, BACK).length, 0, 'and no back-online mail')

    // Turned off during an outage already mailed: the back-online mail is not sent either.
    const loud = await connectedInstance(t, h, db, clock, 'loud')
    clock.advance(WINDOW + THRESHOLD + 1)
    await runJob(h)
    t.equal(mailsTo(smtp.messages, loud.email, OFFLINE).length, 1)
    t.equal((await h.request('PATCH', `/v1/instances/${loud.id}`, { alerts: { offline: false } }, bearer(loud.token))).status, 200)
    clock.advance(THRESHOLD)
    await handshake(db, loud.id, clock)
    await runJob(h, 2)
    t.equal(mailsTo(smtp.messages, loud.email, BACK).length, 0, 'off means no back-online mail either')
  })

  t.test('never connected (pending) or suspended -> no mail', async t => {
    const clock = new Clock()
    const h = await alertApp(t, db, smtp.url, clock)
    const email = `pending-${process.pid}-${++users}@example.com`
    const login = await signUp(h, email, { verify: true })
    const inst = await mustCreate(t, h, login.access_token, 'never-up')
    t.equal((await h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(inst.token))).status, 200)
    const suspended = await connectedInstance(t, h, db, clock, 'suspended')
    await db('instances').where({ id: suspended.id }).update({ suspended_at: clock.now() })
    clock.advance(WINDOW + THRESHOLD + 60)
    await runJob(h, 2)
    t.equal(mailsTo(smtp.messages, email, OFFLINE).length, 0, 'pending: nothing to miss')
    t.equal(mailsTo(smtp.messages, suspended.email, OFFLINE).length, 0, 'suspended: not routed, not an outage')
  })
})

await postgresReplicaTest(t, 'two control replicas with their own alert timers on one Postgres -> one offline mail, one back-online mail', async (t, database) => {
  const smtp = await startSmtp(t)
  const dbs = [createDb({ url: database.url, poolMax: 4 }), createDb({ url: database.url, poolMax: 4 })]
  t.teardown(async () => { for (const db of dbs) await db.destroy() })
  await migrateLatest(dbs[0])
  const env = {
    CC_API_HOST: '127.0.0.1',
    CC_API_PORT: '0',
    CC_SMTP_URL: smtp.url,
    CC_GATEWAY_PUBLIC_KEY: GATEWAY_KEY,
    CC_BASE_DOMAIN: BASE_DOMAIN,
    CC_ALERT_OFFLINE_AFTER: '1',
    CC_ALERT_INTERVAL: '1',
    CC_TUNNEL_STATUS_WINDOW: '1',
  }
  const apps: ControlApp[] = []
  for (const db of dbs) {
    const app = await createApp(testConfig(t, env), { db, logger: pino({ level: 'silent' }) })
    apps.push(app)
  }
  t.teardown(async () => { for (const app of apps) await app.stop({ timeout: 0 }) })
  // Setup through the first replica's API (the timers start with app.start() below).
  await apps[0].initialize()
  const h = { app: apps[0], services: apps[0].app.services } as unknown as TestApp
  const request: TestApp['request'] = async (method, url, payload, headers = {}) => {
    const res = await apps[0].inject({ method, url, payload: payload as object, headers })
    return { status: res.statusCode, headers: res.headers as never, body: res.payload === '' ? undefined : JSON.parse(res.payload), raw: res.payload }
  }
  h.request = request
  const email = `replicas-${process.pid}@example.com`
  const captured = smtp.messages
  t.equal((await request('POST', '/v1/auth/register', registration(email))).status, 201)
  await apps[0].app.services.mailer.drain()
  const verify = decodeQuotedPrintable(captured.find(m => m.to.includes(email))!.raw).match(/token=([\w%-]+)/)![1]
  t.equal((await request('GET', `/v1/auth/verify-email?token=${verify}`)).status, 200)
  const login = (await request('POST', '/v1/auth/login', { email, password: 'correct horse battery' })).body as { access_token: string }
  const created = await request('POST', '/v1/instances', { name: 'Replicated', subdomain: 'replicated' }, bearer(login.access_token))
  t.equal(created.status, 201)
  const id = created.body.instance.id as string
  t.equal((await request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(created.body.credentials.instance_token))).status, 200)
  // Connected a while ago, silent since: offline for longer than the one-second threshold.
  await dbs[0]('instances').where({ id }).update({ last_handshake_at: new Date(Date.now() - 10_000) })

  for (const app of apps) await app.start()
  await until('the offline mail', () => mailsTo(captured, email, OFFLINE).length > 0, 15_000, 50)
  await new Promise(resolve => setTimeout(resolve, 3_500)) // three more periods on two replicas
  t.equal(mailsTo(captured, email, OFFLINE).length, 1, 'one offline mail from two replicas over several periods')
  // The tunnel comes back and stays up (a gateway reporting fresh handshakes).
  const keepAlive = setInterval(() => { dbs[1]('instances').where({ id }).update({ last_handshake_at: new Date() }).then(() => {}, () => {}) }, 200)
  t.teardown(() => { clearInterval(keepAlive) })
  await until('the back-online mail', () => mailsTo(captured, email, BACK).length > 0, 15_000, 50)
  await new Promise(resolve => setTimeout(resolve, 3_500))
  clearInterval(keepAlive)
  t.equal(mailsTo(captured, email, BACK).length, 1, 'one back-online mail')
  t.equal(mailsTo(captured, email, OFFLINE).length, 1, 'and still one offline mail')
})
