/**
 * UserspaceTunnel against an in-process gateway (our Device + UdpShell + IpLayer + TcpStack on
 * loopback): handshake and ICMP round trips, connections from the gateway spliced to a local
 * target (both directions, half-close), a refusing target resets the tunnel connection, and
 * reconnect() roams: a new local UDP port, a fresh handshake, and the gateway follows.
 */
import t, { type Test } from 'tap'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { Metrics } from '../../gateway/metrics.ts'
import { IpLayer } from '../../gateway/netstack/ip.ts'
import { TcpStack } from '../../gateway/netstack/tcp/index.ts'
import { Device } from '../../gateway/wireguard/device.ts'
import { UdpShell } from '../../gateway/wireguard/udp.ts'
import { encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../../proto/noise/keys.ts'
import { IPPROTO_TCP, parseIPv4Address, parseIPv4Prefix } from '../../proto/wire/ipv4.ts'
import { UserspaceTunnel } from '../../agent/userspace.ts'
import { planFromConfig } from '../../agent/tunnel.ts'
import { udpDevice } from '../helpers/udp-device.ts'

const logger = pino({ level: 'silent' })

async function fakeGateway (t: Test, agentPublicKey: Buffer, address = '10.100.0.1', listenAddress = '127.0.0.1'): Promise<{ publicKey: string, port: number, device: Device, tcp: TcpStack, shell: UdpShell }> {
  const key = generatePrivateKey()
  const metrics = new Metrics()
  const { device, shell } = udpDevice({ privateKey: key, metrics, listenAddress, deliverPacket: (packet, _peer, now) => { ip.input(packet, now) } })
  const ip = new IpLayer({ address: parseIPv4Address(address), metrics, send: d => { shell.sendPacket(d) } })
  const { port } = await shell.listen()
  device.addPeer({ publicKey: agentPublicKey, allowedIPs: [parseIPv4Prefix('10.100.0.2/32')] })
  const tcp = new TcpStack({ localAddress: address, ip, metrics })
  ip.register(IPPROTO_TCP, tcp)
  t.teardown(async () => {
    tcp.close()
    await shell.close()
  })
  return { publicKey: encodeKey(publicKeyFromPrivate(key)), port, device, tcp, shell }
}

async function echoServer (t: Test): Promise<number> {
  const server = net.createServer({ allowHalfOpen: true }, socket => {
    socket.on('error', () => {})
    socket.pipe(socket)
  })
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { server.close() })
  return (server.address() as AddressInfo).port
}

