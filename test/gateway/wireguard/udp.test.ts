/**
 * The UDP shell and the gateway wiring over real sockets on loopback: a client Device behind its
 * own UdpShell handshakes with a Gateway, pings its tunnel address, and reads /status and /metrics.
 */
import t, { type Test } from 'tap'
import { pino } from 'pino'
import { Gateway } from '../../../gateway/index.ts'
import { validateConfig } from '../../../gateway/config/schema.ts'
import { Device } from '../../../gateway/wireguard/device.ts'
import { UdpShell } from '../../../gateway/wireguard/udp.ts'
import { batchedUdpUnavailable } from '../../../gateway/wireguard/socket.ts'
import { Metrics } from '../../../gateway/metrics.ts'
import { generatePrivateKey, publicKeyFromPrivate, encodeKey } from '../../../proto/noise/index.ts'
import { parseIPv4Prefix } from '../../../proto/wire/ipv4.ts'
import { ipPacket } from './harness.ts'
import { until } from '../../helpers/until.ts'
import { udpDevice } from '../../helpers/udp-device.ts'

const silent = pino({ level: 'silent' })

interface Client { device: Device, shell: UdpShell, metrics: Metrics, replies: Buffer[], port: number }

/** A client Device (key `privateKey`) behind its own UdpShell, with the gateway as its only peer. */
async function startClient (t: Test, privateKey: Buffer, gw: Gateway): Promise<Client> {
  const metrics = new Metrics()
  const replies: Buffer[] = []
  const { device, shell } = udpDevice({ privateKey, metrics, deliverPacket (packet) { replies.push(Buffer.from(packet)) } })
  const port = Number(gw.listen.split(':')[1])
  device.addPeer({ publicKey: gw.device.publicKey, allowedIPs: [parseIPv4Prefix('10.100.0.0/16')], endpoint: { address: '127.0.0.1', port } })
  const bound = await shell.listen()
  t.teardown(() => shell.close())
  return { device, shell, metrics, replies, port: bound.port }
}

async function startGateway (clientKey: Buffer | null, extra: Record<string, unknown> = {}): Promise<Gateway> {
  const config = validateConfig({
    privateKey: encodeKey(generatePrivateKey()),
    listenAddress: '127.0.0.1',
    listenPort: 0,
    metricsListen: '127.0.0.1:0',
    peers: clientKey === null ? [] : [{ publicKey: encodeKey(clientKey), allowedIPs: ['10.100.0.2/32'] }],
    ...extra,
  })
  return Gateway.start(config, silent)
}

const echo = (seq: number): Buffer => {
  const icmp = Buffer.from([8, 0, 0, 0, 0, 1, 0, seq])
  let sum = 0
  for (let i = 0; i < icmp.length; i += 2) sum += icmp.readUInt16BE(i)
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  icmp.writeUInt16BE(~sum & 0xffff, 2)
  return ipPacket('10.100.0.2', '10.100.0.1', icmp, 1)
}

t.test('loopback: client pings the gateway through the tunnel; /status and /metrics report it', async t => {
  const clientKey = generatePrivateKey()
  const gw = await startGateway(publicKeyFromPrivate(clientKey))
  t.teardown(() => gw.close())
  const known = await startClient(t, clientKey, gw)

  for (let seq = 1; seq <= 5; seq++) known.shell.sendPacket(echo(seq))
  await until('5 echo replies', () => known.replies.length === 5)
  t.same(known.replies.map(r => r[27]), [1, 2, 3, 4, 5], 'every echo answered, in order')
  t.equal(known.replies[0][20], 0, 'echo reply type')

  const status = await (await fetch(`http://${gw.metricsListen!}/status`)).json() as ReturnType<Gateway['status']>
  t.equal(status.publicKey, encodeKey(gw.device.publicKey))
  t.equal(status.address, '10.100.0.1')
  t.equal(status.listen, gw.listen)
  t.equal(status.peers.length, 1)
  t.equal(status.peers[0].hasSession, true)
  t.match(status.peers[0].endpoint, /^127\.0\.0\.1:\d+$/)
  t.ok(status.peers[0].rxPackets >= 6, 'initiation + 5 pings (+ keepalive)')
  t.ok(Math.abs(status.peers[0].lastHandshakeAt! - Date.now()) < 10_000, 'last handshake is wall-clock time')
  t.equal(status.counters.wg_handshakes_completed.responder, 1)
  t.equal(status.counters.ip_packets.icmp_echo_reply, 5)

  const metrics = await (await fetch(`http://${gw.metricsListen!}/metrics`)).text()
  t.match(metrics, /^cc_wg_handshakes_completed\{reason="responder"\} 1$/m)
  t.match(metrics, /^cc_ip_packets\{reason="icmp_echo_reply"\} 5$/m)
  t.match(metrics, new RegExp(`^cc_wg_peer_rx_packets\\{peer="${encodeKey(publicKeyFromPrivate(clientKey)).replace(/[+/]/g, c => `\\${c}`)}"\\} \\d+$`, 'm'))
  t.equal((await fetch(`http://${gw.metricsListen!}/nope`)).status, 404)
})

