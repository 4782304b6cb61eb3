/**
 * A real Gateway on loopback UDP kept in step by the ControlClient: snapshots add, update and
 * remove peers while unchanged peers keep their sessions; hello and reports reach the plane; the
 * last snapshot is stored and served again by a gateway restarted while control is down. The
 * outage tests run the client on a fake clock: its backoff and report interval take no real time.
 */
import t, { type Test } from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { Gateway } from '../../../gateway/index.ts'
import { validateConfig } from '../../../gateway/config/schema.ts'
import { ControlClient, type ControlTarget } from '../../../gateway/control/client.ts'
import { TrafficRecorder } from '../../../gateway/edge/traffic.ts'
import { loadGatewayEnv } from '../../../gateway/control/env.ts'
import { HttpControlPlane } from '../../../gateway/control/http-client.ts'
import { startGatewayWithControl } from '../../../gateway/control/run.ts'
import { SnapshotStore } from '../../../gateway/control/store.ts'
import { generatePrivateKey } from '../../../proto/noise/keys.ts'
import {
  RPC_PROTOCOL_VERSION, RpcError,
  type ConfigSnapshot, type ControlPlane, type GatewayHello, type GatewayReport, type HelloReply, type ReportReply, type SnapshotPeer,
} from '../../../proto/rpc/index.ts'
import { repliesTo, startClient, until, type Client } from './harness.ts'
import { freePort } from '../../helpers/ports.ts'
import { FakeClock } from '../../helpers/fake-clock.ts'

const silent = pino({ level: 'silent' })

/** A control plane in memory: publish() a snapshot; hellos and reports are recorded. */
class MemoryPlane implements ControlPlane {
  snapshot: ConfigSnapshot
  hellos: GatewayHello[] = []
  reports: GatewayReport[] = []
  down = false
  /** The clock's time of each watch refused while down (with a clock). */
  readonly watchFailedAt: number[] = []
  /** Hellos and reports refused while down. */
  refused = 0
  private waiters = new Set<() => void>()

  constructor (peers: SnapshotPeer[] = [], private readonly clock?: FakeClock) {
    this.snapshot = { version: 1, gateway: { address: '10.100.0.1', listenPort: 0 }, peers }
  }

  private unavailable (): RpcError {
    if (this.clock !== undefined) this.watchFailedAt.push(this.clock.now())
    return new RpcError('SERVICE_UNAVAILABLE', 'down')
  }

  publish (peers: SnapshotPeer[]): number {
    this.snapshot = { ...this.snapshot, version: this.snapshot.version + 1, peers }
    for (const wake of [...this.waiters]) wake()
    return this.snapshot.version
  }

  async watch (since: number | null, signal?: AbortSignal): Promise<ConfigSnapshot | null> {
    if (this.down) throw this.unavailable()
    if (since !== this.snapshot.version) return this.snapshot
    return await new Promise((resolve, reject) => {
      const done = (): void => {
        this.waiters.delete(done)
        if (this.down) reject(this.unavailable())
        else resolve(since === this.snapshot.version ? null : this.snapshot)
      }
      this.waiters.add(done)
      signal?.addEventListener('abort', done, { once: true })
    })
  }

  async hello (hello: GatewayHello): Promise<HelloReply> {
    if (this.down) {
      this.refused++
      throw new RpcError('SERVICE_UNAVAILABLE', 'down')
    }
    this.hellos.push(hello)
    return { protocol: RPC_PROTOCOL_VERSION, gatewayId: hello.gatewayId, reportIntervalMs: 50, configVersion: this.snapshot.version }
  }

  async report (report: GatewayReport): Promise<ReportReply> {
    if (this.down) {
      this.refused++
      throw new RpcError('SERVICE_UNAVAILABLE', 'down')
    }
    this.reports.push(report)
    return { peers: report.peers.length, certificates: report.certificates.length }
  }
}

function peerOf (client: Client, tunnelIp: string, hostnames: string[] = []): SnapshotPeer {
  return { instanceId: `inst-${tunnelIp}`, publicKey: client.publicKey, tunnelIp, hostnames, port: 80 }
}

async function startGateway (t: Test): Promise<Gateway> {
  const gw = await Gateway.start(validateConfig({ privateKey: generatePrivateKey().toString('base64'), listenAddress: '127.0.0.1', listenPort: 0 }), silent)
  t.teardown(() => gw.close(0))
  return gw
}

const portOf = (gw: Gateway): number => Number(gw.listen.split(':')[1])
const publicKeyOf = (gw: Gateway): string => gw.device.publicKey.toString('base64')

