/**
 * Gateway reports drive instance status and last_seen (injected clock): connected only with a
 * handshake reported within 180 s, whatever heartbeats say; disconnected after; last_seen from the
 * tunnel. Keys no instance holds match nothing. Certificate states are stored per hostname; the
 * sweep drops those of hostnames no longer served.
 */
import t, { type Test } from 'tap'
import pino from 'pino'
import { sweepReports } from '../../../control/jobs/sweep.ts'
import { certificateStates } from '../../../control/rpc/reports.ts'
import { HANDSHAKE_FRESH_SECONDS } from '../../../control/services/tunnel.ts'
import { RPC_PATHS } from '../../../proto/rpc/index.ts'
import { bearer, forEachDatabase, type TestApp } from '../harness.ts'
import { BASE_DOMAIN, Clock, mustCreate, newPublicKey, newUser } from '../routes/tunnel-fixtures.ts'
import { peerReport, report, startRpc } from './fixtures.ts'

const HEARTBEAT = { timestamp: '2026-03-01T12:00:00Z' }
const iso = (d: Date | number): string => new Date(d).toISOString().replace(/\.\d{3}Z$/, 'Z')

async function tunnelStatus (h: TestApp, token: string): Promise<string> {
  const res = await h.request('GET', '/v1/tunnel/status', undefined, bearer(token))
  if (res.status !== 200) throw new Error(`status ${res.status}: ${res.raw}`)
  return res.body.tunnel_status
}

/** A user (`label`) with instance `subdomain` and a fresh key registered for it. */
async function registeredInstance (t: Test, h: TestApp, label: string, subdomain: string): Promise<{ user: { token: string }, inst: { id: string, token: string }, key: string }> {
  const user = await newUser(h, label)
  const inst = await mustCreate(t, h, user.token, subdomain)
  const key = newPublicKey()
  t.equal((await h.request('POST', '/v1/tunnel/register', { public_key: key }, bearer(inst.token))).status, 200, `${subdomain}: key registered`)
  return { user, inst, key }
}

