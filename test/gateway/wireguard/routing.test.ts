/** Cryptokey routing (paper 2) and peer isolation through the gateway's IP layer. */
import t from 'tap'
import { pair, addClient, ipPacket, establish, GATEWAY_TUNNEL_IP, type Net, type Node } from './harness.ts'
import { IpLayer } from '../../../gateway/netstack/ip.ts'
import { AllowedIps } from '../../../gateway/wireguard/allowed-ips.ts'
import { parseIPv4Address, parseIPv4Prefix } from '../../../proto/wire/ipv4.ts'

/** Puts an IpLayer behind the gateway device, as gateway/index.ts does. */
function withIpLayer (net: Net, gw: Node): IpLayer {
  const ip = new IpLayer({ address: parseIPv4Address(GATEWAY_TUNNEL_IP), metrics: gw.metrics, send: d => { gw.device.send(d, net.now) } })
  const deliver = gw.device.io.deliverPacket
  ;(gw.device.io as { deliverPacket: typeof deliver }).deliverPacket = (packet, peer, now) => {
    deliver(packet, peer, now)
    ip.input(packet, now)
  }
  return ip
}

t.test('established: a packet whose source is outside the peer\'s allowed IPs is dropped', async t => {
  const { net, gw } = pair()
  establish(net)
  net.sendIp('client', ipPacket('10.100.0.9', GATEWAY_TUNNEL_IP))
  net.sendIp('client', ipPacket('10.100.0.3', GATEWAY_TUNNEL_IP))
  t.equal(gw.delivered.length, 1, 'only the first, genuine packet')
  t.equal(gw.metrics.snapshot().wg_packets_dropped.allowed_ips, 2)
})

t.test('established: a peer cannot claim another peer\'s address', async t => {
  const { net, gw } = pair()
  addClient(net, 'client2', '198.18.0.3', 40000, '10.100.0.3')
  establish(net)
  establish(net, 'client2', '10.100.0.3')
  net.sendIp('client2', ipPacket('10.100.0.2', GATEWAY_TUNNEL_IP))
  t.equal(gw.metrics.snapshot().wg_packets_dropped.allowed_ips, 1)
  t.same(gw.delivered.map(d => d.peer.name), [net.node('client').publicKey.toString('base64'), net.node('client2').publicKey.toString('base64')])
})

t.test('established: a packet addressed to another peer is dropped by the IP layer, never forwarded', async t => {
  const { net, gw } = pair()
  const c2 = addClient(net, 'client2', '198.18.0.3', 40000, '10.100.0.3')
  const ip = withIpLayer(net, gw)
  void ip
  establish(net)
  establish(net, 'client2', '10.100.0.3')
  const before = net.sentBy('gateway').length
  net.sendIp('client', ipPacket('10.100.0.2', '10.100.0.3'))
  t.equal(gw.metrics.snapshot().ip_dropped.not_for_us, 1, 'counted')
  t.equal(c2.delivered.length, 0, 'other peer got nothing')
  t.equal(net.sentBy('gateway').length, before, 'gateway sent nothing')
})

t.test('established: the gateway answers a ping through the tunnel', async t => {
  const { net, gw, client } = pair()
  withIpLayer(net, gw)
  const echo = Buffer.from('0800f7fd00010001', 'hex') // type 8, id 1, seq 1, no payload; checksum by RFC 1071 by hand
  net.sendIp('client', ipPacket('10.100.0.2', GATEWAY_TUNNEL_IP, echo, 1))
  t.equal(client.delivered.length, 1, 'reply came back through the tunnel')
  const reply = client.delivered[0].packet
  t.equal(reply.subarray(20).toString('hex'), '0000fffd00010001', 'echo reply, checksum adjusted by 0x0800')
})

