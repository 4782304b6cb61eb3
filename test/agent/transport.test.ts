/**
 * The userspace agent's transports against a real Gateway on loopback. UDP to the gateway passes
 * through a small relay that drops every datagram while "blocked" (what a network that blocks UDP
 * does): the agent comes up over TLS to the gateway's HTTPS port after the fallback delay, carries
 * connections byte-exact, goes back to UDP by itself once the relay passes datagrams again (a
 * download running across the switch stays byte-exact), and reaches the gateway through an HTTP
 * CONNECT proxy when one is set.
 */
import t, { type Test } from 'tap'
import dgram from 'node:dgram'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { createHash } from 'node:crypto'
import { pino } from 'pino'
import { Gateway } from '../../gateway/index.ts'
import { validateConfig } from '../../gateway/config/schema.ts'
import { snapshotFromConfig } from '../../gateway/control/static-file.ts'
import { encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../../proto/noise/keys.ts'
import { UserspaceTunnel } from '../../agent/userspace.ts'
import { planFromConfig } from '../../agent/tunnel.ts'
import { proxyFromEnv, type TransportOptions } from '../../agent/transport.ts'
import { until } from '../helpers/until.ts'
import { tempDir } from '../gateway/edge/helpers.ts'

const logger = pino({ level: 'silent' })
const API = 'api.example.test'

async function startGateway (t: Test, agentKey: Buffer): Promise<Gateway> {
  const config = validateConfig({
    privateKey: encodeKey(generatePrivateKey()),
    listenAddress: '127.0.0.1',
    listenPort: 0,
    udpIo: 'dgram',
    peers: [{ publicKey: encodeKey(publicKeyFromPrivate(agentKey)), allowedIPs: ['10.100.0.2/32'] }],
    edge: { dataDir: tempDir(t), httpsListen: '127.0.0.1:0', httpListen: null },
  })
  const gw = await Gateway.start(config, logger)
  t.teardown(() => gw.close(0))
  const snapshot = snapshotFromConfig(config, 1)
  gw.applySnapshot({ ...snapshot, gateway: { ...snapshot.gateway, baseDomain: 'example.test' } })
  await gw.edge!.certificatesSettled()
  return gw
}

/** UDP relay to `port` for one client; drops everything both ways while `blocked`. */
async function udpRelay (t: Test, port: number): Promise<{ port: number, blocked: boolean, dropped: number }> {
  const front = dgram.createSocket('udp4')
  const back = dgram.createSocket('udp4')
  const state = { port: 0, blocked: true, dropped: 0 }
  let client: { address: string, port: number } | null = null
  front.on('message', (m, r) => {
    client = { address: r.address, port: r.port }
    if (state.blocked) { state.dropped++; return }
    back.send(m, port, '127.0.0.1')
  })
  back.on('message', m => {
    if (state.blocked || client === null) { state.dropped++; return }
    front.send(m, client.port, client.address)
  })
  await new Promise<void>(resolve => front.bind(0, '127.0.0.1', resolve))
  await new Promise<void>(resolve => back.bind(0, '127.0.0.1', resolve))
  state.port = front.address().port
  t.teardown(() => { front.close(); back.close() })
  return state
}

function pattern (bytes: number): Buffer {
  const b = Buffer.alloc(bytes)
  for (let i = 0; i < bytes; i++) b[i] = (i * 13 + (i >> 9)) & 0xff
  return b
}

/** Sends `bytes` of a pattern on every connection, then FIN; with `paceMs`, 256 KiB per pace so a transfer lasts a while. */
async function patternServer (t: Test, bytes: number, paceMs = 0): Promise<number> {
  const body = pattern(bytes)
  // Half-open: the client's FIN (sent at once) must not end the paced body.
  const server = net.createServer({ allowHalfOpen: true }, socket => {
    socket.on('error', () => {})
    if (paceMs === 0) { socket.end(body); return }
    let at = 0
    const timer = setInterval(() => {
      const end = Math.min(bytes, at + 256 * 1024)
      socket.write(body.subarray(at, end))
      at = end
      if (at === bytes) { clearInterval(timer); socket.end() }
    }, paceMs)
    socket.on('close', () => clearInterval(timer))
  })
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { server.close() })
  return (server.address() as AddressInfo).port
}

