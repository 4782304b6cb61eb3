// The gateway config long-poll with several control replicas on one Postgres: a change made
// through one replica wakes a watch pending on another at once (LISTEN/NOTIFY, db/notify.ts), and
// the listener comes back after its connection is killed.
import t, { type Test } from 'tap'
import pino from 'pino'
import knexFactory from 'knex'
import { setTimeout as sleep } from 'node:timers/promises'
import { loadRpcConfig, startControlPlane, type RunningControlPlane } from '../../../control/rpc/index.ts'
import { bearer, CapturingTransport, postgresReplicaTest, signUp, testConfig, type Reply, type TestApp } from '../harness.ts'
import { BASE_DOMAIN, GATEWAY_ENDPOINT, GATEWAY_KEY } from '../routes/tunnel-fixtures.ts'
import { until } from '../../helpers/until.ts'

/** Polling so slow that only a notification can wake a watch within the test's bounds. */
const NO_POLLING = { pollMs: 60_000, listeningPollMs: 60_000 }

async function replica (t: Test, url: string): Promise<{ plane: RunningControlPlane, api: TestApp }> {
  const config = testConfig(t, { DATABASE_URL: url, CC_API_HOST: '127.0.0.1', CC_API_PORT: '0', CC_GATEWAY_PUBLIC_KEY: GATEWAY_KEY, CC_GATEWAY_ENDPOINT: GATEWAY_ENDPOINT, CC_BASE_DOMAIN: BASE_DOMAIN })
  const mail = new CapturingTransport()
  const plane = await startControlPlane({ config, rpc: loadRpcConfig({}), listen: false, logger: pino({ level: 'silent' }), extra: { mailTransport: mail }, watchPolling: NO_POLLING })
  t.teardown(async () => { await plane.stop(0) })
  const api: TestApp = {
    app: plane.app,
    services: plane.services,
    config,
    mail,
    async request (method, path, payload, headers = {}) {
      const res = await plane.app.inject({ method, url: path, payload: payload === undefined ? undefined : JSON.stringify(payload), headers: payload === undefined ? headers : { 'content-type': 'application/json', ...headers } })
      return { status: res.statusCode, headers: res.headers as Reply['headers'], body: res.payload === '' ? undefined : JSON.parse(res.payload), raw: res.payload }
    },
  }
  return { plane, api }
}

let users = 0
/** A change of the peer set made through `api`: a new user's first instance. */
async function createInstance (t: Test, api: TestApp): Promise<void> {
  const user = await signUp(api, `replica-${process.pid}-${++users}@example.com`, { verify: true })
  const res = await api.request('POST', '/v1/instances', { name: 'Erugo', subdomain: `replica-${process.pid}-${users}` }, bearer(user.access_token))
  t.equal(res.status, 201, 'instance created through replica B')
}

/** Starts a watch on `plane`, makes the change, and answers how long after the change the watch woke. */
async function wakeDelay (t: Test, plane: RunningControlPlane, change: () => Promise<void>): Promise<number> {
  const since = (await plane.rpc.snapshot()).version
  let wokeAt = 0
  const watch = plane.rpc.watch(since).then(snapshot => { wokeAt = Date.now(); return snapshot })
  await sleep(50) // the watch is pending
  t.equal(wokeAt, 0, 'nothing wakes it before the change')
  await change()
  const changedAt = Date.now()
  const snapshot = await Promise.race([watch, sleep(3_000).then(() => null)])
  t.ok(snapshot !== null && snapshot.version > since, 'the watch answers the new configuration')
  return snapshot === null ? Infinity : Math.max(0, wokeAt - changedAt)
}

await postgresReplicaTest(t, 'watch pending on replica A, change through replica B -> A wakes within a second, also after its LISTEN connection is killed', async (t, database) => {
  const [a, b] = await Promise.all([replica(t, database.url), replica(t, database.url)])
  const listener = a.plane.configListener!
  t.ok(listener !== null, 'a Postgres replica listens for changes')
  await until('the listener', () => listener.listening, 5_000, 20)

  const first = await wakeDelay(t, a.plane, async () => { await createInstance(t, b.api) })
  t.ok(first < 1_000, `woke ${first} ms after the change`)

  const killedPid = listener.backendPid!
  const admin = knexFactory({ client: 'pg', connection: database.url, pool: { min: 0, max: 1 } })
  t.teardown(async () => { await admin.destroy() })
  const killed = await admin.raw('select pg_terminate_backend(?) as killed', [killedPid]) as { rows: Array<{ killed: boolean }> }
  t.equal(killed.rows[0].killed, true, 'LISTEN backend terminated')
  await until('the listener to notice', () => listener.backendPid !== killedPid, 5_000, 20)
  await until('the listener to reconnect', () => listener.listening && listener.backendPid !== null, 5_000, 20)
  t.not(listener.backendPid, killedPid, 'listening again on a new connection')

  const second = await wakeDelay(t, a.plane, async () => { await createInstance(t, b.api) })
  t.ok(second < 1_000, `after reconnecting, woke ${second} ms after the change`)

  // A change made while the listener is down is caught when it comes back (it rereads).
  const since = (await a.plane.rpc.snapshot()).version
  const watch = a.plane.rpc.watch(since)
  await admin.raw('select pg_terminate_backend(?)', [listener.backendPid])
  await createInstance(t, b.api)
  const missed = await Promise.race([watch, sleep(3_000).then(() => null)])
  t.ok(missed !== null && missed.version > since, 'a change made while the listener was down still wakes the watch')
})
