/**
 * Pure parts of the gateway's control-plane handling: snapshot -> peers and routes (with the peers
 * it must refuse), the report builder's deltas, backoff bounds, the snapshot store and the static
 * file plane.
 */
import t from 'tap'
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { formatPrefix, planSnapshot, withFleetRoutes } from '../../../gateway/control/apply.ts'
import { ControlClient } from '../../../gateway/control/client.ts'
import { ReportBuilder } from '../../../gateway/control/reporter.ts'
import { StaticControlPlane, snapshotFromConfig } from '../../../gateway/control/static-file.ts'
import { SnapshotStore } from '../../../gateway/control/store.ts'
import { ConfigError, validateConfig } from '../../../gateway/config/schema.ts'
import type { PeerStatus } from '../../../gateway/wireguard/device.ts'
import { EDGE_LIMIT_DEFAULTS } from '../../../gateway/edge/limits.ts'
import { generatePrivateKey, publicKeyFromPrivate } from '../../../proto/noise/keys.ts'
import { RPC_PROTOCOL_VERSION, validateReport, type ConfigSnapshot, type SnapshotPeer } from '../../../proto/rpc/index.ts'
import { formatIPv4, parseIPv4Address } from '../../../proto/wire/ipv4.ts'

const gatewayPrivate = generatePrivateKey()
const self = { publicKey: publicKeyFromPrivate(gatewayPrivate), address: parseIPv4Address('10.100.0.1') }
const key = (): string => publicKeyFromPrivate(generatePrivateKey()).toString('base64')

function peer (tunnelIp: string, extra: Partial<SnapshotPeer> = {}): SnapshotPeer {
  return { instanceId: `inst-${tunnelIp}`, publicKey: key(), tunnelIp, hostnames: [`h${tunnelIp.split('.')[3]}.example.test`], port: 80, ...extra }
}

function snapshot (peers: SnapshotPeer[], version = 1): ConfigSnapshot {
  return { version, gateway: { address: '10.100.0.1', listenPort: 51820 }, peers }
}

t.test('planSnapshot: allowed IPs are tunnelIp/32, routes carry hostnames and port', async t => {
  const a = peer('10.100.0.2')
  const b = peer('10.100.0.3', { port: 8080, hostnames: ['b.example.test', 'b2.example.test'] })
  const plan = planSnapshot(snapshot([a, b]), self)
  t.equal(plan.peers.length, 2)
  t.same(plan.peers.map(p => p.allowedIPs.map(x => `${formatIPv4(x.network)}/${x.prefixLength}`)), [['10.100.0.2/32'], ['10.100.0.3/32']])
  t.same(plan.peers.map(p => p.publicKey.toString('base64')), [a.publicKey, b.publicKey])
  t.same(plan.peers.map(p => [p.endpoint, p.persistentKeepalive, p.presharedKey]), [[null, 0, null], [null, 0, null]])
  t.same(plan.routes, [
    { instanceId: a.instanceId, tunnelIp: '10.100.0.2', port: 80, hostnames: ['h2.example.test'] },
    { instanceId: b.instanceId, tunnelIp: '10.100.0.3', port: 8080, hostnames: ['b.example.test', 'b2.example.test'] },
  ])
  t.equal(plan.instanceIds.get(b.publicKey), b.instanceId)
  t.same(plan.rejected, [])
})

t.test('planSnapshot: peers it must not take are dropped, the rest applies', async t => {
  const good = peer('10.100.0.2')
  const dupKey = peer('10.100.0.9', { publicKey: good.publicKey })
  const own = peer('10.100.0.4', { publicKey: self.publicKey.toString('base64') })
  const coversGateway = peer('10.100.0.1')
  const wide = peer('10.100.0.5', { allowedIPs: ['10.100.0.0/24'] })
  const overlap = peer('10.100.0.2', { instanceId: 'same-ip' })
  const badKey = peer('10.100.0.6', { publicKey: 'A'.repeat(42) + 'B=' })
  const dupHost = peer('10.100.0.7', { hostnames: ['h2.example.test', 'own.example.test'] })
  const plan = planSnapshot(snapshot([good, dupKey, own, coversGateway, wide, overlap, badKey, dupHost]), self)
  t.same(plan.rejected.map(r => [r.instanceId, r.reason]), [
    [dupKey.instanceId, 'duplicate_key'],
    [own.instanceId, 'own_key'],
    [coversGateway.instanceId, 'covers_gateway'],
    [wide.instanceId, 'covers_gateway'],
    ['same-ip', 'overlapping_address'],
    [badKey.instanceId, 'bad_key'],
  ])
  t.same(plan.peers.map(p => p.publicKey.toString('base64')), [good.publicKey, dupHost.publicKey])
  t.same(plan.duplicateHostnames, ['h2.example.test'], 'a hostname claimed twice stays with the first peer')
  t.same(plan.routes[1].hostnames, ['own.example.test'])
})