t.test('udpIo: either socket carries the tunnel; /status names it; a bad value names the field', async t => {
  const kinds: Array<'dgram' | 'batched'> = batchedUdpUnavailable === null ? ['dgram', 'batched'] : ['dgram']
  for (const udpIo of kinds) {
    const clientKey = generatePrivateKey()
    const gw = await startGateway(publicKeyFromPrivate(clientKey), { udpIo })
    t.teardown(() => gw.close())
    const client = await startClient(t, clientKey, gw)
    for (let seq = 1; seq <= 3; seq++) client.shell.sendPacket(echo(seq))
    await until(`3 echo replies over ${udpIo}`, () => client.replies.length === 3)
    const status = gw.status()
    t.equal(status.udp.io, udpIo, `${udpIo}: in use`)
    t.equal(status.udp.sendErrors, 0)
    if (udpIo === 'batched') t.ok(status.udp.stats!.sendDatagrams >= 4 && status.udp.stats!.recvDatagrams >= 4, 'handshake and echoes counted')
    else t.equal(status.udp.stats, null, 'node:dgram has no system-call counters')
  }
  if (batchedUdpUnavailable === null) {
    const gw = await startGateway(null)
    t.teardown(() => gw.close())
    t.equal(gw.status().udp.io, 'batched', 'auto: the batched socket where it is built')
  }
  t.throws(() => validateConfig({ privateKey: encodeKey(generatePrivateKey()), peers: [], udpIo: 'epoll' }), /^udpIo: must be one of \[auto, batched, dgram\]$/)
})

t.test('loopback: duplicated and reordered datagrams are absorbed by the replay window', async t => {
  const clientKey = generatePrivateKey()
  const gw = await startGateway(publicKeyFromPrivate(clientKey), { faults: { seed: 7, duplicate: 1, reorder: 0.3 } })
  t.teardown(() => gw.close())
  const { shell, replies, metrics } = await startClient(t, clientKey, gw)
  for (let seq = 1; seq <= 10; seq++) shell.sendPacket(echo(seq))
  await until('replies', () => new Set(replies.map(r => r[27])).size === 10)
  await new Promise(resolve => setTimeout(resolve, 100))
  const s = gw.status()
  t.ok(s.faults !== null && s.faults.inbound.duplicated > 0 && s.faults.outbound.duplicated > 0, 'faults applied both ways')
  t.ok((s.counters.wg_packets_dropped.replay ?? 0) > 0, 'gateway dropped duplicates as replays')
  t.equal(s.counters.ip_packets.icmp_echo_reply, 10, 'each echo answered once')
  t.ok((metrics.snapshot().wg_packets_dropped?.replay ?? 0) > 0, 'client dropped duplicated replies as replays')
  t.equal(new Set(replies.map(r => r[27])).size, 10)
})

t.test('loopback: with every datagram dropped no handshake completes', async t => {
  const clientKey = generatePrivateKey()
  const gw = await startGateway(publicKeyFromPrivate(clientKey), { faults: { seed: 3, drop: 1 } })
  t.teardown(() => gw.close())
  const { shell } = await startClient(t, clientKey, gw)
  shell.sendPacket(echo(1))
  await until('the initiation to arrive', () => (gw.status().faults?.inbound.dropped ?? 0) >= 1)
  t.equal(gw.status().counters.wg_messages_sent.response ?? 0, 0)
  t.equal(gw.status().peers[0].hasSession, false)
})

t.test('reloadPeers: adds, updates and removes without touching kept sessions', async t => {
  const gw = await startGateway(null)
  t.teardown(() => gw.close())
  const a = publicKeyFromPrivate(generatePrivateKey())
  const b = publicKeyFromPrivate(generatePrivateKey())
  const peer = (key: Buffer, ip: string): ReturnType<typeof validateConfig>['peers'][number] => ({ publicKey: key, presharedKey: null, allowedIPs: [parseIPv4Prefix(ip)], endpoint: null, persistentKeepalive: 0 })
  t.same(gw.reloadPeers([peer(a, '10.100.0.2/32'), peer(b, '10.100.0.3/32')]), { added: 2, updated: 0, removed: 0 })
  const kept = gw.device.peer(a)
  t.same(gw.reloadPeers([peer(a, '10.100.0.4/32')]), { added: 0, updated: 1, removed: 1 })
  t.equal(gw.device.peer(a), kept, 'same peer object (sessions kept)')
  t.same(gw.status().peers.map(p => p.allowedIPs), [['10.100.0.4/32']])
  t.equal(gw.device.peer(b), undefined)
})

t.test('reloadPeers: a configured endpoint lets the gateway start the handshake; once the peer spoke, its own endpoint is kept', async t => {
  // A restarted gateway knows its peers' last endpoints from control: with one, it need not wait
  // for the container's next handshake (up to REKEY_AFTER_TIME away) to reach it.
  const clientKey = generatePrivateKey()
  const gw = await startGateway(null)
  t.teardown(() => gw.close())
  const client = await startClient(t, clientKey, gw)
  const entry = (port: number): ReturnType<typeof validateConfig>['peers'][number] =>
    ({ publicKey: publicKeyFromPrivate(clientKey), presharedKey: null, allowedIPs: [parseIPv4Prefix('10.100.0.2/32')], endpoint: { address: '127.0.0.1', port }, persistentKeepalive: 0 })
  gw.reloadPeers([entry(client.port)])
  const socket = gw.connectUpstream('10.100.0.2', 80)
  socket.on('error', () => {})
  t.teardown(() => socket.destroy())
  await until('the SYN through a session the gateway initiated', () => client.replies.length > 0)
  t.equal(gw.status().counters.wg_handshakes_completed.initiator, 1, 'the gateway initiated')
  t.equal(client.replies[0][9], 6, 'a TCP segment came through')

  // A snapshot with another (stale) endpoint does not pull the live peer away from where it is.
  gw.reloadPeers([entry(9)])
  t.equal(gw.status().peers[0].endpoint, `127.0.0.1:${client.port}`, 'the roamed endpoint is kept')
  gw.reloadPeers([])
  gw.reloadPeers([entry(9)])
  t.equal(gw.status().peers[0].endpoint, '127.0.0.1:9', 'a peer never heard from takes the configured one')
})
