/** DoS defences of the device (paper 5.3, 5.4.4, 5.4.7; wireguard-go ratelimiter.go). */
import t from 'tap'
import { Net, pair, addClient, establish, GATEWAY_ADDRESS, GATEWAY_PORT, WALL_CLOCK_OFFSET, type Sent } from './harness.ts'
import { MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_COOKIE_REPLY } from '../../../proto/wire/wireguard.ts'
import { createInitiation, mac1Key, writeMac1 } from '../../../proto/noise/index.ts'
import { RateLimiter } from '../../../gateway/wireguard/ratelimiter.ts'

const MAC1_OFFSET = 116

function firstOf (sent: Sent[], type: number): Buffer {
  const s = sent.find(x => x.type === type)
  if (s === undefined) throw new Error(`no message of type ${type}`)
  return Buffer.from(s.datagram)
}

t.test('any load: wrong mac1 -> dropped before any DH, counted', async t => {
  const { net, gw } = pair()
  net.filter = () => null
  establish(net)
  const init = firstOf(net.log, MESSAGE_INITIATION)
  net.filter = null
  const bad = Buffer.from(init)
  bad[MAC1_OFFSET + 3] ^= 0x10
  gw.device.receive(bad, '198.18.0.2', 40000, net.now)
  net.flush()
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.mac1, 1)
  t.equal(net.sentBy('gateway').length, 0, 'no answer')
  t.equal(gw.device.indexTable.size, 0, 'no state created')
  gw.device.receive(init, '198.18.0.2', 40000, net.now)
  net.flush()
  t.equal(net.sentBy('gateway', MESSAGE_RESPONSE).length, 1, 'the intact message is answered')
})

t.test('under load: initiation without mac2 gets a cookie reply and is not processed; the retry with mac2 is', async t => {
  const { net, gw, client } = pair({ gateway: { underLoadHandshakesPerSecond: 0 } })
  establish(net)
  t.equal(net.sentBy('gateway', MESSAGE_COOKIE_REPLY).length, 1, 'cookie reply sent')
  t.equal(net.sentBy('gateway', MESSAGE_RESPONSE).length, 0, 'initiation not answered')
  t.equal(gw.device.indexTable.size, 0, 'no responder state')
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.cookie_sent, 1)
  t.equal(client.metrics.snapshot().wg_messages_received.cookie_reply, 1, 'client took the cookie')
  net.advance(6_000)
  const inits = net.sentBy('client', MESSAGE_INITIATION)
  t.equal(inits.length, 2, 'client retransmitted')
  t.ok(inits[1].datagram.subarray(132).some(b => b !== 0), 'retransmit carries mac2')
  t.equal(net.sentBy('gateway', MESSAGE_RESPONSE).length, 1, 'mac2 valid under load: processed')
  t.equal(gw.delivered.length, 1, 'queued packet arrived')
  t.equal(gw.metrics.snapshot().wg_handshakes_completed.responder, 1)
})

