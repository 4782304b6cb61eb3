/**
 * Bounded, seeded fuzzing of the device's receive path: 20,000 datagrams mutated from real messages
 * captured in this test (initiation, response, cookie reply, data, keepalive). Each must be counted
 * exactly once as dropped or rejected, never throw, never create or change a session, never deliver
 * a packet and never move a peer's endpoint.
 */
import t from 'tap'
import { pair, establish, ipPacket, GATEWAY_TUNNEL_IP, type Node } from './harness.ts'
import { MESSAGE_COOKIE_REPLY } from '../../../proto/wire/wireguard.ts'
import { SeededRandom } from '../../../gateway/netstack/fault.ts'

const ITERATIONS = 20_000

function total (family: Record<string, number> | undefined): number {
  return Object.values(family ?? {}).reduce((a, b) => a + b, 0)
}

function accounted (node: Node): number {
  const m = node.metrics.snapshot()
  return total(m.wg_packets_dropped) + total(m.wg_handshakes_rejected) + (m.wg_messages_received?.cookie_reply ?? 0)
}

interface Snapshot { indices: number, current: unknown, previous: unknown, next: unknown, endpoint: string, completed: number, delivered: number }

function snapshot (node: Node): Snapshot {
  const peer = [...node.device.peers.values()][0]
  return {
    indices: node.device.indexTable.size,
    current: peer.current,
    previous: peer.previous,
    next: peer.next,
    endpoint: JSON.stringify(peer.endpoint),
    completed: total(node.metrics.snapshot().wg_handshakes_completed),
    delivered: node.delivered.length,
  }
}

function mutate (seed: Buffer, rng: SeededRandom, seeds: Buffer[]): Buffer {
  const int = (n: number): number => Math.floor(rng.next() * n)
  const randomBytes = (n: number): Buffer => Buffer.from(Array.from({ length: n }, () => int(256)))
  let out: Buffer
  switch (int(8)) {
    case 0: { // flip 1..8 bits
      out = Buffer.from(seed)
      for (let i = 1 + int(8); i > 0; i--) out[int(out.length)] ^= 1 << int(8)
      break
    }
    case 1: out = Buffer.from(seed.subarray(0, int(seed.length))); break // truncate
    case 2: out = Buffer.concat([seed, randomBytes(1 + int(64))]); break // extend
    case 3: { // overwrite a range
      out = Buffer.from(seed)
      const start = int(out.length)
      randomBytes(Math.min(out.length - start, 1 + int(32))).copy(out, start)
      break
    }
    case 4: { // header: type, reserved bytes, indices, counter
      out = Buffer.from(seed)
      out[int(Math.min(out.length, 16))] = int(256)
      break
    }
    case 5: out = randomBytes(int(200)); break // noise
    case 6: { // a valid-looking header on random contents of the right length
      out = Buffer.from(seed)
      randomBytes(out.length - 4).copy(out, 4)
      break
    }
    default: { // splice two messages
      const other = seeds[int(seeds.length)]
      const cut = int(Math.min(seed.length, other.length))
      out = Buffer.concat([seed.subarray(0, cut), other.subarray(cut)])
    }
  }
  if (out.equals(seed)) {
    if (out.length === 0) return Buffer.from([0])
    out[out.length - 1] ^= 0x80
  }
  return out
}

t.test('fuzzed datagrams never throw, never create a session, and are all counted', async t => {
  const { net, gw, client } = pair()
  establish(net)
  net.sendIp('gateway', ipPacket(GATEWAY_TUNNEL_IP, '10.100.0.2', 300))
  net.advance(11_000) // a passive keepalive from the client too
  // A cookie reply for the client's current index, as the gateway would send it under load.
  const clientIndex = client.device.peer(gw.publicKey)!.current!.localIndex
  const lastInit = net.log.find(s => s.type === 1)!.datagram
  const cookieReply = gw.device.cookieChecker.createReply(lastInit, clientIndex, Buffer.from('198.18.0.2/40000'), net.now)
  const seeds = [...net.log.map(s => s.datagram), cookieReply]
  t.ok(new Set(seeds.map(s => s[0])).size === 4, 'seeds cover all four message types')

  const rng = new SeededRandom(0xc0ffee)
  const targets = [gw, client]
  const before = targets.map(snapshot)
  const logBefore = net.log.length
  let mismatches = 0
  for (let i = 0; i < ITERATIONS; i++) {
    const target = targets[i & 1]
    const datagram = mutate(seeds[Math.floor(rng.next() * seeds.length)], rng, seeds)
    const counted = accounted(target)
    target.device.receive(datagram, '203.0.113.7', 9999, net.now + i)
    if (accounted(target) !== counted + 1) mismatches++
  }
  t.equal(mismatches, 0, 'every datagram counted exactly once')
  for (const [i, node] of targets.entries()) {
    t.same(snapshot(node), before[i], `${node.name}: sessions, endpoint, deliveries unchanged`)
    t.equal(node.metrics.snapshot().wg_packets_dropped?.internal_error ?? 0, 0, `${node.name}: no internal errors`)
  }
  const sent = net.discardInFlight()
  t.ok(sent.every(s => s.type === MESSAGE_COOKIE_REPLY), 'the only answers are cookie replies (under load)')
  t.equal(net.log.length - logBefore, sent.length)
  t.comment(`gateway counters: ${JSON.stringify(gw.metrics.snapshot())}`)

  // The session still works afterwards.
  net.sendIp('client', ipPacket('10.100.0.2', GATEWAY_TUNNEL_IP))
  t.equal(gw.delivered.length, before[0].delivered + 1)
})