t.test('static config -> snapshot keeps every field of the file', async t => {
  const a = key()
  const psk = publicKeyFromPrivate(generatePrivateKey()).toString('base64')
  const config = validateConfig({
    privateKey: gatewayPrivate.toString('base64'),
    peers: [
      { publicKey: a, allowedIPs: ['10.100.1.0/24'], tunnelIp: '10.100.1.7', hostnames: ['files.example.test'], port: 8080, endpoint: '198.18.0.2:51820', persistentKeepalive: 25, presharedKey: psk, name: 'files' },
      { publicKey: key(), allowedIPs: ['10.100.0.3/32'] },
    ],
  })
  const snap = snapshotFromConfig(config, 4)
  t.equal(snap.version, 4)
  t.same(snap.peers[0], { instanceId: 'files', publicKey: a, tunnelIp: '10.100.1.7', hostnames: ['files.example.test'], port: 8080, allowedIPs: ['10.100.1.0/24'], persistentKeepalive: 25, endpoint: '198.18.0.2:51820', presharedKey: psk })
  t.same([snap.peers[1].instanceId, snap.peers[1].tunnelIp, snap.peers[1].hostnames, snap.peers[1].port], ['peer1', '10.100.0.3', [], 80], 'defaults')
  const plan = planSnapshot(snap, { publicKey: config.publicKey, address: config.address })
  t.same(plan.rejected, [])
  t.same(plan.peers[0].endpoint, { address: '198.18.0.2', port: 51820 })
  t.equal(plan.peers[0].persistentKeepalive, 25)
  t.equal(plan.peers[0].presharedKey?.toString('base64'), psk)

  const pk = gatewayPrivate.toString('base64')
  t.equal(failingField({ privateKey: pk, peers: [{ publicKey: key(), allowedIPs: ['10.100.1.0/24'], hostnames: ['x.example.test'] }] }), 'peers[0].tunnelIp', 'a wide prefix with hostnames needs tunnelIp')
  t.equal(failingField({ privateKey: pk, peers: [{ publicKey: key(), allowedIPs: ['10.100.0.2/32'], tunnelIp: '10.100.0.3' }] }), 'peers[0].tunnelIp', 'tunnelIp outside allowedIPs')
  t.equal(failingField({ privateKey: pk, peers: [{ publicKey: key(), allowedIPs: ['10.100.0.2/32'], hostnames: ['A.example.test'] }] }), 'peers[0].hostnames[0]', 'upper case')
  t.equal(failingField({
    privateKey: pk,
    peers: [{ publicKey: key(), allowedIPs: ['10.100.0.2/32'], hostnames: ['x.example.test'] }, { publicKey: key(), allowedIPs: ['10.100.0.3/32'], hostnames: ['x.example.test'] }],
  }), 'peers[1].hostnames[0]', 'a hostname routed twice')
  t.equal(failingField({ privateKey: pk, edge: { httpsListen: '127.0.0.1:0' } }), 'edge.dataDir', 'an edge needs a data dir')
  const withEdge = validateConfig({ privateKey: gatewayPrivate.toString('base64'), edge: { dataDir: '/tmp/x', httpsListen: '127.0.0.1:0', httpListen: null } })
  t.same(withEdge.edge, { dataDir: '/tmp/x', httpsListen: { address: '127.0.0.1', port: 0 }, httpListen: null, publicHttpsPort: undefined, wildcards: [], limits: EDGE_LIMIT_DEFAULTS, relayMode: 'stream' }, 'absent limits take their defaults')
  t.equal(validateConfig({ privateKey: gatewayPrivate.toString('base64') }).edge, null, 'no edge unless asked')
})

