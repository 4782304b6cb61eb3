/**
 * The timer state machine (WireGuard paper section 6) on an injected clock, two real Device cores
 * back to back. Test names: "<state> <event>".
 */
import t from 'tap'
import { pair, ipPacket, establish, addClient, GATEWAY_TUNNEL_IP, type Sent } from './harness.ts'
import { MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_TRANSPORT } from '../../../proto/wire/wireguard.ts'
import {
  REKEY_AFTER_TIME, REJECT_AFTER_TIME, KEEPALIVE_TIMEOUT, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX,
  REKEY_AFTER_MESSAGES, sealTransport, defaultAead,
} from '../../../proto/noise/index.ts'
import { MAX_STAGED_PACKETS } from '../../../gateway/wireguard/limits.ts'

const toClient = ipPacket(GATEWAY_TUNNEL_IP, '10.100.0.2')
const toGateway = ipPacket('10.100.0.2', GATEWAY_TUNNEL_IP)
const keepalives = (sent: Sent[]): Sent[] => sent.filter(s => s.type === MESSAGE_TRANSPORT && s.length === 32)
const data = (sent: Sent[]): Sent[] => sent.filter(s => s.type === MESSAGE_TRANSPORT && s.length > 32)

/** The gateway and a client with a session: the client's first packet made the handshake. */
function established (): ReturnType<typeof pair> {
  const p = pair()
  establish(p.net)
  return p
}

t.test('established initiator: rekey at REKEY_AFTER_TIME when sending', async t => {
  const { net, gw, client } = established()
  t.equal(net.sentBy('client', MESSAGE_INITIATION).length, 1)
  net.advanceTo(REKEY_AFTER_TIME - 1000)
  net.sendIp('client', toGateway)
  t.equal(net.sentBy('client', MESSAGE_INITIATION).length, 1, 'no rekey before 120 s')
  net.advanceTo(REKEY_AFTER_TIME + 1)
  const before = client.device.peer(gw.publicKey)!.current
  net.sendIp('client', toGateway)
  const inits = net.sentBy('client', MESSAGE_INITIATION)
  t.equal(inits.length, 2, 'a new initiation right after sending on a 120 s old session')
  t.equal(inits[1].at, REKEY_AFTER_TIME + 1)
  t.equal(gw.delivered.length, 3, 'the packet itself went out on the old keys')
  const peer = client.device.peer(gw.publicKey)!
  t.not(peer.current, before, 'new current keypair')
  t.equal(peer.previous, before, 'old keypair kept as previous')
  t.equal(gw.metrics.snapshot().wg_handshakes_completed.responder, 2, 'gateway confirmed the new session')
})

t.test('established responder: no time-based rekey', async t => {
  const { net, gw } = established()
  net.advanceTo(REKEY_AFTER_TIME + 1000)
  net.sendIp('gateway', toClient)
  t.equal(net.sentBy('gateway', MESSAGE_INITIATION).length, 0, 'only the initiator rekeys on time (paper 6.2)')
  t.equal(gw.delivered.length, 1)
})

t.test('gateway as initiator: reaches a configured endpoint, then rekeys at 120 s', async t => {
  const { net } = pair()
  const c2 = addClient(net, 'client2', '198.18.0.3', 40000, '10.100.0.3', { gatewayKnowsEndpoint: true })
  net.sendIp('gateway', ipPacket(GATEWAY_TUNNEL_IP, '10.100.0.3'))
  t.equal(net.sentBy('gateway', MESSAGE_INITIATION).length, 1, 'gateway initiated')
  t.equal(c2.delivered.length, 1, 'queued packet delivered after the handshake')
  net.advanceTo(REKEY_AFTER_TIME + 5)
  net.sendIp('gateway', ipPacket(GATEWAY_TUNNEL_IP, '10.100.0.3'))
  t.equal(net.sentBy('gateway', MESSAGE_INITIATION).length, 2, 'rekeyed as initiator')
})

