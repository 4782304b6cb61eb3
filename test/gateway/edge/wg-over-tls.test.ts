/**
 * WireGuard over TLS on the gateway's HTTPS port, over real sockets on loopback: a client Device
 * (as the agent's userspace mode has) reaches the gateway through a TLS connection that negotiates
 * `cc-wireguard/1`, or through the HTTP/1.1 upgrade on api.<base>; bad frames, the per-address cap
 * and idle streams are counted and closed without touching another peer's stream; a peer moves
 * between UDP and TLS by WireGuard's roaming.
 */
import t, { type Test } from 'tap'
import tls from 'node:tls'
import { pino } from 'pino'
import { Gateway } from '../../../gateway/index.ts'
import { validateConfig } from '../../../gateway/config/schema.ts'
import { snapshotFromConfig } from '../../../gateway/control/static-file.ts'
import { Device } from '../../../gateway/wireguard/device.ts'
import { UdpShell, wallClockOffset } from '../../../gateway/wireguard/udp.ts'
import { StreamEndpoints, isStreamAddress } from '../../../gateway/wireguard/streams.ts'
import { Metrics } from '../../../gateway/metrics.ts'
import { connectStream } from '../../../agent/transport.ts'
import { generatePrivateKey, publicKeyFromPrivate, encodeKey } from '../../../proto/noise/index.ts'
import { parseIPv4Prefix } from '../../../proto/wire/ipv4.ts'
import { ipPacket } from '../wireguard/harness.ts'
import { until } from '../../helpers/until.ts'
import { tempDir } from './helpers.ts'

const silent = pino({ level: 'silent' })
const BASE = 'example.test'
const API = `api.${BASE}`

interface Client { device: Device, shell: UdpShell, streams: StreamEndpoints, replies: Buffer[] }

function echo (seq: number, src: string): Buffer {
  const icmp = Buffer.from([8, 0, 0, 0, 0, 1, 0, seq])
  let sum = 0
  for (let i = 0; i < icmp.length; i += 2) sum += icmp.readUInt16BE(i)
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  icmp.writeUInt16BE(~sum & 0xffff, 2)
  return ipPacket(src, '10.100.0.1', icmp, 1)
}

async function startGateway (t: Test, clients: Buffer[], limits: Record<string, number> = {}): Promise<Gateway> {
  const config = validateConfig({
    privateKey: encodeKey(generatePrivateKey()),
    listenAddress: '127.0.0.1',
    listenPort: 0,
    udpIo: 'dgram',
    peers: clients.map((key, i) => ({ publicKey: encodeKey(publicKeyFromPrivate(key)), allowedIPs: [`10.100.0.${i + 2}/32`] })),
    edge: { dataDir: tempDir(t), httpsListen: '127.0.0.1:0', httpListen: null, limits },
  })
  const gw = await Gateway.start(config, silent)
  t.teardown(() => gw.close(0))
  const snapshot = snapshotFromConfig(config, 1)
  gw.applySnapshot({ ...snapshot, gateway: { ...snapshot.gateway, baseDomain: BASE } })
  await gw.edge!.certificatesSettled()
  return gw
}

/** A client device whose gateway endpoint is a TLS stream (or UDP, with `udp`). */
async function startClient (t: Test, privateKey: Buffer, gw: Gateway): Promise<Client> {
  const replies: Buffer[] = []
  const metrics = new Metrics()
  const shell = new UdpShell({ listenAddress: '127.0.0.1', listenPort: 0, io: 'dgram' })
  const streams = new StreamEndpoints({ metrics, receive: (m, a, p) => { shell.receiveFrom(m, a, p) } })
  const device = new Device({
    privateKey,
    metrics,
    wallClockOffset: wallClockOffset(),
    io: {
      sendDatagram (d, a, p) { if (isStreamAddress(a)) streams.send(d, a, p); else shell.sendDatagram(d, a, p) },
      deliverPacket (packet) { replies.push(Buffer.from(packet)) },
    },
  })
  shell.attach(device)
  await shell.listen()
  device.addPeer({ publicKey: gw.device.publicKey, allowedIPs: [parseIPv4Prefix('10.100.0.1/32')], endpoint: null })
  t.teardown(async () => { streams.close(); await shell.close() })
  return { device, shell, streams, replies }
}

