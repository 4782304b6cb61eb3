/** The stack core (core.ts): LISTEN, segments for no connection, limits, TIME-WAIT reuse, bad input. */
import t from 'tap'
import { Scripted, Sim, Recorder, ADDR_A, ADDR_B, buildSegment, parseSegment, randomData, sha256 } from './harness.ts'
import { parseIPv4 } from '../../../../proto/wire/ipv4.ts'
import { Fixture, PEER_PORT, PEER_ISS, MSS } from './fixture.ts'
import type { TcpConnection } from '../../../../gateway/netstack/tcp/connection.ts'
import { TCP_SYN, TCP_ACK, TCP_RST, TCP_FIN } from '../../../../proto/wire/tcp.ts'

t.test('LISTEN syn: passive open, SYN-ACK echoes agreed options, accept on ESTABLISHED', async t => {
  const s = new Scripted()
  const rec = new Recorder()
  let accepted: TcpConnection | null = null
  s.core.listen(80, conn => {
    accepted = conn
    rec.conn = conn
    return rec
  })
  s.deliver({ srcPort: PEER_PORT, dstPort: 80, seq: PEER_ISS, flags: TCP_SYN, window: 64240, mss: 1460, sackPermitted: true, timestamp: true, tsVal: 7, windowScale: 7 })
  const [synAck] = s.take()
  t.equal(synAck.flags, TCP_SYN | TCP_ACK)
  t.equal(synAck.ack, PEER_ISS + 1)
  t.equal(synAck.mss, 1380)
  t.equal(synAck.windowScale, 7)
  t.equal(synAck.sackPermitted, true)
  t.equal(synAck.tsEcr, 7)
  t.equal(accepted, null, 'not accepted before the handshake completes')
  t.same(s.core.connectionsByState(), { 'SYN-RECEIVED': 1 })
  s.deliver({ srcPort: PEER_PORT, dstPort: 80, seq: PEER_ISS + 1, ack: (synAck.seq + 1) >>> 0, flags: TCP_ACK, window: 502, timestamp: true, tsVal: 8, tsEcr: synAck.tsVal }, Buffer.from('GET / HTTP/1.1\r\n\r\n'))
  t.not(accepted, null)
  t.equal(accepted!.stateName, 'ESTABLISHED')
  t.equal(accepted!.snd.wnd, 502 * 128, 'window scaled after the handshake')
  t.equal(rec.text(), 'GET / HTTP/1.1\r\n\r\n', 'data on the handshake ACK is delivered')
})

t.test('LISTEN ack: RST <SEQ=SEG.ACK>; CLOSED port: RST,ACK covering the segment', async t => {
  const s = new Scripted()
  s.core.listen(80, () => new Recorder())
  s.deliver({ srcPort: PEER_PORT, dstPort: 80, seq: 5, ack: 12345, flags: TCP_ACK })
  const [rst] = s.take()
  t.equal(rst.flags, TCP_RST)
  t.equal(rst.seq, 12345)
  s.deliver({ srcPort: PEER_PORT, dstPort: 81, seq: 100, flags: TCP_SYN, window: 1000 })
  const [refused] = s.take()
  t.equal(refused.flags, TCP_RST | TCP_ACK)
  t.equal(refused.seq, 0)
  t.equal(refused.ack, 101, 'SEG.SEQ + SEG.LEN (the SYN counts)')
  s.deliver({ srcPort: PEER_PORT, dstPort: 81, seq: 100, ack: 1, flags: TCP_RST | TCP_ACK })
  t.same(s.take(), [], 'never an RST for an RST')
  t.equal(s.counter('tcp_dropped', 'no_connection'), 2)
})