t.test('under load: the response to our own initiation is taken without a cookie, once; a second response to it needs one', async t => {
  const net = new Net()
  const gw = net.addNode('gateway', GATEWAY_ADDRESS, GATEWAY_PORT, '10.100.0.1', { underLoadHandshakesPerSecond: 0 })
  addClient(net, 'client', '198.18.0.2', 40000, '10.100.0.2', { gatewayKnowsEndpoint: true })
  net.holding = true
  const peer = [...gw.device.peers.values()][0]
  gw.device.sendInitiation(peer, net.now, false)
  net.holding = false
  net.filter = s => s.type === MESSAGE_RESPONSE ? null : s.datagram
  net.flush()
  const response = firstOf(net.log, MESSAGE_RESPONSE)
  net.filter = null
  // Threshold 0: always under load, as with thousands of peers' own initiations arriving.
  gw.device.receive(Buffer.from(response), '198.18.0.2', 40000, net.now)
  net.flush()
  t.equal(gw.metrics.snapshot().wg_handshakes_completed.initiator, 1, 'handshake completed as initiator under load')
  t.equal(net.sentBy('gateway', MESSAGE_COOKIE_REPLY).length, 0, 'no cookie reply to the response')
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.cookie_sent ?? 0, 0)
  t.ok(peer.current !== null, 'the session is installed')

  // Another initiation of ours: a forged response takes its one pass; the real one meets the gate.
  net.advance(6_000)
  net.filter = s => s.type === MESSAGE_RESPONSE ? null : s.datagram
  gw.device.sendInitiation(peer, net.now, false)
  net.flush()
  const second = Buffer.from(net.sentBy('client', MESSAGE_RESPONSE).at(-1)!.datagram)
  net.filter = null
  const forged = Buffer.from(second)
  forged[20] ^= 1
  writeMac1(forged, mac1Key(gw.publicKey))
  gw.device.receive(forged, '198.18.0.2', 40000, net.now)
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.response_invalid, 1, 'the forged response was tried and failed')
  gw.device.receive(second, '198.18.0.2', 40000, net.now)
  net.flush()
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.cookie_sent, 1, 'the next response to the same index needs a cookie')
  t.equal(gw.metrics.snapshot().wg_handshakes_completed.initiator, 1, 'and was not processed without one')
})
/** Under load, the client's retry after the cookie dance (carrying mac2), captured and not delivered. */
function cookieRetry (): ReturnType<typeof pair> & { withMac2: Buffer } {
  const p = pair({ gateway: { underLoadHandshakesPerSecond: 0 } })
  establish(p.net)
  p.net.filter = () => null
  p.net.advance(6_000)
  return { ...p, withMac2: p.net.sentBy('client', MESSAGE_INITIATION)[1].datagram }
}

t.test('under load: a cookie is bound to the source address', async t => {
  const { gw, net, withMac2 } = cookieRetry()
  gw.device.receive(Buffer.from(withMac2), '198.18.0.99', 40000, net.now)
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.cookie_sent, 2, 'other address: another cookie reply, not processed')
  t.equal(gw.metrics.snapshot().wg_messages_sent.response ?? 0, 0)
})

t.test('under load: a cookie names the sender, not the text of its address', async t => {
  const { gw, net, withMac2 } = cookieRetry()
  // The cookie went to 198.18.0.2; a dual-stack socket may show the same sender as ::ffff:198.18.0.2.
  gw.device.receive(Buffer.from(withMac2), '::ffff:198.18.0.2', 40000, net.now)
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.cookie_sent, 1, 'the mapped form is the same sender: no new cookie')
  t.equal(gw.metrics.snapshot().wg_messages_sent.response, 1, 'processed')
  gw.device.receive(Buffer.from(withMac2), '198.18.0.2', 40001, net.now)
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.cookie_sent, 2, 'another port is another sender (paper 5.4.7)')
})

t.test('under load: an IPv6 peer does the cookie dance and completes its handshake', async t => {
  const { net, gw } = pair({ gateway: { underLoadHandshakesPerSecond: 0 } })
  addClient(net, 'six', '2001:db8::2', 40000, '10.100.0.3')
  establish(net, 'six', '10.100.0.3')
  t.equal(net.sentBy('gateway', MESSAGE_COOKIE_REPLY).length, 1, 'a cookie reply to the IPv6 sender')
  net.advance(6_000)
  t.equal(gw.metrics.snapshot().wg_handshakes_completed.responder, 1, 'its mac2 retry is accepted')
  const six = [...gw.device.peers.values()].find(p => p.endpoint !== null)!
  t.equal(gw.device.peerStatus(six, net.now).endpoint, '[2001:db8::2]:40000', 'its endpoint, bracketed')
  const withMac2 = Buffer.from(net.sentBy('six', MESSAGE_INITIATION)[1].datagram)
  gw.device.receive(withMac2, '2001:db8::3', 40000, net.now)
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.cookie_sent, 2, 'a cookie is bound to the whole IPv6 address')
})