async function openStream (client: Client, gw: Gateway, via: 'alpn' | 'upgrade' = 'alpn'): Promise<string> {
  const port = gw.edge!.addresses().https.port
  const socket = await connectStream({ host: '127.0.0.1', port, servername: API, proxy: null, timeoutMs: 5_000, via })
  const endpoint = client.streams.accept(socket, { address: '127.0.0.1', port })
  client.device.peer(gw.device.publicKey)!.endpoint = { address: endpoint!, port }
  return endpoint!
}

async function pings (client: Client, src: string, from: number, count: number): Promise<void> {
  const before = client.replies.length
  for (let seq = from; seq < from + count; seq++) client.shell.sendPacket(echo(seq, src))
  await until(`${count} echo replies`, () => client.replies.length >= before + count, 10_000)
}

/** A gateway with one peer, `key`, whose client has its stream open over TLS. */
async function clientOverTls (t: Test, key: Buffer): Promise<{ gw: Gateway, client: Awaited<ReturnType<typeof startClient>> }> {
  const gw = await startGateway(t, [key])
  const client = await startClient(t, key, gw)
  await openStream(client, gw)
  return { gw, client }
}

t.test('a peer reaches the gateway over TLS with the cc-wireguard/1 ALPN; its endpoint shows tls', async t => {
  const key = generatePrivateKey()
  const { gw, client } = await clientOverTls(t, key)
  await pings(client, '10.100.0.2', 1, 5)
  t.same(client.replies.slice(0, 5).map(r => r[27]), [1, 2, 3, 4, 5], 'every echo answered, in order')
  const status = gw.status()
  t.equal(status.peers[0]!.hasSession, true)
  t.match(status.peers[0]!.endpoint, /^tls:127\.0\.0\.1:\d+$/)
  t.equal(status.streams, 1)
  t.equal(status.counters.wg_streams!.opened, 1)
  t.equal(status.counters.wg_handshakes_completed!.responder, 1)
})

t.test('HTTP on the same port still answers while streams are accepted', async t => {
  const gw = await startGateway(t, [])
  const port = gw.edge!.addresses().https.port
  const socket = tls.connect({ host: '127.0.0.1', port, servername: API, ALPNProtocols: ['http/1.1'], rejectUnauthorized: false })
  await new Promise(resolve => socket.once('secureConnect', resolve))
  t.equal(socket.alpnProtocol, 'http/1.1')
  socket.write(`GET / HTTP/1.1\r\nhost: ${API}\r\nconnection: close\r\n\r\n`)
  let text = ''
  for await (const chunk of socket) text += (chunk as Buffer).toString()
  t.match(text, /^HTTP\/1\.1 503 /, 'control\'s page (no control origin here), from HTTP')
})

t.test('the HTTP/1.1 upgrade on api.<base> carries the tunnel; on another name or path it is not taken', async t => {
  const key = generatePrivateKey()
  const gw = await startGateway(t, [key])
  const client = await startClient(t, key, gw)
  await openStream(client, gw, 'upgrade')
  await pings(client, '10.100.0.2', 1, 3)
  t.match(gw.status().peers[0]!.endpoint, /^tls:127\.0\.0\.1:\d+$/)

  const port = gw.edge!.addresses().https.port
  await t.rejects(connectStream({ host: '127.0.0.1', port, servername: 'nothing.example.test', proxy: null, timeoutMs: 5_000, via: 'upgrade' }), { code: 'tls_failed' }, 'a name with no certificate: no TLS at all')
  const raw = tls.connect({ host: '127.0.0.1', port, servername: API, ALPNProtocols: ['http/1.1'], rejectUnauthorized: false })
  await new Promise(resolve => raw.once('secureConnect', resolve))
  raw.write(`GET /.well-known/cloud-connect/other HTTP/1.1\r\nhost: ${API}\r\nconnection: upgrade\r\nupgrade: cc-wireguard/1\r\n\r\n`)
  let text = ''
  for await (const chunk of raw) text += (chunk as Buffer).toString()
  t.notMatch(text, /^HTTP\/1\.1 101/, 'another path is not switched')
  t.equal(gw.status().counters.wg_streams!.opened, 1, 'only the real upgrade opened a stream')
})