t.test('snapshots add, update and remove peers; unchanged peers keep their sessions', async t => {
  const gw = await startGateway(t)
  const a = await startClient(t, publicKeyOf(gw), portOf(gw))
  const b = await startClient(t, publicKeyOf(gw), portOf(gw))
  const plane = new MemoryPlane([peerOf(a, '10.100.0.2', ['a.example.test'])])
  const client = new ControlClient({ plane, target: gw, logger: silent, hello: { protocol: RPC_PROTOCOL_VERSION, gatewayId: 'gw-test', publicKey: publicKeyOf(gw), endpoint: null, listenPort: portOf(gw) } })
  client.start()
  t.teardown(() => client.close())
  await until('version 1 applied', () => gw.configVersion === 1)
  t.same(gw.routes, [{ instanceId: 'inst-10.100.0.2', tunnelIp: '10.100.0.2', port: 80, hostnames: ['a.example.test'] }])

  a.ping('10.100.0.2', 1)
  await until('a reply to a', () => repliesTo(a, 1) === 1)
  const peerA = gw.device.peer(a.publicKey)!
  const sessionA = peerA.current
  t.ok(sessionA !== null, 'a has a session')
  const handshakes = (): number => gw.status().counters.wg_handshakes_completed?.responder ?? 0
  t.equal(handshakes(), 1)

  // Add b: a is untouched.
  plane.publish([peerOf(a, '10.100.0.2', ['a.example.test']), peerOf(b, '10.100.0.3', ['b.example.test'])])
  await until('version 2 applied', () => gw.configVersion === 2)
  t.equal(gw.device.peer(a.publicKey), peerA, 'same peer object')
  t.equal(peerA.current, sessionA, 'same session')
  b.ping('10.100.0.3', 2)
  a.ping('10.100.0.2', 3)
  await until('replies to both', () => repliesTo(b, 2) === 1 && repliesTo(a, 3) === 1)
  t.equal(handshakes(), 2, 'only b handshook: a went on with its session')

  // a changes hostname (same key, same address): still the same session.
  plane.publish([peerOf(a, '10.100.0.2', ['a2.example.test']), peerOf(b, '10.100.0.3', ['b.example.test'])])
  await until('version 3 applied', () => gw.configVersion === 3)
  t.equal(peerA.current, sessionA)
  t.same(gw.routes.map(r => r.hostnames), [['a2.example.test'], ['b.example.test']])

  // Remove a: gone, its packets go nowhere; b keeps working.
  plane.publish([peerOf(b, '10.100.0.3', ['b.example.test'])])
  await until('version 4 applied', () => gw.configVersion === 4)
  t.equal(gw.device.peer(a.publicKey), undefined, 'a removed')
  t.same(gw.status().peers.map(p => p.publicKey), [b.publicKey])
  a.ping('10.100.0.2', 4)
  b.ping('10.100.0.3', 5)
  await until('b answered', () => repliesTo(b, 5) === 1)
  await new Promise(resolve => setTimeout(resolve, 100))
  t.equal(repliesTo(a, 4), 0, 'a removed peer gets nothing')

  // Hello, then reports naming the peers with their handshakes.
  await until('a report with b\'s handshake', () => plane.reports.some(r => r.peers.some(p => p.publicKey === b.publicKey && p.lastHandshakeAt !== null)))
  t.same(plane.hellos[0], { protocol: RPC_PROTOCOL_VERSION, gatewayId: 'gw-test', publicKey: publicKeyOf(gw), endpoint: null, listenPort: portOf(gw) })
  const reported = plane.reports.flatMap(r => r.peers).find(p => p.publicKey === b.publicKey && p.lastHandshakeAt !== null)!
  t.equal(reported.instanceId, 'inst-10.100.0.3')
  t.match(reported.endpoint, /^127\.0\.0\.1:\d+$/)
  t.ok(Math.abs(Date.parse(reported.lastHandshakeAt!) - Date.now()) < 10_000, 'wall-clock handshake time')
  t.ok(reported.rxBytes > 0)
})