t.test('under load: IPv6 senders are rate limited per /64', async t => {
  const { net, gw } = pair({ gateway: { underLoadHandshakesPerSecond: 0 } })
  addClient(net, 'six1', '2001:db8:0:1::2', 40000, '10.100.0.3')
  addClient(net, 'six2', '2001:db8:0:1::3', 40000, '10.100.0.4')
  addClient(net, 'other', '2001:db8:0:2::2', 40000, '10.100.0.5')
  establish(net, 'six1', '10.100.0.3')
  establish(net, 'six2', '10.100.0.4')
  establish(net, 'other', '10.100.0.5')
  t.equal(net.sentBy('gateway', MESSAGE_COOKIE_REPLY).length, 3, 'each sender has its cookie')
  net.filter = () => null // the retries with mac2 are held back and fed in below, all at one instant
  net.advance(6_000)
  const retry = (name: string): Buffer => Buffer.from(net.sentBy(name, MESSAGE_INITIATION)[1].datagram)
  const rejected = (): Record<string, number> => gw.metrics.snapshot().wg_handshakes_rejected
  const v1 = retry('six1')
  for (let i = 0; i < 5; i++) gw.device.receive(Buffer.from(v1), '2001:db8:0:1::2', 40000, net.now)
  t.equal(rejected().ratelimit ?? 0, 0, 'a burst of 5 for the first address')
  gw.device.receive(retry('six2'), '2001:db8:0:1::3', 40000, net.now)
  t.equal(rejected().ratelimit, 1, 'another address of the same /64 shares its bucket')
  const responses = gw.metrics.snapshot().wg_messages_sent.response
  gw.device.receive(retry('other'), '2001:db8:0:2::2', 40000, net.now)
  t.equal(rejected().ratelimit, 1, 'another /64 is not limited')
  t.equal(gw.metrics.snapshot().wg_messages_sent.response, responses + 1, 'and is answered')
})

t.test('under load: per-IP rate limit of 20/s with a burst of 5', async t => {
  const { net, gw } = pair({ gateway: { underLoadHandshakesPerSecond: 0 } })
  establish(net)
  net.advance(6_000) // cookie dance done: handshake complete with a mac2-valid initiation
  const valid = net.sentBy('client', MESSAGE_INITIATION)[1].datagram
  const rejected = (): Record<string, number> => gw.metrics.snapshot().wg_handshakes_rejected
  t.ok(net.now - net.sentBy('client', MESSAGE_INITIATION)[1].at >= 250, 'bucket has refilled since that initiation')
  // 5 pass the limiter at one instant (and are then rejected as replays), the rest do not.
  for (let i = 0; i < 10; i++) gw.device.receive(Buffer.from(valid), '198.18.0.2', 40000, net.now)
  t.equal(rejected().replay, 5, 'burst of 5 per IP')
  t.equal(rejected().ratelimit, 5)
  // Steady state: one token per 50 ms.
  const start = net.now
  for (let ms = 10; ms <= 1000; ms += 10) gw.device.receive(Buffer.from(valid), '198.18.0.2', 40000, start + ms)
  t.equal(rejected().replay, 5 + 20, '20 per second')
  t.equal(rejected().ratelimit, 5 + 80)
})

t.test('under load: the limit is per source IP', async t => {
  const { net, gw } = pair({ gateway: { underLoadHandshakesPerSecond: 0 } })
  addClient(net, 'client2', '198.18.0.3', 40000, '10.100.0.3')
  establish(net)
  net.advance(6_000)
  const valid = net.sentBy('client', MESSAGE_INITIATION)[1].datagram
  for (let i = 0; i < 20; i++) gw.device.receive(Buffer.from(valid), '198.18.0.2', 40000, net.now)
  const limited = gw.metrics.snapshot().wg_handshakes_rejected.ratelimit
  t.ok(limited > 0, 'first IP exhausted')
  establish(net, 'client2', '10.100.0.3')
  net.advance(6_000)
  t.equal(gw.metrics.snapshot().wg_handshakes_completed.responder, 2, 'second IP still gets through')
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.ratelimit, limited)
})

t.test('not under load: mac2 is not required and no cookie is sent', async t => {
  const { net, gw } = pair({ gateway: { underLoadHandshakesPerSecond: 5 } })
  establish(net)
  t.equal(net.sentBy('gateway', MESSAGE_COOKIE_REPLY).length, 0)
  t.equal(gw.device.underLoad(net.now), false)
})