t.test('handshake in flight: retransmits every REKEY_TIMEOUT + jitter, gives up after 18 attempts (90 s)', async t => {
  const { net, client } = pair()
  net.filter = s => s.to.startsWith('198.18.0.1:') ? null : s.datagram
  net.sendIp('client', toGateway)
  net.advanceTo(200_000)
  const inits = net.sentBy('client', MESSAGE_INITIATION)
  t.equal(inits.length, 18, '18 initiations in the series')
  for (let i = 1; i < inits.length; i++) {
    const gap = inits[i].at - inits[i - 1].at
    t.ok(gap >= REKEY_TIMEOUT && gap < REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX, `gap ${i} = ${gap} ms`)
  }
  t.ok(inits[17].at < 90_000, `last attempt at ${inits[17].at} ms`)
  t.equal(client.metrics.snapshot().wg_packets_dropped.handshake_timeout, 1, 'the queued packet was dropped on giving up')
  net.sendIp('client', toGateway)
  t.equal(net.sentBy('client', MESSAGE_INITIATION).length, 19, 'a new packet starts a new series')
})

t.test('handshake in flight: at most one initiation per REKEY_TIMEOUT', async t => {
  const { net } = pair()
  net.filter = s => s.to.startsWith('198.18.0.1:') ? null : s.datagram
  for (let i = 0; i < 5; i++) {
    net.advanceTo(i * 999)
    net.sendIp('client', toGateway)
  }
  t.equal(net.sentBy('client', MESSAGE_INITIATION).length, 1)
})

t.test('established: passive keepalive KEEPALIVE_TIMEOUT after receiving data', async t => {
  const { net } = established()
  net.advanceTo(KEEPALIVE_TIMEOUT - 1)
  t.equal(keepalives(net.sentBy('gateway')).length, 0, 'none before 10 s')
  net.advanceTo(KEEPALIVE_TIMEOUT)
  const k = keepalives(net.sentBy('gateway'))
  t.equal(k.length, 1, 'one keepalive')
  t.equal(k[0].at, KEEPALIVE_TIMEOUT)
  net.advanceTo(60_000)
  t.equal(keepalives(net.sentBy('gateway')).length, 1, 'and no more while nothing is received')
})

t.test('established: sending data cancels the passive keepalive', async t => {
  const { net } = established()
  net.advanceTo(5_000)
  net.sendIp('gateway', toClient)
  net.advanceTo(30_000)
  t.equal(keepalives(net.sentBy('gateway')).length, 0)
  t.equal(data(net.sentBy('gateway')).length, 1)
})

t.test('established: data sent and unanswered for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT -> new handshake', async t => {
  const { net } = established()
  net.advanceTo(1_000)
  net.sendIp('gateway', toClient) // answers the client's first packet: its timer is idle again
  net.advanceTo(2_000)
  net.filter = s => s.from.startsWith('198.18.0.1:') ? null : s.datagram
  net.sendIp('client', toGateway)
  const due = 2_000 + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT
  net.advanceTo(due - 1)
  t.equal(net.sentBy('client', MESSAGE_INITIATION).length, 1, 'not before 15 s')
  net.advanceTo(due + REKEY_TIMEOUT_JITTER_MAX)
  const inits = net.sentBy('client', MESSAGE_INITIATION)
  t.equal(inits.length, 2, 'new handshake')
  t.ok(inits[1].at >= due && inits[1].at < due + REKEY_TIMEOUT_JITTER_MAX, `at ${inits[1].at}`)
})

t.test('established: a reply in time cancels the new-handshake timer', async t => {
  const { net } = established()
  net.advanceTo(1_000)
  net.sendIp('client', toGateway)
  net.advanceTo(2_000)
  net.sendIp('gateway', toClient)
  net.advanceTo(60_000)
  t.equal(net.sentBy('client', MESSAGE_INITIATION).length, 1)
})