t.test('TIME-WAIT syn: a new SYN with a higher sequence number reopens the 4-tuple (RFC 6191)', async t => {
  const f = new Fixture({ timeWait: 60_000 })
  const recs: Recorder[] = []
  f.s.core.listen(80, conn => {
    const r = new Recorder()
    r.conn = conn
    recs.push(r)
    return r
  })
  // Passive close by the peer first: we reach TIME-WAIT as the side that closed second? No: we close first.
  f.s.deliver({ srcPort: PEER_PORT, dstPort: 80, seq: PEER_ISS, flags: TCP_SYN, window: 65535, mss: MSS })
  const [synAck] = f.s.take()
  f.s.deliver({ srcPort: PEER_PORT, dstPort: 80, seq: PEER_ISS + 1, ack: (synAck.seq + 1) >>> 0, flags: TCP_ACK, window: 65535 })
  const conn = f.s.core.find(ADDR_B, PEER_PORT, 80)!
  conn.shutdown(f.s.now)
  f.s.take()
  f.s.deliver({ srcPort: PEER_PORT, dstPort: 80, seq: PEER_ISS + 1, ack: conn.snd.max, flags: TCP_ACK | TCP_FIN, window: 65535 })
  t.equal(conn.stateName, 'TIME-WAIT')
  f.s.take()
  f.s.deliver({ srcPort: PEER_PORT, dstPort: 80, seq: PEER_ISS + 100_000, flags: TCP_SYN, window: 65535, mss: MSS })
  const [fresh] = f.s.take()
  t.equal(fresh.flags, TCP_SYN | TCP_ACK)
  t.equal(fresh.ack, PEER_ISS + 100_001)
  t.equal(f.s.core.find(ADDR_B, PEER_PORT, 80)!.stateName, 'SYN-RECEIVED')
  t.equal(f.s.counter('tcp_events', 'time_wait_reused'), 1)
})

t.test('with verifyChecksums, a bad checksum is counted and dropped; strangers always are', async t => {
  const s = new Scripted({ verifyChecksums: true })
  s.core.listen(80, () => new Recorder())
  const d = buildSegment(ADDR_B, ADDR_A, { srcPort: PEER_PORT, dstPort: 80, seq: 1, flags: TCP_SYN, window: 100 })
  d[d.length - 1] ^= 0xff
  s.core.input(parseIPv4(d), d, 0)
  t.equal(s.counter('tcp_dropped', 'bad_checksum'), 1)
  t.same(s.take(), [])
  const truncated = buildSegment(ADDR_B, ADDR_A, { srcPort: PEER_PORT, dstPort: 80, seq: 1, flags: TCP_SYN, window: 100 })
  truncated[32] = 0x40 // data offset 4
  s.core.input(parseIPv4(truncated), truncated, 0)
  t.equal(s.counter('tcp_dropped', 'tcp_data_offset'), 1)
  t.equal(s.core.size, 0)
})

t.test('by default checksums are not verified: WireGuard authenticated the segment already', async t => {
  const s = new Scripted()
  s.core.listen(80, () => new Recorder())
  const d = buildSegment(ADDR_B, ADDR_A, { srcPort: PEER_PORT, dstPort: 80, seq: 1, flags: TCP_SYN, window: 100 })
  d[d.length - 1] ^= 0xff // a header byte changed after the checksum was computed
  s.core.input(parseIPv4(d), d, 0)
  t.equal(s.counter('tcp_dropped', 'bad_checksum'), 0)
  const [synAck] = s.take()
  t.equal(synAck?.flags, TCP_SYN | TCP_ACK, 'the SYN was accepted')
})

t.test('limits: connections per peer, SYN backlog, ephemeral ports', async t => {
  const s = new Scripted({ maxConnectionsPerPeer: 3, maxHalfOpen: 2 })
  s.core.listen(80, () => new Recorder())
  for (let i = 0; i < 5; i++) s.deliver({ srcPort: PEER_PORT + i, dstPort: 80, seq: 1, flags: TCP_SYN, window: 100 })
  t.equal(s.core.size, 2, 'half-open connections bounded')
  t.equal(s.counter('tcp_dropped', 'syn_backlog_full'), 3)
  const conns = [s.core.connect(ADDR_B, 8080, new Recorder(), 0)]
  t.throws(() => s.core.connect(ADDR_B, 8080, new Recorder(), 0), { code: 'EMFILE' }, 'three per peer')
  t.equal(conns.length, 1)
  const other = new Scripted({ ephemeralPortMin: 50000, ephemeralPortMax: 50001 })
  other.core.connect(ADDR_B, 80, new Recorder(), 0)
  other.core.connect(ADDR_B, 80, new Recorder(), 0)
  t.throws(() => other.core.connect(ADDR_B, 80, new Recorder(), 0), { code: 'EADDRNOTAVAIL' })
  t.doesNotThrow(() => other.core.connect(ADDR_B, 81, new Recorder(), 0), 'ports are per peer and remote port')
})