t.test('control down: the client keeps serving, backs off, says hello again when it returns', async t => {
  const gw = await startGateway(t)
  const a = await startClient(t, publicKeyOf(gw), portOf(gw))
  const clock = new FakeClock()
  const plane = new MemoryPlane([peerOf(a, '10.100.0.2')], clock)
  // Jitter 0.5: each wait is its backoff step exactly.
  const client = new ControlClient({ plane, target: gw, logger: silent, hello: { protocol: RPC_PROTOCOL_VERSION, gatewayId: 'gw', publicKey: publicKeyOf(gw), endpoint: null, listenPort: 1 }, backoff: { initialMs: 20, maxMs: 100 }, clock, random: () => 0.5 })
  client.start()
  t.teardown(() => client.close())
  await clock.until('applied and hello', () => gw.configVersion === 1 && plane.hellos.length === 1)
  plane.down = true
  plane.publish([]) // wakes the pending watch, which now fails
  await clock.until('six watches failed', () => plane.watchFailedAt.length >= 6, { stepMs: 10 })
  const gaps = plane.watchFailedAt.slice(1, 6).map((at, i) => at - plane.watchFailedAt[i])
  t.same(gaps, [20, 40, 80, 100, 100], 'the watch backs off, doubling up to the cap')
  t.ok(gw.device.peer(a.publicKey) !== undefined, 'still serving the last configuration')
  a.ping('10.100.0.2', 1)
  await until('a reply while control is down', () => repliesTo(a, 1) === 1)
  plane.down = false
  await clock.until('caught up after the outage', () => gw.configVersion === 2, { maxMs: 3_000 })
  t.equal(gw.device.peer(a.publicKey), undefined)
  await clock.until('a second hello', () => plane.hellos.length >= 2, { maxMs: 3_000 })
  t.ok(plane.reports.some(r => r.full), 'a full report after the hello')
})

t.test('control back: the hello ends the watch loop\'s backoff, so changes arrive at once, not after it', async t => {
  // Regression: after a control restart the watch loop slept out its backoff (up to 30 s) while
  // hello and reports already went through; a deleted instance stayed a peer that long.
  const gw = await startGateway(t)
  const a = await startClient(t, publicKeyOf(gw), portOf(gw))
  const clock = new FakeClock()
  const plane = new MemoryPlane([peerOf(a, '10.100.0.2')], clock)
  const client = new ControlClient({ plane, target: gw, logger: silent, hello: { protocol: RPC_PROTOCOL_VERSION, gatewayId: 'gw', publicKey: publicKeyOf(gw), endpoint: null, listenPort: 1 }, backoff: { initialMs: 20_000, maxMs: 20_000 }, clock })
  client.start()
  t.teardown(() => client.close())
  await clock.until('applied and hello', () => gw.configVersion === 1 && plane.hellos.length === 1)
  plane.down = true
  plane.publish([]) // the pending watch fails now: its loop backs off for 15-25 s
  plane.down = false
  await clock.until('the watch failed', () => plane.watchFailedAt.length === 1)
  const took = await clock.until('caught up', () => gw.configVersion === 2, { stepMs: 10, maxMs: 15_000 })
  t.ok(took <= 1_000, `within the report interval (50 ms), not the backoff (${took} ms)`)
  t.equal(gw.device.peer(a.publicKey), undefined, 'the removed peer is gone')
  t.ok(plane.hellos.length >= 2, 'after a new hello')
})

t.test('the last snapshot is stored and served by a gateway restarted while control is down', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'cc-gw-store-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const settings = loadGatewayEnv({ CC_DATA_DIR: dir, CC_WG_HOST: '127.0.0.1', CC_WG_PORT: '0', CC_EDGE: '0', CC_GATEWAY_ID: 'gw-restart' })
  const store = new SnapshotStore(settings.snapshotFile, silent)

  // First life: control up; the gateway learns peer a and stores it.
  const a0 = await startClient(t, publicKeyOf(await startGateway(t)), 1) // only for a key pair
  const plane = new MemoryPlane([peerOf(a0, '10.100.7.2', ['a.example.test'])])
  plane.snapshot.gateway.address = '10.100.7.1'
  const first = await startGatewayWithControl({ plane, settings, logger: silent, store })
  t.ok(first !== null)
  await until('stored', () => store.load()?.version === 1)
  const identity = publicKeyOf(first!.gateway)
  await first!.stop(0)

  // Second life: control unreachable (nothing listens on the URL's port).
  const closed = await freePort()
  const unreachable = new HttpControlPlane({ url: `http://127.0.0.1:${closed}`, secret: 'x'.repeat(43), requestTimeoutMs: 500 })
  await t.rejects(unreachable.watch(null), { code: 'SERVICE_UNAVAILABLE' }, 'control is really down')
  const started = Date.now()
  const second = await startGatewayWithControl({ plane: unreachable, settings, logger: silent, store, backoff: { initialMs: 50, maxMs: 200 } })
  t.teardown(() => second?.stop(0))
  t.ok(second !== null)
  t.ok(Date.now() - started < 3_000, 'started at once from the stored snapshot')
  const gw = second!.gateway
  t.equal(publicKeyOf(gw), identity, 'same key: kept in the data dir')
  t.equal(gw.status().address, '10.100.7.1', 'tunnel address from the stored snapshot')
  t.same(gw.routes.map(r => r.hostnames), [['a.example.test']])
  const a = await startClient(t, identity, portOf(gw), { privateKey: a0.privateKey, gatewayAddress: '10.100.7.1' })
  a.ping('10.100.7.2', 9, '10.100.7.1')
  await until('a is served with control down', () => repliesTo(a, 9) === 1)

  // With neither control nor a stored snapshot, start-up waits (until aborted).
  rmSync(store.path)
  const abort = new AbortController()
  setTimeout(() => { abort.abort() }, 300)
  const none = await startGatewayWithControl({ plane: unreachable, settings: { ...settings, wgPort: 0 }, logger: silent, store, signal: abort.signal, backoff: { initialMs: 50, maxMs: 100 } })
  t.equal(none, null, 'nothing to serve: waits for control')
})