/** Reads a whole connection from the gateway's stack to the agent's tunnel address; resolves with its SHA-256. */
async function download (gw: Gateway, onProgress?: (bytes: number) => void): Promise<{ bytes: number, sha: string }> {
  return await new Promise((resolve, reject) => {
    const socket = gw.connectUpstream('10.100.0.2', 80)
    const hash = createHash('sha256')
    let bytes = 0
    socket.on('data', (c: Buffer) => { hash.update(c); bytes += c.length; onProgress?.(bytes) })
    socket.on('end', () => { resolve({ bytes, sha: hash.digest('hex') }) })
    socket.on('error', reject)
    socket.end()
  })
}

function plan (gatewayKey: Buffer, port: number): ReturnType<typeof planFromConfig> {
  return planFromConfig({
    interface: { address: '10.100.0.2/32' },
    peer: { public_key: encodeKey(gatewayKey), endpoint: `127.0.0.1:${port}`, allowed_ips: '10.100.0.1/32', persistent_keepalive: 25 },
  })
}

async function startTunnel (t: Test, agentKey: Buffer, targetPort: number, transport: Partial<TransportOptions>): Promise<UserspaceTunnel> {
  const tunnel = new UserspaceTunnel({ privateKey: agentKey, target: { host: '127.0.0.1', port: targetPort }, tunnelPorts: [80], listenPort: 0, logger, transport })
  t.teardown(async () => { await tunnel.close() })
  return tunnel
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

t.test('UDP blocked: the agent comes up over TLS, serves byte-exact, and moves back to UDP when UDP passes again', async t => {
  const agentKey = generatePrivateKey()
  const gw = await startGateway(t, agentKey)
  const relay = await udpRelay(t, Number(gw.listen.split(':')[1]))
  const BYTES = 16 * 1024 * 1024
  // 64 chunks 100 ms apart: a download lasts over 6 s, longer than the probe interval.
  const targetPort = await patternServer(t, BYTES, 100)
  const expected = sha(pattern(BYTES))
  const tunnel = await startTunnel(t, agentKey, targetPort, {
    setting: 'auto', fallbackAfterMs: 1_000, udpProbeIntervalMs: 2_000, tlsPort: gw.edge!.addresses().https.port, serverName: API, proxyFor: () => null,
  })
  const started = Date.now()
  await tunnel.apply(plan(gw.device.publicKey, relay.port))
  await until('the tunnel is up over TLS', () => tunnel.gateways()[0]?.transport === 'tls' && tunnel.health().lastHandshakeAt !== null, 15_000)
  t.ok(Date.now() - started < 15_000, 'within 15 s')
  t.ok(relay.dropped > 0, 'UDP was tried and dropped')
  t.equal(tunnel.currentTransport, 'tls')
  t.match(gw.peerStatuses()[0]!.endpoint, /^tls:127\.0\.0\.1:\d+$/, 'the gateway sees the peer on TLS')
  const first = await download(gw)
  t.same(first, { bytes: BYTES, sha: expected }, 'a download over TLS, byte-exact')

  // Unblock while a download runs: the next probe moves the tunnel to UDP under it.
  let progress = 0
  const running = download(gw, n => { progress = n })
  await until('the download is under way', () => progress > 0)
  relay.blocked = false
  await until('back on UDP', () => tunnel.currentTransport === 'udp', 10_000)
  t.ok(progress < BYTES, 'the switch came while the download was running')
  t.match(gw.peerStatuses()[0]!.endpoint, /^127\.0\.0\.1:\d+$/, 'the gateway sees the peer on UDP again')
  const second = await running
  t.same(second, { bytes: BYTES, sha: expected }, 'the download across the switch completes byte-exact')
  t.ok(progress === BYTES, 'every byte counted')
  await until('the stream is closed once UDP carries the tunnel', () => gw.status().streams === 0, 10_000)
})

t.test('through an HTTP CONNECT proxy: the agent reaches the gateway\'s HTTPS port over TLS', async t => {
  const agentKey = generatePrivateKey()
  const gw = await startGateway(t, agentKey)
  const httpsPort = gw.edge!.addresses().https.port
  const connects: string[] = []
  const proxy = net.createServer(client => {
    client.on('error', () => {})
    client.once('data', (head: Buffer) => {
      const line = head.toString('latin1').split('\r\n', 1)[0]!
      connects.push(line)
      const m = /^CONNECT ([^ ]+):(\d+) HTTP\/1\.1$/.exec(line)
      if (m === null) { client.end('HTTP/1.1 405 Method Not Allowed\r\n\r\n'); return }
      const upstream = net.connect(Number(m[2]), '127.0.0.1', () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n')
        client.pipe(upstream)
        upstream.pipe(client)
      })
      upstream.on('error', () => client.destroy())
    })
  })
  await new Promise<void>(resolve => { proxy.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { proxy.close() })
  const proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`
  const BYTES = 4 * 1024 * 1024
  const targetPort = await patternServer(t, BYTES)
  const tunnel = await startTunnel(t, agentKey, targetPort, { setting: 'tls', tlsPort: httpsPort, serverName: API, proxyFor: () => proxyUrl })
  await tunnel.apply(plan(gw.device.publicKey, Number(gw.listen.split(':')[1])))
  await until('up over TLS through the proxy', () => tunnel.currentTransport === 'tls' && tunnel.health().lastHandshakeAt !== null, 15_000)
  t.same(connects, [`CONNECT 127.0.0.1:${httpsPort} HTTP/1.1`], 'one CONNECT to the gateway\'s HTTPS port')
  t.same(await download(gw), { bytes: BYTES, sha: sha(pattern(BYTES)) }, 'byte-exact through the proxy')
})

t.test('transport udp never leaves UDP', async t => {
  const agentKey = generatePrivateKey()
  const gw = await startGateway(t, agentKey)
  const relay = await udpRelay(t, Number(gw.listen.split(':')[1]))
  const tunnel = await startTunnel(t, agentKey, 1, { setting: 'udp', fallbackAfterMs: 200, tlsPort: gw.edge!.addresses().https.port, serverName: API, proxyFor: () => null })
  await tunnel.apply(plan(gw.device.publicKey, relay.port))
  await new Promise(resolve => setTimeout(resolve, 1_500))
  t.equal(tunnel.currentTransport, 'udp')
  t.equal(gw.status().streams, 0, 'no stream opened')
  t.equal(tunnel.health().lastHandshakeAt, null)
})

t.test('proxyFromEnv: https_proxy before HTTPS_PROXY, NO_PROXY names and suffixes excluded', async t => {
  t.equal(proxyFromEnv('gw.example.com', {}), null)
  t.equal(proxyFromEnv('gw.example.com', { HTTPS_PROXY: 'http://p:3128' }), 'http://p:3128')
  t.equal(proxyFromEnv('gw.example.com', { HTTPS_PROXY: 'http://p:3128', https_proxy: 'http://q:3128' }), 'http://q:3128')
  t.equal(proxyFromEnv('gw.example.com', { HTTPS_PROXY: 'http://p:3128', NO_PROXY: 'example.com' }), null)
  t.equal(proxyFromEnv('gw.example.com', { HTTPS_PROXY: 'http://p:3128', no_proxy: '.other.com,*' }), null)
  t.equal(proxyFromEnv('gw.example.com', { HTTPS_PROXY: 'http://p:3128', NO_PROXY: 'other.com' }), 'http://p:3128')
})