t.test('established: keys rejected after REJECT_AFTER_TIME', async t => {
  const { net, gw, client } = established()
  const kp = client.device.peer(gw.publicKey)!.current!
  net.advanceTo(REJECT_AFTER_TIME - 1)
  const late = sealTransport(defaultAead, kp.sendKey, kp.remoteIndex, kp.sendCounter + 10n, toGateway)
  gw.device.receive(Buffer.from(late), '198.18.0.2', 40000, net.now)
  t.equal(gw.delivered.length, 2, 'accepted just before 180 s')
  net.advanceTo(REJECT_AFTER_TIME)
  const expired = sealTransport(defaultAead, kp.sendKey, kp.remoteIndex, kp.sendCounter + 11n, toGateway)
  gw.device.receive(expired, '198.18.0.2', 40000, net.now)
  t.equal(gw.delivered.length, 2, 'not delivered')
  t.equal(gw.metrics.snapshot().wg_packets_dropped.key_expired, 1, 'counted as key_expired')
  const sentBefore = data(net.sentBy('client')).length
  net.sendIp('client', toGateway)
  t.equal(net.sentBy('client', MESSAGE_INITIATION).length, 2, 'sending on expired keys starts a handshake instead')
  t.equal(data(net.sentBy('client')).length, sentBefore + 1, 'packet sent after the new handshake')
  t.not(client.device.peer(gw.publicKey)!.current, kp)
  t.equal(gw.delivered.length, 3)
})

t.test('established initiator: receiving on keys older than 165 s starts one handshake', async t => {
  const { net } = established()
  net.advanceTo(REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT - 1)
  net.sendIp('gateway', toClient)
  t.equal(net.sentBy('client', MESSAGE_INITIATION).length, 1, 'not at 165 s - 1 ms')
  net.advanceTo(REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT + 1)
  net.filter = s => s.type === MESSAGE_INITIATION && s.to.startsWith('198.18.0.1:') ? null : s.datagram
  net.sendIp('gateway', toClient)
  t.equal(net.sentBy('client', MESSAGE_INITIATION).length, 2, 'one handshake')
  net.advance(1_000)
  net.sendIp('gateway', toClient)
  t.equal(net.sentBy('client', MESSAGE_INITIATION).length, 2, 'only once per session')
})

t.test('established: REKEY_AFTER_MESSAGES triggers a handshake in either role', async t => {
  const { net, gw, client } = established()
  const peer = gw.device.peer(client.publicKey)!
  peer.current!.sendCounter = REKEY_AFTER_MESSAGES + 1n
  net.sendIp('gateway', toClient)
  t.equal(net.sentBy('gateway', MESSAGE_INITIATION).length, 1, 'responder rekeys on message count')
  t.equal(client.delivered.length, 1)
})

t.test('idle: all keys zeroed 3 * REJECT_AFTER_TIME after the last session', async t => {
  const { net, gw, client } = established()
  t.ok(gw.device.indexTable.size > 0)
  net.advanceTo(3 * REJECT_AFTER_TIME - 1)
  t.not(client.device.peer(gw.publicKey)!.current, null)
  net.advanceTo(3 * REJECT_AFTER_TIME)
  t.equal(client.device.peer(gw.publicKey)!.current, null)
  t.equal(gw.device.peer(client.publicKey)!.current, null)
  t.equal(gw.device.indexTable.size, 0, 'gateway index table empty')
  t.equal(client.device.indexTable.size, 0, 'client index table empty')
})

t.test('persistent keepalive: handshake at start, then a keepalive every interval', async t => {
  const { net, gw, client } = pair({ clientKeepalive: 25 })
  net.advanceTo(0)
  t.equal(net.sentBy('client', MESSAGE_INITIATION).length, 1, 'handshake right away')
  t.equal(gw.device.peer(client.publicKey)!.current !== null, true, 'session confirmed by the keepalive')
  net.advanceTo(101_000)
  t.same(keepalives(net.sentBy('client')).map(s => s.at), [0, 25_000, 50_000, 75_000, 100_000])
  t.equal(keepalives(net.sentBy('gateway')).length, 0, 'keepalives do not ask for keepalives')
})

t.test('persistent keepalive: traffic postpones it', async t => {
  const { net } = pair({ clientKeepalive: 25 })
  net.advanceTo(0)
  net.advanceTo(20_000)
  net.sendIp('client', toGateway)
  // The gateway's passive keepalive at 30 s is traffic too: the next one is due 25 s after it.
  t.same(keepalives(net.sentBy('gateway')).map(s => s.at), [])
  net.advanceTo(54_999)
  t.same(keepalives(net.sentBy('gateway')).map(s => s.at), [30_000])
  t.same(keepalives(net.sentBy('client')).map(s => s.at), [0])
  net.advanceTo(55_000)
  t.same(keepalives(net.sentBy('client')).map(s => s.at), [0, 55_000])
})