function plan (gatewayKey: string, port: number, host = '127.0.0.1'): ReturnType<typeof planFromConfig> {
  return planFromConfig({
    interface: { address: '10.100.0.2/32' },
    peer: { public_key: gatewayKey, endpoint: host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`, allowed_ips: '10.100.0.1/32', persistent_keepalive: 25 },
  })
}

async function roundTrip (tcp: TcpStack, payload: Buffer): Promise<Buffer> {
  return await new Promise((resolve, reject) => {
    const socket = tcp.connect({ host: '10.100.0.2', port: 80 })
    const chunks: Buffer[] = []
    socket.on('data', (c: Buffer) => chunks.push(c))
    socket.on('end', () => { resolve(Buffer.concat(chunks)) })
    socket.on('error', reject)
    // Half-close: the echo answers everything, then its FIN comes back.
    socket.end(payload)
  })
}

t.test('handshake, probes, forwarding both ways with half-close, roaming on reconnect', async t => {
  const agentKey = generatePrivateKey()
  const gw = await fakeGateway(t, publicKeyFromPrivate(agentKey))
  const targetPort = await echoServer(t)
  const tunnel = new UserspaceTunnel({ privateKey: agentKey, target: { host: '127.0.0.1', port: targetPort }, tunnelPorts: [80], listenPort: 0, logger })
  t.teardown(async () => { await tunnel.close() })

  await tunnel.apply(plan(gw.publicKey, gw.port))
  let rtt: number | null = null
  for (let i = 0; i < 10 && rtt === null; i++) rtt = await tunnel.probe(1_000)
  t.ok(rtt !== null, 'the gateway answers an ICMP echo through the tunnel')
  const health = tunnel.health()
  t.ok(health.lastHandshakeAt !== null && Math.abs(Date.now() - health.lastHandshakeAt) < 60_000, 'a handshake, wall-clock time')
  t.equal(health.endpoint, `127.0.0.1:${gw.port}`)
  t.ok(health.lastReceiveAt !== null, 'something was received')

  const payload = Buffer.alloc(3 * 1024 * 1024)
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 7 + (i >> 11)) & 0xff
  t.ok((await roundTrip(gw.tcp, payload)).equals(payload), '3 MB through the forwarder to the target and back, then FIN')

  const peer = [...gw.device.peers.values()][0]
  const before = peer.endpoint!.port
  await tunnel.reconnect()
  rtt = null
  for (let i = 0; i < 10 && rtt === null; i++) rtt = await tunnel.probe(1_000)
  t.ok(rtt !== null, 'answers again after reconnect')
  t.not(peer.endpoint!.port, before, 'the gateway follows the new source port (roaming)')
  t.ok((await roundTrip(gw.tcp, Buffer.from('after roaming'))).equals(Buffer.from('after roaming')), 'connections work after roaming')

  await tunnel.close()
  t.equal(await tunnel.probe(200), null, 'no probes after close')
})

t.test('a gateway endpoint written [::1]:port: the tunnel runs over IPv6 and reports it bracketed', async t => {
  const agentKey = generatePrivateKey()
  const gw = await fakeGateway(t, publicKeyFromPrivate(agentKey), '10.100.0.1', '::')
  const targetPort = await echoServer(t)
  const tunnel = new UserspaceTunnel({ privateKey: agentKey, target: { host: '127.0.0.1', port: targetPort }, tunnelPorts: [80], listenPort: 0, logger })
  t.teardown(async () => { await tunnel.close() })
  await tunnel.apply(plan(gw.publicKey, gw.port, '::1'))
  let rtt: number | null = null
  for (let i = 0; i < 10 && rtt === null; i++) rtt = await tunnel.probe(1_000)
  t.ok(rtt !== null, 'the gateway answers through the tunnel')
  t.equal(tunnel.health().endpoint, `[::1]:${gw.port}`, 'the agent reports the IPv6 endpoint in brackets')
  t.equal(tunnel.gateways()[0]!.configuredEndpoint, `[::1]:${gw.port}`)
  const peer = [...gw.device.peers.values()][0]
  t.equal(peer.endpoint!.address, '::1', 'the gateway sees an IPv6 peer')
  t.ok((await roundTrip(gw.tcp, Buffer.from('over IPv6'))).equals(Buffer.from('over IPv6')), 'a connection through the tunnel')
})

t.test('an IPv4 agent on a dual-stack gateway socket is reported as plain IPv4', async t => {
  const agentKey = generatePrivateKey()
  const gw = await fakeGateway(t, publicKeyFromPrivate(agentKey), '10.100.0.1', '::')
  const tunnel = new UserspaceTunnel({ privateKey: agentKey, target: { host: '127.0.0.1', port: await echoServer(t) }, tunnelPorts: [80], listenPort: 0, logger })
  t.teardown(async () => { await tunnel.close() })
  await tunnel.apply(plan(gw.publicKey, gw.port, '127.0.0.1'))
  let rtt: number | null = null
  for (let i = 0; i < 10 && rtt === null; i++) rtt = await tunnel.probe(1_000)
  t.ok(rtt !== null, 'the gateway answers through the tunnel')
  const peer = [...gw.device.peers.values()][0]
  const status = gw.device.peerStatus(peer, 0)
  t.match(status.endpoint, /^127\.0\.0\.1:\d+$/, `the gateway reports 127.0.0.1, not ::ffff:127.0.0.1 (${String(status.endpoint)})`)
  t.ok((await roundTrip(gw.tcp, Buffer.from('over IPv4'))).equals(Buffer.from('over IPv4')), 'a connection through the tunnel')
})

t.test('a target that refuses: the gateway\'s connection is reset at once', async t => {
  const agentKey = generatePrivateKey()
  const gw = await fakeGateway(t, publicKeyFromPrivate(agentKey))
  const closed = net.createServer()
  await new Promise<void>(resolve => { closed.listen(0, '127.0.0.1', resolve) })
  const deadPort = (closed.address() as AddressInfo).port
  await new Promise(resolve => { closed.close(resolve) })
  const tunnel = new UserspaceTunnel({ privateKey: agentKey, target: { host: '127.0.0.1', port: deadPort }, tunnelPorts: [80], listenPort: 0, logger })
  t.teardown(async () => { await tunnel.close() })
  await tunnel.apply(plan(gw.publicKey, gw.port))
  for (let i = 0; i < 10 && await tunnel.probe(1_000) === null; i++);
  const err = await new Promise<NodeJS.ErrnoException | null>(resolve => {
    const socket = gw.tcp.connect({ host: '10.100.0.2', port: 80 })
    socket.on('error', e => { resolve(e) })
    socket.on('close', () => { resolve(null) })
    socket.resume()
    socket.write('GET / HTTP/1.1\r\n\r\n')
  })
  t.equal(err?.code, 'ECONNRESET', 'reset, so the edge can answer 502 at once')
  t.equal(tunnel.metrics.snapshot().agent_forward?.target_refused, 1, 'counted')
})

function fleetPlan (gateways: Array<{ id: string, publicKey: string, port: number, address: string }>): ReturnType<typeof planFromConfig> {
  const peers = gateways.map((g, i) => ({ gateway_id: g.id, role: i === 0 ? 'primary' : 'backup', region: null, public_key: g.publicKey, endpoint: `127.0.0.1:${g.port}`, allowed_ips: `${g.address}/32`, persistent_keepalive: 25 }))
  const { gateway_id: _, role: _r, region: _g, ...peer } = peers[0]
  return planFromConfig({ interface: { address: '10.100.0.2/32' }, peer, peers })
}

/** A server that sends `bytes` of a pattern on every connection, then FIN. */
async function patternServer (t: Test, bytes: number): Promise<number> {
  const server = net.createServer(socket => {
    socket.on('error', () => {})
    socket.end(pattern(bytes))
  })
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { server.close() })
  return (server.address() as AddressInfo).port
}

function pattern (bytes: number): Buffer {
  const b = Buffer.alloc(bytes)
  for (let i = 0; i < bytes; i++) b[i] = (i * 13 + (i >> 9)) & 0xff
  return b
}

/** Opens a connection from the gateway's stack and stops reading after the first data, until release(). */
function heldRead (tcp: TcpStack): { done: Promise<Buffer>, received: () => number, release: () => void } {
  const chunks: Buffer[] = []
  let received = 0
  let held = true
  const socket = tcp.connect({ host: '10.100.0.2', port: 80 })
  const done = new Promise<Buffer>((resolve, reject) => {
    socket.on('data', (c: Buffer) => {
      chunks.push(c)
      received += c.length
      if (held) socket.pause()
    })
    socket.on('end', () => { resolve(Buffer.concat(chunks)) })
    socket.on('error', reject)
    socket.end()
  })
  return { done, received: () => received, release: () => { held = false; socket.resume() } }
}

async function answers (tunnel: UserspaceTunnel, address: string): Promise<boolean> {
  for (let i = 0; i < 10; i++) if (await tunnel.probe(500, address) !== null) return true
  return false
}

t.test('two gateways: one peer each on one device; losing one leaves the other\'s connection whole; a new set adds and removes without touching the one that stays', async t => {
  const agentKey = generatePrivateKey()
  const agentPublic = publicKeyFromPrivate(agentKey)
  const a = await fakeGateway(t, agentPublic, '10.100.0.1')
  const b = await fakeGateway(t, agentPublic, '10.100.255.254')
  const c = await fakeGateway(t, agentPublic, '10.100.255.253')
  const BYTES = 2 * 1024 * 1024
  const targetPort = await patternServer(t, BYTES)
  const tunnel = new UserspaceTunnel({ privateKey: agentKey, target: { host: '127.0.0.1', port: targetPort }, tunnelPorts: [80], listenPort: 0, logger })
  t.teardown(async () => { await tunnel.close() })

  const gwA = { id: 'gw-a', publicKey: a.publicKey, port: a.port, address: '10.100.0.1' }
  const gwB = { id: 'gw-b', publicKey: b.publicKey, port: b.port, address: '10.100.255.254' }
  const gwC = { id: 'gw-c', publicKey: c.publicKey, port: c.port, address: '10.100.255.253' }
  await tunnel.apply(fleetPlan([gwA, gwB]))
  t.ok(await answers(tunnel, '10.100.0.1'), 'gateway A answers through its own peer')
  t.ok(await answers(tunnel, '10.100.255.254'), 'gateway B answers through its own peer')
  t.same(tunnel.gateways().map(g => [g.gatewayId, g.role, g.gatewayAddress]), [['gw-a', 'primary', '10.100.0.1'], ['gw-b', 'backup', '10.100.255.254']])
  t.ok(tunnel.gateways().every(g => g.lastHandshakeAt !== null), 'a handshake with each')
  t.ok((await new Promise<Buffer>((resolve, reject) => {
    const s = a.tcp.connect({ host: '10.100.0.2', port: 80 })
    const got: Buffer[] = []
    s.on('data', (x: Buffer) => got.push(x)).on('end', () => { resolve(Buffer.concat(got)) }).on('error', reject)
    s.end()
  })).equals(pattern(BYTES)), 'a connection from gateway A reaches the target and comes back through A')

  // A slow download through B; then gateway A dies (its socket closes: nothing more from it).
  const throughB = heldRead(b.tcp)
  await new Promise(resolve => setTimeout(resolve, 200))
  t.ok(throughB.received() > 0, 'the download through B is under way')
  const bPeer = tunnel.gateways().find(g => g.gatewayId === 'gw-b')!
  await a.shell.close()
  t.notOk(await tunnel.probe(300, '10.100.0.1'), 'gateway A is gone')
  t.ok(await tunnel.probe(1_000) !== null, 'the tunnel still answers through another gateway')

  // A heartbeat's new set: A removed, C added, B (now primary) untouched.
  const bSessionBefore = [...b.device.peers.values()][0].current
  t.ok(throughB.received() < BYTES, 'the download through B is still under way when the set changes')
  await tunnel.apply(fleetPlan([gwB, gwC]))
  t.same(tunnel.gateways().map(g => [g.gatewayId, g.role]), [['gw-b', 'primary'], ['gw-c', 'backup']])
  t.ok(await answers(tunnel, '10.100.255.253'), 'gateway C, added, answers')
  t.equal([...b.device.peers.values()][0].current, bSessionBefore, 'B kept its session: no new handshake for the gateway that stayed')
  t.ok(tunnel.gateways().find(g => g.gatewayId === 'gw-b')!.lastHandshakeAt === bPeer.lastHandshakeAt, 'the same handshake on our side')
  throughB.release()
  const body = await throughB.done
  t.equal(body.length, BYTES)
  t.ok(body.equals(pattern(BYTES)), 'the download through B completes byte-exact across A\'s loss and the new set')
  t.equal(await tunnel.probe(300, '10.100.0.1'), null, 'no peer for A any more')
})
