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
import { UdpShell, wallClockOffset } from '../../gateway/wireguard/udp.ts'
import { encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../../proto/noise/keys.ts'
import { IPPROTO_TCP, parseIPv4Address, parseIPv4Prefix } from '../../proto/wire/ipv4.ts'
import { UserspaceTunnel } from '../../agent/userspace.ts'
import { planFromConfig } from '../../agent/tunnel.ts'

const logger = pino({ level: 'silent' })

async function fakeGateway (t: Test, agentPublicKey: Buffer): Promise<{ publicKey: string, port: number, device: Device, tcp: TcpStack }> {
  const key = generatePrivateKey()
  const metrics = new Metrics()
  const shell = new UdpShell({ listenAddress: '127.0.0.1', listenPort: 0 })
  const ip = new IpLayer({ address: parseIPv4Address('10.100.0.1'), metrics, send: d => { shell.sendPacket(d) } })
  const device = new Device({
    privateKey: key,
    metrics,
    wallClockOffset: wallClockOffset(),
    io: { sendDatagram: (d, a, p) => { shell.sendDatagram(d, a, p) }, deliverPacket: (packet, _peer, now) => { ip.input(packet, now) } },
  })
  shell.attach(device)
  const { port } = await shell.listen()
  device.addPeer({ publicKey: agentPublicKey, allowedIPs: [parseIPv4Prefix('10.100.0.2/32')] })
  const tcp = new TcpStack({ localAddress: '10.100.0.1', ip, metrics })
  ip.register(IPPROTO_TCP, tcp)
  t.teardown(async () => {
    tcp.close()
    await shell.close()
  })
  return { publicKey: encodeKey(publicKeyFromPrivate(key)), port, device, tcp }
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

function plan (gatewayKey: string, port: number): ReturnType<typeof planFromConfig> {
  return planFromConfig({
    interface: { address: '10.100.0.2/32' },
    peer: { public_key: gatewayKey, endpoint: `127.0.0.1:${port}`, allowed_ips: '10.100.0.1/32', persistent_keepalive: 25 },
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