t.test('static config of peers with one /32 and no hostnames: the kept snapshot stores neither, the plan and routes still have both', async t => {
  const config = validateConfig({
    privateKey: gatewayPrivate.toString('base64'),
    peers: [{ publicKey: key(), allowedIPs: ['10.100.0.2/32'] }, { publicKey: key(), allowedIPs: ['192.168.9.3/32'], name: 'high' }],
  })
  const snap = snapshotFromConfig(config, 1)
  t.same(snap.peers.map(p => [p.tunnelIp, p.allowedIPs]), [['10.100.0.2', undefined], ['192.168.9.3', undefined]], 'tunnelIp/32 left to its default')
  t.equal(snap.peers[0].hostnames, snap.peers[1].hostnames, 'one shared empty hostname list')
  t.throws(() => { snap.peers[0].hostnames.push('x.example.test') }, TypeError, 'which cannot be pushed to (it would route the name to every peer)')
  t.same(snap.peers[1].hostnames, [])
  const plan = planSnapshot(snap, { publicKey: config.publicKey, address: config.address })
  t.same(plan.rejected, [])
  t.same(plan.peers.map(p => p.allowedIPs.map(formatPrefix)), [['10.100.0.2/32'], ['192.168.9.3/32']], 'the plan has the allowed IPs')
  t.same(plan.routes.map(r => [r.instanceId, r.tunnelIp, r.hostnames]), [['peer0', '10.100.0.2', []], ['high', '192.168.9.3', []]])
  t.throws(() => { plan.routes[0].hostnames.push('x.example.test') }, TypeError, 'routes without hostnames share the frozen list too')
})

t.test('StaticControlPlane: watch answers at once when behind, waits for replace() otherwise', async t => {
  const base = { privateKey: gatewayPrivate.toString('base64') }
  const plane = new StaticControlPlane(validateConfig({ ...base, peers: [{ publicKey: key(), allowedIPs: ['10.100.0.2/32'] }] }))
  const first = await plane.watch(null)
  t.equal(first?.version, 1)
  t.equal(await plane.watch(0), first, 'behind: at once')
  const abort = new AbortController()
  const idle = plane.watch(1, abort.signal)
  abort.abort()
  t.equal(await idle, null, 'aborted: null')
  const waiting = plane.watch(1)
  plane.replace(validateConfig({ ...base, peers: [] }))
  const next = await waiting
  t.equal(next?.version, 2)
  t.same(next?.peers, [])
  t.same(await plane.hello({ protocol: RPC_PROTOCOL_VERSION, gatewayId: 'g', publicKey: key(), endpoint: null, listenPort: 1 }), { protocol: RPC_PROTOCOL_VERSION, gatewayId: 'g', reportIntervalMs: 60_000, configVersion: 2 })
})

/** The field a ConfigError names, or 'accepted'. */
function failingField (value: unknown): string {
  try {
    validateConfig(value)
    return 'accepted'
  } catch (err) {
    return err instanceof ConfigError ? err.field : `not a ConfigError: ${String(err)}`
  }
}

function status (publicKey: string, rxBytes: number, lastHandshakeAt: number | null = null): PeerStatus {
  return { publicKey, endpoint: '127.0.0.1:1000', allowedIPs: [], persistentKeepalive: 0, lastHandshakeAt, hasSession: lastHandshakeAt !== null, rxBytes, txBytes: 0, rxPackets: 0, txPackets: 0 }
}