t.test('bad frames close their stream and are counted; another peer\'s stream carries on', async t => {
  const good = generatePrivateKey()
  const { gw, client } = await clientOverTls(t, good)
  await pings(client, '10.100.0.2', 1, 2)
  const port = gw.edge!.addresses().https.port
  const cases: Array<[string, Buffer]> = [
    ['frame_empty', Buffer.from([0, 0])],
    ['frame_oversized', Buffer.from([0xff, 0xff])],
    ['malformed', Buffer.from([0, 8, 9, 0, 0, 0, 1, 2, 3, 4])],
  ]
  for (const [reason, bytes] of cases) {
    const socket = await connectStream({ host: '127.0.0.1', port, servername: API, proxy: null, timeoutMs: 5_000 })
    const closed = new Promise(resolve => socket.once('close', resolve))
    socket.on('error', () => {})
    socket.write(bytes)
    await closed
    t.equal(gw.status().counters.wg_streams![reason], 1, `${reason}: counted, stream closed`)
  }
  await pings(client, '10.100.0.2', 3, 3)
  t.pass('the good peer\'s stream still carries its tunnel')
  t.equal(gw.status().streams, 1)
})

t.test('streams per client address are capped and an idle stream is closed', async t => {
  const gw = await startGateway(t, [], { wireguardStreamsPerClient: 2, wireguardStreamIdleMs: 1_000 })
  const port = gw.edge!.addresses().https.port
  const open = async (): Promise<tls.TLSSocket> => {
    const s = await connectStream({ host: '127.0.0.1', port, servername: API, proxy: null, timeoutMs: 5_000 })
    s.on('error', () => {})
    return s
  }
  const a = await open()
  const b = await open()
  await until('two streams', () => gw.status().streams === 2)
  const c = await open()
  await new Promise(resolve => c.once('close', resolve))
  t.equal(gw.status().counters.wg_streams!.client_cap, 1, 'the third from one address refused')
  const started = Date.now()
  await Promise.all([a, b].map(async s => await new Promise(resolve => s.once('close', resolve))))
  t.ok(Date.now() - started < 3_000, 'silent streams closed after the idle limit')
  await until('the gateway forgot both streams', () => gw.status().streams === 0)
  t.equal(gw.status().counters.wg_streams!.idle, 2)
})

t.test('a peer moves from TLS to UDP and back by roaming, its session kept', async t => {
  const key = generatePrivateKey()
  const gw = await startGateway(t, [key])
  const client = await startClient(t, key, gw)
  const endpoint = await openStream(client, gw)
  await pings(client, '10.100.0.2', 1, 2)
  const peer = client.device.peer(gw.device.publicKey)!
  const udpPort = Number(gw.listen.split(':')[1])
  peer.endpoint = { address: '127.0.0.1', port: udpPort }
  await pings(client, '10.100.0.2', 3, 2)
  t.match(gw.status().peers[0]!.endpoint, /^127\.0\.0\.1:\d+$/, 'the gateway answers over UDP now')
  peer.endpoint = { address: endpoint, port: gw.edge!.addresses().https.port }
  await pings(client, '10.100.0.2', 5, 2)
  t.match(gw.status().peers[0]!.endpoint, /^tls:/, 'and over TLS again')
  t.equal(gw.status().counters.wg_handshakes_completed!.responder, 1, 'one handshake: the session moved, not renewed')
})

t.test('the ALPN protocol is refused cleanly by a listener without WireGuard streams', async t => {
  const { Edge, netConnector } = await import('../../../gateway/edge/index.ts')
  const edge = new Edge({ dataDir: tempDir(t), logger: silent, connector: netConnector, https: { host: '127.0.0.1', port: 0 }, http: false })
  await edge.start()
  t.teardown(() => edge.close(0))
  edge.updateRoutes([{ instanceId: 'i', tunnelIp: '127.0.0.1', port: 1, hostnames: [API] }])
  await edge.certificatesSettled()
  await t.rejects(connectStream({ host: '127.0.0.1', port: edge.addresses().https.port, servername: API, proxy: null, timeoutMs: 5_000 }), { code: 'tls_failed' })
})
