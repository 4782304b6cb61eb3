import t from 'tap'
import { pair, ipPacket, establish, GATEWAY_TUNNEL_IP } from './harness.ts'
import { MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_TRANSPORT } from '../../../proto/wire/wireguard.ts'
import { generatePrivateKey } from '../../../proto/noise/index.ts'

t.test('idle client: first packet -> handshake, packet delivered, both directions work', async t => {
  const { net, gw, client } = pair()
  establish(net)
  t.same(net.log.map(s => s.type), [MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_TRANSPORT], 'initiation, response, then the staged data')
  t.equal(gw.delivered.length, 1, 'gateway stack got the packet')
  t.equal(gw.delivered[0].packet.toString('hex'), ipPacket('10.100.0.2', GATEWAY_TUNNEL_IP).toString('hex'), 'padding stripped, bytes intact')
  t.equal(gw.metrics.snapshot().wg_handshakes_completed.responder, 1)
  t.equal(client.metrics.snapshot().wg_handshakes_completed.initiator, 1)
  // Transport length: 16 header + 28 bytes padded to 32 + 16 tag.
  t.equal(net.log[2].length, 16 + 32 + 16, 'padded to a multiple of 16')

  gw.device.send(ipPacket(GATEWAY_TUNNEL_IP, '10.100.0.2', 100), net.now)
  net.flush()
  t.equal(client.delivered.length, 1, 'client got the reply')
  t.equal(client.delivered[0].packet.length, 120)
  const peer = gw.device.peer(client.publicKey)!
  const status = gw.device.peerStatus(peer, net.now)
  t.equal(status.endpoint, '198.18.0.2:40000')
  t.same(status.allowedIPs, ['10.100.0.2/32'])
  t.equal(status.hasSession, true)
  t.equal(status.rxPackets, 2, 'initiation + data')
  t.equal(status.txPackets, 2, 'response + data')
  t.ok(status.lastHandshakeAt! > Date.UTC(2025, 0, 1), 'wall-clock time')
})

t.test('preshared key: both sides must hold it', async t => {
  const psk = generatePrivateKey()
  const { net, gw } = pair({ psk })
  establish(net)
  t.equal(gw.delivered.length, 1)

  const { net: net2, gw: gw2, client: client2 } = pair()
  client2.device.updatePeer({ publicKey: gw2.publicKey, allowedIPs: [{ network: 0x0a640001, prefixLength: 32, mask: 0xffffffff }], presharedKey: psk })
  establish(net2)
  t.equal(gw2.delivered.length, 0)
  t.equal(client2.metrics.snapshot().wg_handshakes_rejected.response_invalid, 1, 'response does not authenticate with a different psk')
})

t.test('unknown peer: initiation from a key the gateway does not know', async t => {
  const { net, gw, client } = pair()
  gw.device.removePeer(client.publicKey)
  establish(net)
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.unknown_peer, 1)
  t.equal(net.sentBy('gateway').length, 0, 'no answer')
})

t.test('outgoing packet without route is counted', async t => {
  const { net, gw } = pair()
  gw.device.send(ipPacket(GATEWAY_TUNNEL_IP, '10.100.0.77'), net.now)
  gw.device.send(Buffer.from('not ip'), net.now)
  t.equal(gw.metrics.snapshot().wg_packets_dropped.no_route, 1)
  t.equal(gw.metrics.snapshot().wg_packets_dropped.tx_not_ipv4, 1)
})

t.test('gateway with no endpoint for a peer drops what it cannot send', async t => {
  const { net, gw } = pair()
  gw.device.send(ipPacket(GATEWAY_TUNNEL_IP, '10.100.0.2'), net.now)
  net.flush()
  t.equal(net.log.length, 0)
  t.equal(gw.metrics.snapshot().wg_packets_dropped.no_endpoint, 1)
})