t.test('ReportBuilder: full first, then only what changed since the last acknowledged report', async t => {
  const a = key()
  const b = key()
  const ids = (k: string): string | undefined => k === a ? 'inst-a' : undefined
  const builder = new ReportBuilder('gw', 4)
  const r1 = builder.build([status(a, 0), status(b, 0)], ids, [{ hostname: 'a.example.test', state: 'pending' }], 1_000)
  t.equal(r1.full, true)
  t.same(r1.peers.map(p => [p.publicKey, p.instanceId]), [[a, 'inst-a'], [b, undefined]])
  t.equal(r1.sentAt, new Date(1_000).toISOString())
  t.equal(r1.certificates.length, 1)

  const r2 = builder.build([status(a, 0), status(b, 0)], ids, [{ hostname: 'a.example.test', state: 'pending' }], 2_000)
  t.equal(r2.full, true, 'not acknowledged: still a full report')
  builder.acknowledge(r2)
  const r3 = builder.build([status(a, 0), status(b, 0)], ids, [{ hostname: 'a.example.test', state: 'pending' }], 3_000)
  t.same([r3.full, r3.peers.length, r3.certificates.length], [false, 0, 0], 'nothing changed: empty delta')
  builder.acknowledge(r3)

  const handshake = 3_500
  const r4 = builder.build([status(a, 500, handshake), status(b, 0)], ids, [{ hostname: 'a.example.test', state: 'active', notAfter: '2026-06-01T00:00:00.000Z' }], 4_000)
  t.same(r4.peers.map(p => p.publicKey), [a], 'only the peer that changed')
  t.equal(r4.peers[0].lastHandshakeAt, new Date(handshake).toISOString())
  t.equal(r4.peers[0].lastRxAt, new Date(4_000).toISOString(), 'rx grew: last rx is this report')
  t.same(r4.certificates.map(c => c.state), ['active'])
  // r4 is lost: the next report still carries the change.
  const r5 = builder.build([status(a, 500, handshake), status(b, 0)], ids, [{ hostname: 'a.example.test', state: 'active', notAfter: '2026-06-01T00:00:00.000Z' }], 5_000)
  t.equal(r5.full, true, 'every 4th report is full')
  builder.acknowledge(r5)
  t.equal(r5.peers.find(p => p.publicKey === a)?.lastRxAt, new Date(4_000).toISOString(), 'last rx stays when rx did not grow')
  builder.forceFull()
  t.equal(builder.build([status(a, 500, handshake)], ids, [], 6_000).full, true, 'forced full (after a hello)')
})

t.test('backoff: exponential, capped, jittered within 25 %', async t => {
  const at = (n: number, r: number): number => ControlClient.backoffMs(n, { initialMs: 100, maxMs: 1_000 }, () => r)
  t.same([1, 2, 3, 4, 5, 50].map(n => at(n, 0.5)), [100, 200, 400, 800, 1_000, 1_000])
  t.equal(at(1, 0), 75)
  t.equal(at(1, 1), 125)
})

t.test('SnapshotStore: atomic 0600 file; invalid contents are ignored', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'cc-store-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const store = new SnapshotStore(join(dir, 'sub', 'snapshot.json'))
  t.equal(store.load(), null, 'nothing stored')
  const snap = snapshot([peer('10.100.0.2')], 7)
  store.save(snap)
  t.same(store.load(), snap)
  t.equal(statSync(store.path).mode & 0o777, 0o600)
  writeFileSync(store.path, '{"version": -1}')
  t.equal(store.load(), null, 'invalid: ignored')
  writeFileSync(store.path, 'not json')
  t.equal(store.load(), null)
})

t.test('fleet routes: local routes gain their relay gateways, instances without a peer here become relay-only routes', async t => {
  const local = [{ instanceId: 'i1', tunnelIp: '10.100.0.2', port: 80, hostnames: ['a.example.com'] }]
  t.same(withFleetRoutes(local, undefined), local, 'no routes in the snapshot: unchanged')
  const out = withFleetRoutes(local, [
    { instanceId: 'i1', hostnames: ['a.example.com'], gateways: ['gw-b', 'gw-a'] },
    { instanceId: 'i2', hostnames: ['b.example.com', 'a.example.com'], gateways: ['gw-b'] },
    { instanceId: 'i3', hostnames: ['a.example.com'], gateways: ['gw-c'] },
  ])
  t.same(out, [
    { instanceId: 'i1', tunnelIp: '10.100.0.2', port: 80, hostnames: ['a.example.com'], relayVia: ['gw-b', 'gw-a'] },
    { instanceId: 'i2', tunnelIp: '', port: 0, hostnames: ['b.example.com'], relayVia: ['gw-b'], remote: true },
  ], 'a hostname routed locally is never taken by a relay-only route')
})

t.test('ReportBuilder: a peer on WireGuard over TLS is reported by its address, which control\'s schema accepts', async t => {
  const a = key()
  const builder = new ReportBuilder('gw', 4)
  const report = builder.build([{ ...status(a, 0), endpoint: 'tls:198.18.0.2:40122' }, { ...status(key(), 0), endpoint: 'tls:[2001:db8::2]:443' }], () => undefined, [], 1_000)
  t.same(report.peers.map(p => p.endpoint), ['198.18.0.2:40122', '[2001:db8::2]:443'])
  t.doesNotThrow(() => validateReport(report))
  t.throws(() => validateReport({ ...report, peers: [{ ...report.peers[0]!, endpoint: 'tls:198.18.0.2:40122' }] }), 'the prefixed form would have been refused')
})