await forEachDatabase(t, async (t, db) => {
  t.test('reports drive status: connected only with a recent handshake; last_seen from the tunnel', async t => {
    const clock = new Clock()
    const h = await startRpc(t, db, { clock, listen: false })
    const { user, inst, key } = await registeredInstance(t, h, 'reports', 'reported')
    const detail = async (): Promise<{ status: string, last_seen: string | null }> => (await h.request('GET', `/v1/instances/${inst.id}`, undefined, bearer(user.token))).body

    for (let i = 0; i < 3; i++) t.equal((await h.request('POST', '/v1/tunnel/heartbeat', HEARTBEAT, bearer(inst.token))).status, 200)
    t.equal(await tunnelStatus(h, inst.token), 'pending', 'heartbeats alone: not connected')
    t.same(await h.rpc.report(report([peerReport(key, null)])), { peers: 1, certificates: 0 }, 'a peer without a handshake matches')
    t.equal(await tunnelStatus(h, inst.token), 'pending', 'a report without a handshake: still not connected')
    t.equal((await detail()).last_seen, null)

    const handshakeAt = new Date(clock.time - 10_000)
    await h.rpc.report(report([peerReport(key, handshakeAt, { instanceId: inst.id })]))
    t.equal(await tunnelStatus(h, inst.token), 'connected', 'a recent handshake: connected')
    t.same(await detail(), { ...(await detail()), status: 'connected', last_seen: iso(handshakeAt) }, 'GET /instances/{id} agrees; last_seen = the handshake')
    const listed = (await h.request('GET', '/v1/instances', undefined, bearer(user.token))).body.instances[0]
    t.equal(listed.status, 'connected', 'GET /instances agrees')
    const row = await db('instances').where({ id: inst.id }).first()
    t.equal(row.tunnel_endpoint, '198.18.0.2:51820')
    t.equal(Number(row.tunnel_rx_bytes), 1000)

    clock.advance(HANDSHAKE_FRESH_SECONDS - 10)
    t.equal(await tunnelStatus(h, inst.token), 'connected', 'exactly at the window edge: connected')
    clock.advance(1)
    t.equal(await tunnelStatus(h, inst.token), 'disconnected', 'past the window: disconnected')
    await h.request('POST', '/v1/tunnel/heartbeat', HEARTBEAT, bearer(inst.token))
    t.equal(await tunnelStatus(h, inst.token), 'disconnected', 'whatever heartbeats say')
    t.equal((await detail()).status, 'disconnected')

    // Data without a new handshake moves last_seen, not the status.
    const rxAt = new Date(clock.time - 1_000)
    await h.rpc.report(report([peerReport(key, handshakeAt, { lastRxAt: rxAt.toISOString() })]))
    t.equal((await detail()).last_seen, iso(rxAt), 'last_seen = last data received')
    t.equal(await tunnelStatus(h, inst.token), 'disconnected')

    // An older handshake (another gateway, a restart) never moves it back.
    await h.rpc.report(report([peerReport(key, new Date(handshakeAt.getTime() - 60_000))]))
    t.equal(new Date((await db('instances').where({ id: inst.id }).first()).last_handshake_at).getTime(), handshakeAt.getTime(), 'last handshake kept')
    t.equal((await detail()).last_seen, iso(rxAt), 'last_seen kept')

    // A gateway clock ahead of ours counts as now.
    await h.rpc.report(report([peerReport(key, new Date(clock.time + 3_600_000))]))
    t.equal(new Date((await db('instances').where({ id: inst.id }).first()).last_handshake_at).getTime(), clock.time, 'future handshake clamped to now')
    t.equal(await tunnelStatus(h, inst.token), 'connected')
    clock.advance(HANDSHAKE_FRESH_SECONDS + 1)
    t.equal(await tunnelStatus(h, inst.token), 'disconnected', 'and it lapses like any other')

    // The container's goodbye outweighs the handshake before it; a newer one reconnects.
    await h.rpc.report(report([peerReport(key, new Date(clock.time))]))
    t.equal(await tunnelStatus(h, inst.token), 'connected')
    clock.advance(1)
    await h.request('POST', '/v1/tunnel/disconnect', undefined, bearer(inst.token))
    t.equal(await tunnelStatus(h, inst.token), 'disconnected', 'said goodbye')
    await h.rpc.report(report([peerReport(key, new Date(clock.time - 1_000))]))
    t.equal(await tunnelStatus(h, inst.token), 'disconnected', 'a handshake from before the goodbye does not count')
    clock.advance(1)
    await h.rpc.report(report([peerReport(key, new Date(clock.time))]))
    t.equal(await tunnelStatus(h, inst.token), 'connected', 'a handshake after it does')
  })

  t.test('CC_TUNNEL_STATUS_WINDOW shortens the window for status and the instance list alike', async t => {
    const clock = new Clock()
    const h = await startRpc(t, db, { clock, listen: false, env: { CC_TUNNEL_STATUS_WINDOW: '8' } })
    const { user, inst, key } = await registeredInstance(t, h, 'window', 'windowed')
    await h.rpc.report(report([peerReport(key, new Date(clock.time))]))
    const listed = async (): Promise<string> => (await h.request('GET', '/v1/instances', undefined, bearer(user.token))).body.instances[0].status
    clock.advance(8)
    t.equal(await tunnelStatus(h, inst.token), 'connected', 'at the configured edge: connected')
    t.equal(await listed(), 'connected')
    clock.advance(1)
    t.equal(await tunnelStatus(h, inst.token), 'disconnected', 'one second past 8 s: disconnected, long before 180 s')
    t.equal(await listed(), 'disconnected')
  })

  t.test('the endpoint a gateway reported rides in the configuration snapshot (a restarted gateway can reach the peer first)', async t => {
    const clock = new Clock()
    const h = await startRpc(t, db, { clock, listen: false })
    const { inst, key } = await registeredInstance(t, h, 'endpoint', 'endpointed')
    const peerOf = async (): Promise<{ endpoint?: string } | undefined> => (await h.services.tunnel.configSnapshot()).peers.find(p => p.instanceId === inst.id)
    t.equal((await peerOf())?.endpoint, undefined, 'none before any report')
    await h.rpc.report(report([peerReport(key, new Date(clock.time))]))
    t.equal((await peerOf())?.endpoint, '198.18.0.2:51820', 'the reported endpoint')
    await h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(inst.token))
    t.equal((await peerOf())?.endpoint, undefined, 'a new key starts without one')
  })

  t.test('reports for keys no instance holds change nothing', async t => {
    const clock = new Clock()
    const h = await startRpc(t, db, { clock })
    const user = await newUser(h, 'stale-keys')
    const inst = await mustCreate(t, h, user.token, 'rekeyed')
    const oldKey = newPublicKey()
    await h.request('POST', '/v1/tunnel/register', { public_key: oldKey }, bearer(inst.token))
    await h.rpc.report(report([peerReport(oldKey, new Date(clock.time))]))
    t.equal(await tunnelStatus(h, inst.token), 'connected')

    const regen = await h.request('POST', `/v1/instances/${inst.id}/regenerate-token`, undefined, bearer(user.token))
    const token = regen.body.instance_token as string
    t.equal(await tunnelStatus(h, token), 'pending', 'regenerated: key dropped')
    const late = await h.rpc.report(report([peerReport(oldKey, new Date(clock.time))]))
    t.equal(late.peers, 0, 'the dropped key matches nothing')
    t.equal(await tunnelStatus(h, token), 'pending')

    const newKey = newPublicKey()
    await h.request('POST', '/v1/tunnel/register', { public_key: newKey }, bearer(token))
    t.equal(await tunnelStatus(h, token), 'pending', 'a new key starts without handshakes')
    t.equal((await h.rpc.report(report([peerReport(newKey, new Date(clock.time), { instanceId: 'inst_0000000000000000000000' })]))).peers, 0, 'an instance id that does not own the key matches nothing')
    t.equal(await tunnelStatus(h, token), 'pending')

    // Through the HTTP listener: same service, same effect.
    const res = await h.call('POST', RPC_PATHS.reports, report([peerReport(newKey, new Date(clock.time), { instanceId: inst.id })]))
    t.equal(res.status, 200)
    t.same(await res.json(), { peers: 1, certificates: 0 })
    t.equal(await tunnelStatus(h, token), 'connected')
  })

  t.test('certificate states: stored per hostname, newest wins, swept when no longer served', async t => {
    const clock = new Clock()
    const h = await startRpc(t, db, { clock, listen: false })
    await registeredInstance(t, h, 'certs', 'certified')
    const hostname = `certified.${BASE_DOMAIN}`
    const notAfter = '2026-06-01T00:00:00.000Z'
    const r1 = await h.rpc.report(report([], { certificates: [{ hostname, state: 'pending' }, { hostname: 'gone.example.test', state: 'failing', lastError: 'DNS problem', nextRetryAt: '2026-03-01T13:00:00Z' }] }))
    t.same(r1, { peers: 0, certificates: 2 })
    await h.rpc.report(report([], { certificates: [{ hostname, state: 'active', notAfter }] }))
    const states = await certificateStates(db, [hostname, 'gone.example.test', 'never.example.test'])
    t.equal(states.get(hostname)?.state, 'active', 'newest report wins')
    t.equal(new Date(states.get(hostname)!.not_after!).toISOString(), notAfter)
    t.equal(states.get('gone.example.test')?.last_error, 'DNS problem')
    t.notOk(states.has('never.example.test'))

    const swept = await sweepReports({ db, tunnel: h.services.tunnel, logger: pino({ level: 'silent' }), now: clock.now })
    t.ok(swept.certificates >= 1, 'the unserved hostname is swept')
    const after = await certificateStates(db, [hostname, 'gone.example.test'])
    t.ok(after.has(hostname), 'a served hostname stays')
    t.notOk(after.has('gone.example.test'))

    const invalid = await h.rpc.report(report([], { certificates: [{ hostname, state: 'expired' as 'active' }] })).catch((err: Error) => err)
    t.match(invalid, { code: 'VALIDATION_ERROR' }, 'an unknown state is refused')
  })
})