t.test('load: more handshake messages per second than the threshold switch cookies on for a second', async t => {
  const { net, gw } = pair({ gateway: { underLoadHandshakesPerSecond: 5 } })
  net.filter = () => null
  establish(net)
  const init = firstOf(net.log, MESSAGE_INITIATION)
  net.filter = null
  for (let i = 0; i < 5; i++) gw.device.receive(Buffer.from(init), '198.18.0.2', 40000, 100 + i)
  t.equal(gw.device.underLoad(105), false, '5 per second is fine')
  gw.device.receive(Buffer.from(init), '198.18.0.2', 40000, 105)
  t.equal(gw.device.underLoad(105), true, 'the 6th within a second is load')
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.cookie_sent, 1, 'and got a cookie reply')
  t.equal(gw.device.underLoad(1104), true)
  t.equal(gw.device.underLoad(1106), false, 'load ends a second after the last trigger')
})

t.test('established: replayed initiation (same TAI64N) rejected', async t => {
  const { net, gw } = pair()
  establish(net)
  const init = firstOf(net.log, MESSAGE_INITIATION)
  const keys = gw.device.indexTable.size
  net.advance(1_000)
  gw.device.receive(init, '198.18.0.2', 40000, net.now)
  net.flush()
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.replay, 1)
  t.equal(net.sentBy('gateway', MESSAGE_RESPONSE).length, 1, 'no second response')
  t.equal(gw.device.indexTable.size, keys, 'no new session')
})

t.test('idle: initiations less than 20 ms apart from one peer are dropped', async t => {
  const { net, gw, client } = pair()
  const local = { privateKey: client.privateKey, publicKey: client.publicKey }
  const key = mac1Key(gw.publicKey)
  const initiation = (wallClock: number): Buffer => {
    const { message } = createInitiation(local, gw.publicKey, null, 1000 + wallClock, WALL_CLOCK_OFFSET + wallClock)
    writeMac1(message, key)
    return message
  }
  gw.device.receive(initiation(1_000), '198.18.0.2', 40000, 1_000)
  gw.device.receive(initiation(2_000), '198.18.0.2', 40000, 1_010)
  gw.device.receive(initiation(3_000), '198.18.0.2', 40000, 1_019)
  gw.device.receive(initiation(4_000), '198.18.0.2', 40000, 1_020)
  const rejected = gw.metrics.snapshot().wg_handshakes_rejected
  t.equal(rejected.flood, 2, 'the two within 20 ms')
  t.equal(gw.metrics.snapshot().wg_messages_sent.response, 2, 'first and the one 20 ms later answered')
  t.equal(net.log.filter(s => s.to === '198.18.0.2:40000' && s.type === MESSAGE_RESPONSE).length, 2)
})

t.test('idle: an older timestamp than the last accepted is a replay even if new bytes', async t => {
  const { gw, client } = pair()
  const local = { privateKey: client.privateKey, publicKey: client.publicKey }
  const key = mac1Key(gw.publicKey)
  const make = (wall: number): Buffer => {
    const { message } = createInitiation(local, gw.publicKey, null, wall, WALL_CLOCK_OFFSET + wall)
    writeMac1(message, key)
    return message
  }
  gw.device.receive(make(10_000), '198.18.0.2', 40000, 1_000)
  gw.device.receive(make(5_000), '198.18.0.2', 40000, 2_000)
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.replay, 1)
})

t.test('RateLimiter: burst, refill, per key, garbage collection', async t => {
  const rl = new RateLimiter(20, 5)
  const results = Array.from({ length: 7 }, () => rl.allow('a', 0))
  t.same(results, [true, true, true, true, true, false, false], 'burst of 5 at one instant')
  t.equal(rl.allow('b', 0), true, 'independent per IP')
  t.equal(rl.allow('a', 49), false, 'refill takes 50 ms')
  t.equal(rl.allow('a', 50), true)
  t.equal(rl.allow('a', 10_000), true)
  let n = 0
  for (let i = 0; i < 10; i++) if (rl.allow('a', 10_000)) n++
  t.equal(n, 4, 'bucket never holds more than the burst')
  rl.collect(10_500)
  t.equal(rl.size, 1, 'idle b forgotten')
  rl.collect(12_000)
  t.equal(rl.size, 0)
})

void GATEWAY_ADDRESS; void GATEWAY_PORT