t.test('garbage segments never throw out of input()', async t => {
  const s = new Scripted()
  s.core.listen(80, () => new Recorder())
  let state = 99
  const rnd = (n: number): number => {
    state = (Math.imul(state, 1103515245) + 12345) >>> 0
    return state % n
  }
  for (let i = 0; i < 3000; i++) {
    const payload = Buffer.alloc(rnd(40))
    for (let k = 0; k < payload.length; k++) payload[k] = rnd(256)
    const d = buildSegment(ADDR_B, ADDR_A, {
      srcPort: 1 + rnd(3), dstPort: rnd(2) === 0 ? 80 : 1 + rnd(65535), seq: rnd(0x7fffffff) * 2, ack: rnd(0x7fffffff) * 2,
      flags: rnd(256), window: rnd(65536),
    }, payload)
    if (rnd(4) === 0) d[20 + 12] = rnd(256) // scramble the data offset
    if (rnd(4) === 0) d[20 + 20 + rnd(20)] = rnd(256) // scramble options or payload (checksum catches most)
    t.doesNotThrow(() => s.core.input(parseIPv4(d), d, s.now), `segment ${i}`)
    s.now += 1
    if (i % 100 === 0) s.core.poll(s.now)
  }
  t.equal(s.counter('tcp_dropped', 'internal_error'), 0)
  s.advance(600_000)
  t.equal(s.core.size, 0, 'everything garbage opened has timed out')
})

t.test('ESTABLISHED turns: each of eight connections to one peer sends at most maxBurst segments per turn, byte-exact', async t => {
  // Every virtual instant is a turn (Sim with turns). Without pacing only the cap holds a
  // connection back: each could send its whole window at once; the ones it stopped continue at
  // the turn's end.
  const sim = new Sim({ delay: 1 }, { maxBurst: 4, pacing: false }, {}, true)
  const size = 300_000
  const servers: Recorder[] = []
  sim.b.listen(80, conn => {
    const r = new Recorder()
    r.keepChunks = false
    r.conn = conn
    servers.push(r)
    return r
  })
  const sources = Array.from({ length: 8 }, (_, i) => randomData(size, 100 + i))
  const clients = sources.map(() => {
    const r = new Recorder()
    r.now = () => sim.now
    r.conn = sim.a.connect(ADDR_B, 80, r, sim.now)
    return r
  })
  t.ok(sim.run(() => clients.every(c => c.connected), 1000), 'all connected')
  // Data segments of each connection (by our port) in the current turn, and the most seen.
  const perTurn = new Map<number, number>()
  let most = 0
  sim.tap = (from, datagram) => {
    const seg = parseSegment(datagram)
    if (from === 'a' && seg.payload.length > 0) perTurn.set(seg.srcPort, (perTurn.get(seg.srcPort) ?? 0) + 1)
    return true
  }
  sim.onTurnEnd = () => {
    for (const n of perTurn.values()) most = Math.max(most, n)
    perTurn.clear()
  }
  clients.forEach((c, i) => { c.stream(sources[i], sim.now) })
  let atFirstDone: number[] | null = null
  const finished = sim.run(() => {
    if (atFirstDone === null && servers.some(s => s.received === size)) atFirstDone = servers.map(s => s.received)
    return servers.length === 8 && servers.every(s => s.ended)
  }, 60_000)
  t.ok(finished, 'every transfer ended')
  t.same(servers.map(s => s.digest).sort(), sources.map(d => sha256(d)).sort(), 'each connection\'s bytes arrived exactly')
  t.equal(most, 4, 'no connection sent more than 4 data segments in a turn, and the cap was reached')
  t.ok(sim.a.largestBurst > 4 && sim.a.largestBurst <= 32, `the peer got up to 8 x 4 in a turn (${sim.a.largestBurst}): the cap is per connection`)
  t.ok(Object.values(sim.metricsA.snapshot().tcp_bursts ?? {}).reduce((a, b) => a + b, 0) > 0, 'turns counted in tcp_bursts')
  const slowest = Math.min(...atFirstDone!)
  t.ok(slowest >= size / 2, `when the first finished, every other had at least half (${atFirstDone!.map(n => Math.round(n / 1000)).join(', ')} KB)`)
})