t.test('responder next keypair: confirmed by the first data packet', async t => {
  const { net, gw, client } = pair()
  let held: Sent | null = null
  net.filter = s => {
    if (s.from.startsWith('198.18.0.1:') && s.type !== MESSAGE_RESPONSE) return null
    if (s.type === MESSAGE_TRANSPORT && held === null && s.from.startsWith('198.18.0.2:')) { held = s; return null }
    return s.datagram
  }
  establish(net)
  const peer = gw.device.peer(client.publicKey)!
  t.ok(held !== null, 'client data held back')
  t.not(peer.next, null, 'responder keys are next')
  t.equal(peer.current, null, 'not usable yet')
  t.equal(gw.metrics.snapshot().wg_handshakes_completed?.responder ?? 0, 0)
  gw.device.send(toClient, net.now)
  t.equal(data(net.sentBy('gateway')).length, 0, 'gateway cannot send on unconfirmed keys: packet staged')
  net.filter = null
  gw.device.receive(held!.datagram, '198.18.0.2', 40000, net.now)
  net.flush()
  t.equal(peer.next, null)
  t.not(peer.current, null, 'next became current')
  t.equal(gw.metrics.snapshot().wg_handshakes_completed.responder, 1)
  t.equal(gw.delivered.length, 1)
  t.equal(data(net.sentBy('gateway')).length, 1, 'staged packet flushed on confirmation')
  t.equal(client.delivered.length, 1)
})

t.test('handshake in flight: queued packets flushed in order when keys arrive', async t => {
  const { net, gw } = pair()
  net.holding = true
  for (let i = 0; i < 3; i++) net.sendIp('client', ipPacket('10.100.0.2', GATEWAY_TUNNEL_IP, Buffer.from([i, i, i, i])))
  net.holding = false
  net.flush()
  t.same(net.log.map(s => s.type), [MESSAGE_INITIATION, MESSAGE_RESPONSE, 4, 4, 4], 'data, no extra keepalive')
  t.same(gw.delivered.map(d => d.packet[20]), [0, 1, 2], 'in order')
})

t.test('handshake in flight: the queue is bounded', async t => {
  const { net, client } = pair()
  net.holding = true
  for (let i = 0; i < MAX_STAGED_PACKETS + 44; i++) net.sendIp('client', toGateway)
  t.equal(client.metrics.snapshot().wg_packets_dropped.queue_full, 44)
  net.holding = false
  net.flush()
  t.equal(net.node('gateway').delivered.length, MAX_STAGED_PACKETS)
})

t.test('established: roaming follows the latest authenticated packet', async t => {
  const { net, gw, client } = established()
  const peer = gw.device.peer(client.publicKey)!
  client.address = '198.18.0.3'
  client.port = 40001
  net.sendIp('client', toGateway)
  t.same(peer.endpoint, { address: '198.18.0.3', port: 40001 }, 'endpoint moved')
  net.sendIp('gateway', toClient)
  t.equal(client.delivered.length, 1, 'reply reached the new address')
  t.equal(net.log[net.log.length - 1].to, '198.18.0.3:40001')
  // An unauthenticated datagram from elsewhere does not move it.
  const forged = Buffer.from(net.log.filter(s => s.type === 4 && s.from === '198.18.0.3:40001')[0].datagram)
  forged[forged.length - 1] ^= 1
  gw.device.receive(forged, '198.18.0.66', 1234, net.now)
  t.same(peer.endpoint, { address: '198.18.0.3', port: 40001 })
  t.equal(gw.metrics.snapshot().wg_packets_dropped.decrypt, 1)
})

t.test('testing rekeyAfterTime: a responder session rotates after the shortened time', async t => {
  const { net, gw } = pair({ gateway: { testingRekeyAfterTime: 2_000 } })
  establish(net)
  net.advanceTo(1_500)
  net.sendIp('gateway', toClient)
  t.equal(net.sentBy('gateway', MESSAGE_INITIATION).length, 0)
  net.advanceTo(2_001)
  net.sendIp('gateway', toClient)
  t.equal(net.sentBy('gateway', MESSAGE_INITIATION).length, 1, 'gateway rekeyed')
  t.equal(gw.metrics.snapshot().wg_handshakes_completed.initiator, 1)
})