/** A target with no peers whose edge traffic is a real TrafficRecorder. */
function trafficTarget (traffic: TrafficRecorder): ControlTarget {
  return {
    applySnapshot: () => ({}),
    peerStatuses: () => [],
    certificateReports: () => [],
    instanceIdOf: () => undefined,
    takeTraffic: () => traffic.take(),
    restoreTraffic: batch => { traffic.restore(batch) },
  }
}

const TRAFFIC_HELLO: GatewayHello = { protocol: RPC_PROTOCOL_VERSION, gatewayId: 'gw-traffic', publicKey: 'A'.repeat(43) + '=', endpoint: null, listenPort: 1 }

function visit (traffic: TrafficRecorder, path: string, bytesOut: number): void {
  traffic.record({ instanceId: 'inst-t', startedAt: Date.now(), method: 'GET', target: path, status: 200, bytesIn: 0, bytesOut, durationMs: 1, client: '127.0.0.1' })
}

t.test('traffic of reports that failed while control was down reaches control once it is back, each request once', async t => {
  const clock = new FakeClock()
  const plane = new MemoryPlane()
  const traffic = new TrafficRecorder()
  const client = new ControlClient({ plane, target: trafficTarget(traffic), logger: silent, hello: TRAFFIC_HELLO, reportIntervalMs: 20, backoff: { initialMs: 10, maxMs: 20 }, clock })
  client.start()
  t.teardown(() => client.close())
  await clock.until('first report', () => plane.reports.length > 0, { stepMs: 10 })
  visit(traffic, '/one', 10)
  await clock.until('the first request reported', () => plane.reports.some(r => r.accessLog !== undefined), { stepMs: 10 })
  plane.down = true
  const before = plane.reports.length
  visit(traffic, '/two', 20)
  visit(traffic, '/three', 30)
  await clock.until('a report and two hellos refused', () => plane.refused >= 3, { stepMs: 10 })
  t.equal(plane.reports.length, before, 'nothing accepted while down')
  plane.down = false
  await clock.until('reported after the outage', () => plane.reports.flatMap(r => r.accessLog ?? []).length === 3, { stepMs: 10 })
  const rounds = clock.requested.length
  await clock.until('five more report rounds', () => clock.requested.length >= rounds + 5, { stepMs: 10 })
  const log = plane.reports.flatMap(r => r.accessLog ?? [])
  t.same(log.map(e => e.path), ['/one', '/two', '/three'], 'each request once, in order')
  const usage = plane.reports.flatMap(r => r.usage ?? [])
  t.equal(usage.reduce((n, u) => n + u.requests, 0), 3)
  t.equal(usage.reduce((n, u) => n + u.bytesOut, 0), 60)
})

t.test('traffic of a report control refuses as invalid is dropped, and later reports go through', async t => {
  const clock = new FakeClock()
  const plane = new MemoryPlane()
  let refuse = true
  let refusals = 0
  const report = plane.report.bind(plane)
  plane.report = async r => {
    if (refuse && r.accessLog !== undefined) {
      refusals++
      throw new RpcError('VALIDATION_ERROR', 'report: accessLog[0].path: too long')
    }
    return await report(r)
  }
  const traffic = new TrafficRecorder()
  const client = new ControlClient({ plane, target: trafficTarget(traffic), logger: silent, hello: TRAFFIC_HELLO, reportIntervalMs: 20, backoff: { initialMs: 10, maxMs: 20 }, clock })
  client.start()
  t.teardown(() => client.close())
  visit(traffic, '/refused', 1)
  await clock.until('the report refused', () => refusals === 1, { stepMs: 10 })
  const rounds = clock.requested.length
  await clock.until('three more report rounds', () => clock.requested.length >= rounds + 3, { stepMs: 10 })
  t.equal(refusals, 1, 'its traffic is not sent again')
  refuse = false
  visit(traffic, '/accepted', 2)
  await clock.until('the later request reported', () => plane.reports.some(r => r.accessLog !== undefined), { stepMs: 10 })
  t.same(plane.reports.flatMap(r => r.accessLog ?? []).map(e => e.path), ['/accepted'])
})