t.test('outgoing: destination picks the peer; unknown destinations have no route', async t => {
  const { net, gw, client } = pair()
  const c2 = addClient(net, 'client2', '198.18.0.3', 40000, '10.100.0.3')
  establish(net)
  establish(net, 'client2', '10.100.0.3')
  net.sendIp('gateway', ipPacket(GATEWAY_TUNNEL_IP, '10.100.0.3', 40))
  t.equal(c2.delivered.length, 1)
  t.equal(client.delivered.length, 0)
  net.sendIp('gateway', ipPacket(GATEWAY_TUNNEL_IP, '10.100.0.4', 40))
  t.equal(gw.metrics.snapshot().wg_packets_dropped.no_route, 1)
})

t.test('AllowedIps: longest prefix wins, moves and removal', async t => {
  const table = new AllowedIps<string>()
  table.insert(parseIPv4Prefix('10.0.0.0/8'), 'wide')
  table.insert(parseIPv4Prefix('10.100.0.0/16'), 'mid')
  table.insert(parseIPv4Prefix('10.100.0.2/32'), 'host')
  table.insert(parseIPv4Prefix('0.0.0.0/0'), 'default')
  t.equal(table.lookup(parseIPv4Address('10.100.0.2')), 'host')
  t.equal(table.lookup(parseIPv4Address('10.100.0.3')), 'mid')
  t.equal(table.lookup(parseIPv4Address('10.1.2.3')), 'wide')
  t.equal(table.lookup(parseIPv4Address('192.0.2.1')), 'default')
  table.insert(parseIPv4Prefix('10.100.0.2/32'), 'mid')
  t.same(table.prefixesOf('host'), [], 'prefix moved to its new owner')
  t.same(table.prefixesOf('mid'), [{ network: parseIPv4Address('10.100.0.2'), prefixLength: 32 }, { network: parseIPv4Address('10.100.0.0'), prefixLength: 16 }], 'listed under it, longest first')
  table.removeOwner('host')
  t.equal(table.lookup(parseIPv4Address('10.100.0.2')), 'mid', 'removing the old owner leaves the moved prefix alone')
  table.removeOwner('mid')
  t.equal(table.lookup(parseIPv4Address('10.100.0.2')), 'wide')
  table.removeOwner('default')
  t.equal(table.lookup(parseIPv4Address('192.0.2.1')), undefined)
  t.same(table.prefixesOf('wide'), [{ network: parseIPv4Address('10.0.0.0'), prefixLength: 8 }])
})

t.test('AllowedIps: owners of several prefixes and addresses above 2^31 keep exact networks through moves and removal', async t => {
  const table = new AllowedIps<string>()
  for (const p of ['192.168.7.9/32', '255.255.255.255/32', '172.16.0.0/12']) table.insert(parseIPv4Prefix(p), 'a')
  table.insert(parseIPv4Prefix('203.0.113.0/24'), 'b')
  t.same(table.prefixesOf('a').map(p => p.network), ['192.168.7.9', '255.255.255.255', '172.16.0.0'].map(parseIPv4Address), 'three prefixes, exact, longest first')
  table.insert(parseIPv4Prefix('255.255.255.255/32'), 'b')
  t.same(table.prefixesOf('a').map(p => p.prefixLength), [32, 12], 'the moved one left the first owner')
  t.same(table.prefixesOf('b'), [{ network: parseIPv4Address('255.255.255.255'), prefixLength: 32 }, { network: parseIPv4Address('203.0.113.0'), prefixLength: 24 }])
  table.insert(parseIPv4Prefix('192.168.7.9/32'), 'b')
  table.insert(parseIPv4Prefix('172.16.0.0/12'), 'b')
  t.same(table.prefixesOf('a'), [], 'an owner whose every prefix moved owns none')
  table.removeOwner('a')
  t.equal(table.lookup(parseIPv4Address('172.20.1.1')), 'b', 'removing it takes nothing from the new owner')
  table.removeOwner('b')
  for (const a of ['192.168.7.9', '255.255.255.255', '172.20.1.1', '203.0.113.5']) t.equal(table.lookup(parseIPv4Address(a)), undefined, `${a}: no owner left`)
  table.insert(parseIPv4Prefix('10.0.0.0/8'), 'c')
  t.equal(table.lookup(parseIPv4Address('10.1.1.1')), 'c', 'a table emptied and dropped is made again')
})
