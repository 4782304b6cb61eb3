/**
 * Segment arrival (input.ts) against a scripted peer on an injected clock: handshakes, options,
 * loss detection and recovery, RFC 5961 defences, FIN and RST in every state. Test names are
 * "<state> <event>" (smoltcp's socket tests are the model).
 */
import t from 'tap'
import { Scripted, Recorder } from './harness.ts'
import { Fixture, reach, data, STATES, PEER_PORT, PEER_ISS, MSS } from './fixture.ts'
import { TCP_SYN, TCP_ACK, TCP_RST, TCP_FIN } from '../../../../proto/wire/tcp.ts'

t.test('SYN-SENT syn-ack: ESTABLISHED, ACK sent, connect event, options negotiated', async t => {
  const f = new Fixture({}, { mss: 1200, sack: true, windowScale: 9, timestamps: true })
  const [ack] = f.open()
  t.equal(f.conn.stateName, 'ESTABLISHED')
  t.same(f.rec.events, ['connect'])
  t.equal(ack.flags, TCP_ACK)
  t.equal(ack.ack, PEER_ISS + 1)
  t.equal(f.conn.mss, 1200, "the peer's smaller MSS wins")
  t.equal(f.conn.smss, 1188, 'timestamps take 12 bytes of every segment (RFC 6691)')
  t.equal(f.conn.snd.shift, 9)
  t.equal(f.conn.rcv.shift, 7)
  t.equal(f.conn.sack, true)
  t.equal(f.conn.timestamps, true)
  t.equal(ack.timestamp, true)
  t.equal(ack.tsEcr, 100, 'echoes the peer TSval')
  t.equal(ack.window, Math.ceil(4 * 1024 * 1024 / 128) > 0xffff ? 0xffff : Math.ceil(4 * 1024 * 1024 / 128), 'scaled 4 MiB window')
})

t.test('SYN-SENT syn-ack without options: no scaling, no SACK, no timestamps, 65535 cap', async t => {
  const f = new Fixture({}, {})
  const [ack] = f.open()
  t.equal(f.conn.windowScaling, false)
  t.equal(f.conn.rcv.shift, 0)
  t.equal(f.conn.sack, false)
  t.equal(f.conn.timestamps, false)
  t.equal(ack.timestamp, false, 'no timestamps once the peer declined')
  t.equal(ack.window, 65535)
  t.equal(f.conn.smss, MSS)
})

t.test('SYN-SENT rst: with an acceptable ACK the connection is refused', async t => {
  const f = new Fixture()
  const syn = f.connect()
  // An RST without ACK is ignored (RFC 9293 3.10.7.3, RFC 5961 3.2).
  f.s.deliver({ srcPort: PEER_PORT, dstPort: syn.srcPort, seq: 0, ack: 0, flags: TCP_RST })
  t.equal(f.conn.stateName, 'SYN-SENT')
  // An RST whose ACK does not cover our SYN is ignored too.
  f.s.deliver({ srcPort: PEER_PORT, dstPort: syn.srcPort, seq: 0, ack: syn.seq, flags: TCP_RST | TCP_ACK })
  t.equal(f.conn.stateName, 'SYN-SENT')
  f.s.deliver({ srcPort: PEER_PORT, dstPort: syn.srcPort, seq: 0, ack: (syn.seq + 1) >>> 0, flags: TCP_RST | TCP_ACK })
  t.equal(f.conn.stateName, 'CLOSED')
  t.equal(f.rec.error?.code, 'ECONNREFUSED')
  t.equal(f.rec.error?.syscall, 'connect')
  t.equal(f.s.core.size, 0, 'freed')
  t.same(f.s.take(), [], 'no RST answers an RST')
})

t.test('SYN-SENT bad ack: an ACK for something we never sent gets RST <SEQ=SEG.ACK>', async t => {
  const f = new Fixture()
  const syn = f.connect()
  f.s.deliver({ srcPort: PEER_PORT, dstPort: syn.srcPort, seq: 5, ack: (syn.seq + 77) >>> 0, flags: TCP_SYN | TCP_ACK, window: 1000 })
  const [rst] = f.s.take()
  t.equal(rst.flags, TCP_RST)
  t.equal(rst.seq, (syn.seq + 77) >>> 0)
  t.equal(f.conn.stateName, 'SYN-SENT')
})

t.test('SYN-SENT syn: simultaneous open via SYN-RECEIVED', async t => {
  const f = new Fixture()
  const syn = f.connect()
  f.s.deliver({ srcPort: PEER_PORT, dstPort: syn.srcPort, seq: PEER_ISS, flags: TCP_SYN, window: 5000, mss: MSS })
  t.equal(f.conn.stateName, 'SYN-RECEIVED')
  const [synAck] = f.s.take()
  t.equal(synAck.flags, TCP_SYN | TCP_ACK)
  t.equal(synAck.seq, syn.seq, 'the same ISS')
  t.equal(synAck.ack, PEER_ISS + 1)
  // The peer's SYN-ACK (its answer to our SYN) completes the open.
  f.s.deliver({ srcPort: PEER_PORT, dstPort: syn.srcPort, seq: PEER_ISS, ack: (syn.seq + 1) >>> 0, flags: TCP_SYN | TCP_ACK, window: 5000, mss: MSS })
  // A SYN in SYN-RECEIVED... the ACK part establishes; the duplicate SYN is challenged afterwards.
  f.s.take()
  f.s.deliver({ srcPort: PEER_PORT, dstPort: syn.srcPort, seq: PEER_ISS + 1, ack: (syn.seq + 1) >>> 0, flags: TCP_ACK, window: 5000 })
  t.equal(f.conn.stateName, 'ESTABLISHED')
  t.same(f.rec.events, ['connect'])
  t.equal(f.s.counter('tcp_events', 'simultaneous_open'), 1)
})

t.test('SYN-RECEIVED syn: a repeated SYN gets the SYN-ACK again', async t => {
  const s = new Scripted()
  s.core.listen(80, () => new Recorder())
  const syn = { srcPort: PEER_PORT, dstPort: 80, seq: PEER_ISS, flags: TCP_SYN, window: 1000, mss: MSS }
  s.deliver(syn)
  const [first] = s.take()
  s.deliver(syn)
  const [again] = s.take()
  t.equal(again.flags, TCP_SYN | TCP_ACK)
  t.equal(again.seq, first.seq)
})

t.test('ESTABLISHED out of order: held, SACKed, delivered in order once the hole fills', async t => {
  const f = new Fixture({}, { sack: true })
  f.open()
  const base = f.peerNxt
  f.s.deliver(f.seg({ seq: (base + 2000) >>> 0 }), data(MSS, 0x63))
  const [dup1] = f.s.take()
  t.equal(dup1.ack, base, 'immediate duplicate ACK')
  t.same(dup1.sackBlocks, [(base + 2000) >>> 0, (base + 3000) >>> 0])
  f.s.deliver(f.seg({ seq: (base + 4000) >>> 0 }), data(MSS, 0x65))
  const [dup2] = f.s.take()
  t.same(dup2.sackBlocks, [(base + 4000) >>> 0, (base + 5000) >>> 0, (base + 2000) >>> 0, (base + 3000) >>> 0], 'newest block first')
  t.equal(f.rec.received, 0)
  f.s.deliver(f.seg({ seq: base }), data(MSS, 0x61))
  f.s.deliver(f.seg({ seq: (base + 1000) >>> 0 }), data(MSS, 0x62))
  const acks = f.s.take()
  t.equal(acks[acks.length - 1].ack, (base + 3000) >>> 0, 'the hole filled: ACK at once up to the next hole')
  f.s.deliver(f.seg({ seq: (base + 3000) >>> 0 }), data(MSS, 0x64))
  t.equal(f.rec.text(), 'a'.repeat(MSS) + 'b'.repeat(MSS) + 'c'.repeat(MSS) + 'd'.repeat(MSS) + 'e'.repeat(MSS))
  t.equal(f.conn.rcv.reassembly.bytes, 0)
})

t.test('ESTABLISHED three duplicate acks: fast retransmit, NewReno partial ACK (no SACK)', async t => {
  const f = new Fixture({ initialWindowSegments: 10, congestionControl: 'newreno' })
  f.open()
  f.conn.write(data(10 * MSS))
  f.conn.flush(f.s.now)
  t.equal(f.dataOf(f.s.take()).length, 10, 'initial window of 10 segments')
  // Segments 1 and 3 are lost: the peer acknowledges segment 0, then repeats that ACK.
  f.send({ ack: f.ackAt(1000) })
  f.s.take()
  f.send({ ack: f.ackAt(1000) })
  f.send({ ack: f.ackAt(1000) })
  t.same(f.dataOf(f.s.take()), [], 'two duplicates are not enough')
  f.send({ ack: f.ackAt(1000) })
  t.same(f.dataOf(f.s.take()), [[1000, 1000]], 'third duplicate: the lost segment at once, no timer')
  t.equal(f.conn.recovery.active, true)
  t.equal(f.s.counter('tcp_retransmits', 'fast'), 1)
  // Partial ACK (RFC 6582): up to the second hole; it is retransmitted immediately.
  f.send({ ack: f.ackAt(3000) })
  t.same(f.dataOf(f.s.take()), [[3000, 1000]])
  t.equal(f.conn.recovery.active, true)
  f.send({ ack: f.ackAt(10_000) })
  t.equal(f.conn.recovery.active, false, 'full ACK ends recovery')
  t.equal(f.s.counter('tcp_retransmits', 'rto'), 0)
})

t.test('ESTABLISHED sack recovery: several holes in one window, only the holes resent', async t => {
  const f = new Fixture({ initialWindowSegments: 20 }, { sack: true })
  f.open()
  f.conn.write(data(20 * MSS))
  f.conn.flush(f.s.now)
  t.equal(f.dataOf(f.s.take()).length, 20)
  const lost = new Set([3, 7, 12])
  // The peer receives every other segment, acknowledging cumulatively and SACKing the rest
  // (newest block first, three blocks at most), as a receiver does.
  const received = new Set<number>()
  const retransmitted: Array<[number, number]> = []
  for (let i = 0; i < 20; i++) {
    if (lost.has(i)) continue
    received.add(i)
    let cum = 0
    while (received.has(cum)) cum++
    const blocks: number[] = []
    // Blocks above the cumulative point, the one holding segment i first.
    const ranges: Array<[number, number]> = []
    for (let k = cum + 1; k < 20; k++) {
      if (!received.has(k)) continue
      let end = k
      while (received.has(end + 1)) end++
      ranges.push([k, end + 1])
      k = end
    }
    ranges.sort((a, b) => (a[0] <= i && i < a[1] ? -1 : b[0] <= i && i < b[1] ? 1 : 0))
    for (const [s, e] of ranges.slice(0, 3)) blocks.push(f.ackAt(s * MSS), f.ackAt(e * MSS))
    f.send({ ack: f.ackAt(cum * MSS), sackBlocks: blocks.length > 0 ? blocks : null })
    retransmitted.push(...f.dataOf(f.s.take()))
  }
  t.same(retransmitted.sort((a, b) => a[0] - b[0]), [[3000, 1000], [7000, 1000], [12000, 1000]], 'exactly the three holes')
  t.equal(f.s.counter('tcp_retransmits', 'rto'), 0, 'no timeout needed')
  t.equal(f.conn.recovery.active, true)
  f.send({ ack: f.ackAt(20 * MSS) })
  t.equal(f.conn.recovery.active, false)
  t.ok(f.conn.recovery.scoreboard.empty)
})

// FIN in each state (RFC 9293 3.10.7.4 eighth check); `fin` is sent at the peer's next sequence
// number and acknowledges everything we sent except, in FIN-WAIT-1 and CLOSING, our FIN.

const FIN_TABLE: Array<[typeof STATES[number], string, string[]]> = [
  ['SYN-SENT', 'SYN-SENT', []],
  ['SYN-RECEIVED', 'CLOSE-WAIT', ['end']],
  ['ESTABLISHED', 'CLOSE-WAIT', ['connect', 'end']],
  ['FIN-WAIT-1', 'CLOSING', ['connect', 'end']],
  ['FIN-WAIT-2', 'TIME-WAIT', ['connect', 'end', 'close']],
  ['CLOSE-WAIT', 'CLOSE-WAIT', ['connect', 'end']],
  ['CLOSING', 'CLOSING', ['connect', 'end']],
  ['LAST-ACK', 'LAST-ACK', ['connect', 'end']],
  ['TIME-WAIT', 'TIME-WAIT', ['connect', 'end', 'close']],
]

for (const [state, next, events] of FIN_TABLE) {
  t.test(`${state} fin`, async t => {
    const f = reach(state)
    const retransmit = state === 'CLOSE-WAIT' || state === 'CLOSING' || state === 'LAST-ACK' || state === 'TIME-WAIT'
    const ours = f.conn.snd.max
    const finAck = state === 'FIN-WAIT-1' || state === 'CLOSING' || state === 'LAST-ACK' ? (ours - 1) >>> 0 : ours
    if (state === 'SYN-SENT') {
      f.s.deliver({ srcPort: PEER_PORT, dstPort: f.localPort, seq: PEER_ISS, ack: ours, flags: TCP_FIN | TCP_ACK, window: 1000 })
    } else {
      f.send({ seq: retransmit ? (f.peerNxt - 1) >>> 0 : f.peerNxt, ack: finAck, flags: TCP_FIN | TCP_ACK })
    }
    t.equal(f.conn.stateName, next)
    t.same(f.rec.events, events)
    const out = f.s.take()
    if (state !== 'SYN-SENT') {
      t.ok(out.some(x => (x.flags & TCP_ACK) !== 0 && x.ack === (retransmit ? f.peerNxt : f.peerNxt + 1) >>> 0), 'the FIN is acknowledged')
    }
    if (state === 'TIME-WAIT') t.equal(f.conn.timers.stateAt, f.s.now + 1000, 'TIME-WAIT restarted by a retransmitted FIN')
  })
}

// RST in each state with an exact sequence number (RFC 5961 3.2).

const RST_TABLE: Array<[typeof STATES[number], string | null]> = [
  ['SYN-SENT', 'ECONNREFUSED'],
  ['SYN-RECEIVED', null],
  ['ESTABLISHED', 'ECONNRESET'],
  ['FIN-WAIT-1', 'ECONNRESET'],
  ['FIN-WAIT-2', 'ECONNRESET'],
  ['CLOSE-WAIT', 'ECONNRESET'],
  ['CLOSING', null],
  ['LAST-ACK', null],
  ['TIME-WAIT', null],
]

for (const [state, code] of RST_TABLE) {
  t.test(`${state} rst`, async t => {
    const f = reach(state)
    if (state === 'SYN-SENT') {
      f.s.deliver({ srcPort: PEER_PORT, dstPort: f.localPort, seq: 0, ack: f.conn.snd.max, flags: TCP_RST | TCP_ACK })
    } else {
      f.send({ flags: TCP_RST | TCP_ACK })
    }
    t.equal(f.conn.stateName, 'CLOSED')
    t.equal(f.s.core.size, 0, 'freed')
    t.equal(f.rec.error?.code ?? null, state === 'TIME-WAIT' ? null : code)
    t.same(f.s.take().filter(x => (x.flags & TCP_RST) !== 0), [], 'no RST in reply')
  })
}

t.test('ESTABLISHED rst in window but not exact: challenge ACK (RFC 5961 3.2)', async t => {
  const f = reach('ESTABLISHED')
  f.send({ seq: (f.peerNxt + 100) >>> 0, flags: TCP_RST })
  t.equal(f.conn.stateName, 'ESTABLISHED')
  const [challenge] = f.s.take()
  t.equal(challenge.flags, TCP_ACK)
  t.equal(challenge.ack, f.peerNxt)
  t.equal(challenge.seq, f.conn.snd.nxt)
  // Out of window: silently dropped.
  f.send({ seq: (f.peerNxt + 1_000_000) >>> 0, flags: TCP_RST })
  t.same(f.s.take(), [])
  t.equal(f.s.counter('tcp_events', 'challenge_ack'), 1)
})

t.test('ESTABLISHED syn: challenge ACK, connection kept (RFC 5961 4.2)', async t => {
  const f = reach('ESTABLISHED')
  f.send({ seq: (f.peerNxt + 5) >>> 0, flags: TCP_SYN, ack: 0 })
  const [challenge] = f.s.take()
  t.equal(challenge.flags, TCP_ACK)
  t.equal(challenge.ack, f.peerNxt)
  t.equal(f.conn.stateName, 'ESTABLISHED')
  t.same(f.rec.events, ['connect'])
})

t.test('ESTABLISHED challenge ack flood: rate limited per connection (RFC 5961 7)', async t => {
  const f = reach('ESTABLISHED')
  for (let i = 0; i < 50; i++) f.send({ seq: (f.peerNxt + 10 + i) >>> 0, flags: TCP_RST })
  t.equal(f.s.take().length, 10, 'ten challenge ACKs per second')
  f.s.advance(1000)
  f.send({ seq: (f.peerNxt + 10) >>> 0, flags: TCP_RST })
  t.equal(f.s.take().length, 1)
})

t.test('ESTABLISHED ack of unsent data: ACK back, segment dropped (RFC 5961 5.2)', async t => {
  const f = reach('ESTABLISHED')
  f.send({ ack: (f.conn.snd.max + 5000) >>> 0 }, data(10))
  t.equal(f.rec.received, 0)
  const [ack] = f.s.take()
  t.equal(ack.flags, TCP_ACK)
  t.equal(f.s.counter('tcp_dropped', 'ack_unsent'), 1)
})

t.test('ESTABLISHED duplicate of received data: ACKed at once, counted as a duplicate, not as out of window', async t => {
  const f = reach('ESTABLISHED')
  const seq = f.conn.rcv.nxt
  f.send({}, data(100))
  t.equal(f.rec.received, 100)
  f.s.take()
  // The peer's retransmission timer fired before our ACK reached it: the same segment again.
  f.send({ seq }, data(100))
  t.equal(f.rec.received, 100, 'not delivered twice')
  const [ack] = f.s.take()
  t.equal(ack.flags, TCP_ACK)
  t.equal(ack.ack, f.conn.rcv.nxt, 'the ACK says what we have')
  t.equal(f.s.counter('tcp_events', 'duplicate_segment'), 1)
  t.equal(f.s.counter('tcp_dropped', 'out_of_window'), 0)
  // A segment beyond the window we advertised is still out of window.
  f.send({ seq: (f.conn.rcv.advRight + 10) >>> 0 }, data(10))
  t.equal(f.rec.received, 100)
  t.equal(f.s.counter('tcp_dropped', 'out_of_window'), 1)
  t.equal(f.s.counter('tcp_events', 'duplicate_segment'), 1)
})

t.test('FIN-WAIT-1 fin then ack: simultaneous close through CLOSING to TIME-WAIT', async t => {
  const f = reach('CLOSING')
  f.send({ ack: f.conn.snd.max })
  t.equal(f.conn.stateName, 'TIME-WAIT')
  t.same(f.rec.events, ['connect', 'end', 'close'])
})

t.test('ESTABLISHED timestamps: RTT from TSecr, PAWS drops an old duplicate', async t => {
  const f = new Fixture({}, { timestamps: true })
  f.open()
  f.conn.write(data(100))
  f.conn.flush(f.s.now)
  const [seg] = f.s.take()
  f.s.now += 80
  f.send({ ack: f.ackAt(100), tsEcr: seg.tsVal })
  // Handshake sample 10 ms, then 80 ms from TSecr: SRTT = 7/8 * 10 + 1/8 * 80, RTTVAR = 3/4 * 5 + 1/4 * 70.
  t.equal(f.conn.rtt.srtt, 18.75, 'RTT sample from the echoed timestamp')
  t.equal(f.conn.rtt.rttvar, 21.25)
  f.send({ tsVal: 101 }, data(10))
  t.equal(f.rec.received, 10)
  // A segment carrying an older timestamp is an old duplicate (RFC 7323 5.3).
  f.send({ tsVal: 50 }, data(10))
  t.equal(f.rec.received, 10)
  t.equal(f.s.counter('tcp_dropped', 'paws'), 1)
})

// Batched input (TcpCoreOptions.onBatch; TcpStack reports one poll phase as a batch): in-order data
// and the every-second-segment ACK wait for the batch end, like a kernel receiving with GRO.

t.test('ESTABLISHED batched input: one ACK and one chunk per batch of in-order segments', async t => {
  const f = new Fixture({}, { windowScale: 7 }, true)
  f.open()
  for (let i = 0; i < 8; i++) f.send({}, data(MSS))
  t.same(f.s.take(), [], 'no ACK inside the batch')
  t.equal(f.rec.received, 0, 'no data delivered inside the batch')
  t.equal(f.s.batchRequests, 1, 'the core asked once for the batch end')
  f.s.endBatch()
  const acks = f.s.take()
  t.equal(acks.length, 1, 'one ACK for the batch')
  t.equal(acks[0].ack, f.peerNxt, 'acknowledging all eight segments')
  t.equal(f.rec.received, 8 * MSS)
  t.equal(f.rec.chunks.length, 1, 'delivered as one chunk')
  f.s.endBatch()
  t.same(f.s.take(), [], 'an empty batch end sends nothing')
})

t.test('ESTABLISHED batched input: a single segment keeps the delayed ACK', async t => {
  const f = new Fixture({}, {}, true)
  f.open()
  f.send({}, data(MSS))
  f.s.endBatch()
  t.same(f.s.take(), [], 'one segment: no ACK at the batch end')
  t.equal(f.rec.received, MSS, 'its data is delivered')
  f.s.advance(40)
  t.equal(f.s.take()[0]?.ack, f.peerNxt, 'the delayed ACK after 40 ms')
})

t.test('ESTABLISHED batched input: out-of-order segments with SACK are acknowledged once, at the batch end', async t => {
  const f = new Fixture({}, { sack: true, windowScale: 7 }, true)
  f.open()
  f.send({}, data(MSS))
  f.send({}, data(MSS))
  const hole1 = f.peerNxt
  f.send({ seq: (hole1 + MSS) >>> 0 }, data(MSS)) // one segment missing
  f.send({ seq: (hole1 + 2 * MSS) >>> 0 }, data(MSS))
  f.send({ seq: (hole1 + 4 * MSS) >>> 0 }, data(MSS)) // a second hole
  t.same(f.s.take(), [], 'no ACK inside the batch')
  f.s.endBatch()
  const out = f.s.take()
  t.equal(out.length, 1, 'one ACK for the batch')
  t.equal(out[0].ack, hole1, 'acknowledging up to the first hole')
  t.same(out[0].sackBlocks, [(hole1 + 4 * MSS) >>> 0, (hole1 + 5 * MSS) >>> 0, (hole1 + MSS) >>> 0, (hole1 + 3 * MSS) >>> 0],
    'the block of the latest segment first (RFC 2018 4), then the other')
  t.equal(f.rec.received, 2 * MSS)
  // The first hole fills in the next batch: one ACK at its end, up to the second hole.
  f.send({ seq: hole1 }, data(MSS))
  t.same(f.s.take(), [], 'the gap fill waits for the batch end too')
  f.s.endBatch()
  const fill = f.s.take()
  t.equal(fill.length, 1)
  t.equal(fill[0].ack, (hole1 + 3 * MSS) >>> 0, 'up to the second hole')
  t.same(fill[0].sackBlocks, [(hole1 + 4 * MSS) >>> 0, (hole1 + 5 * MSS) >>> 0], 'the block above it')
  t.equal(f.rec.received, 5 * MSS)
})

t.test('ESTABLISHED batched input: out-of-order segments past 64 KiB are acknowledged without waiting', async t => {
  const f = new Fixture({}, { sack: true, windowScale: 7 }, true)
  f.open()
  const hole = f.peerNxt
  for (let i = 1; i <= Math.ceil(65536 / MSS) + 1; i++) f.send({ seq: (hole + i * MSS) >>> 0 }, data(MSS))
  const acks = f.s.take()
  t.equal(acks.length, 1, 'one ACK left inside the batch')
  t.equal(acks[0].ack, hole)
  t.ok(acks[0].sackBlocks !== null && (acks[0].sackBlocks[1] - hole) >>> 0 >= 65536, 'once 64 KiB were owed')
})

t.test('ESTABLISHED batched input: out-of-order segments without SACK are acknowledged at once', async t => {
  const f = new Fixture({}, { sack: false }, true)
  f.open()
  f.send({}, data(MSS))
  f.send({}, data(MSS))
  f.send({ seq: (f.peerNxt + MSS) >>> 0 }, data(MSS))
  f.send({ seq: (f.peerNxt + 2 * MSS) >>> 0 }, data(MSS))
  const out = f.s.take()
  t.equal(out.length, 2, 'a duplicate ACK for each, for the sender to count (RFC 5681 3.2)')
  t.ok(out.every(a => a.ack === f.peerNxt && a.sackBlocks === null))
  f.s.endBatch()
  t.same(f.s.take(), [], 'those ACKs also settled what the batch owed')
  t.equal(f.rec.received, 2 * MSS)
})

t.test('ESTABLISHED batched input: data we send carries the ACK the batch owed', async t => {
  const f = new Fixture({}, {}, true)
  f.open()
  f.send({}, data(MSS))
  f.send({}, data(MSS))
  f.conn.write(Buffer.from('reply'))
  f.conn.flush(f.s.now)
  const [reply] = f.s.take()
  t.equal(reply.ack, f.peerNxt, 'the reply acknowledges both segments')
  f.s.endBatch()
  t.same(f.s.take(), [], 'no separate ACK at the batch end')
})

t.test('ESTABLISHED batched input: a FIN in the batch delivers the data first, then the end', async t => {
  const f = new Fixture({}, {}, true)
  f.open()
  f.send({}, data(MSS))
  f.send({}, data(MSS))
  f.send({ flags: TCP_ACK | TCP_FIN }, data(MSS))
  t.equal(f.rec.received, 3 * MSS, 'the FIN flushed the batch: all data delivered')
  t.equal(f.rec.ended, true, 'then the end')
  t.equal(f.s.take().at(-1)?.ack, (f.peerNxt + 1) >>> 0, 'the FIN is acknowledged at once')
  f.s.endBatch()
  t.same(f.s.take(), [])
})

t.test('ESTABLISHED batched input: a batch past 64 KiB is acknowledged without waiting', async t => {
  const f = new Fixture({}, { windowScale: 7 }, true)
  f.open()
  for (let i = 0; i < 70; i++) f.send({}, data(MSS))
  const acks = f.s.take()
  t.ok(acks.length >= 1, 'an ACK left inside the batch')
  t.ok(acks.every(a => (a.ack - PEER_ISS - 1) >>> 0 >= 65 * MSS), 'once 64 KiB were owed')
})

t.test('ESTABLISHED batching option off: the ACK goes with every second segment', async t => {
  const f = new Fixture({ batching: false }, {}, true)
  f.open()
  f.send({}, data(MSS))
  f.send({}, data(MSS))
  t.equal(f.s.take()[0]?.ack, f.peerNxt, 'immediate ACK on the second full segment')
  t.equal(f.rec.received, 2 * MSS, 'data delivered at once')
  t.equal(f.s.batchRequests, 0)
})

t.test('ESTABLISHED sack recovery: a lost retransmission is sent again once SACKs pass it, no RTO', async t => {
  const f = new Fixture({ initialWindowSegments: 10 }, { sack: true })
  f.open()
  f.conn.write(data(40 * MSS))
  f.conn.flush(f.s.now)
  t.equal(f.dataOf(f.s.take()).length, 10)
  // Segment 0 is lost; the peer SACKs 1, 2, 3...
  const sackUpTo = (n: number): void => { f.send({ ack: f.ackAt(0), sackBlocks: [f.ackAt(MSS), f.ackAt(n * MSS)] }) }
  const resent: number[] = []
  const collect = (): void => { for (const [off] of f.dataOf(f.s.take())) if (off === 0) resent.push(f.s.now) }
  for (let n = 2; n <= 4; n++) {
    sackUpTo(n)
    collect()
  }
  t.equal(f.conn.recovery.active, true, 'three SACKed segments: recovery')
  t.equal(resent.length, 1, 'segment 0 retransmitted once')
  const sentAtRetransmit = f.conn.recovery.rxtMark
  t.equal(sentAtRetransmit, f.conn.snd.max, 'the retransmission remembers SND.MAX')
  // That retransmission is lost too. SACKs keep coming for everything else, including segments
  // sent after the retransmission (recovery keeps sending new data as the pipe drains).
  let n = 4
  while (resent.length === 1 && n < 40) {
    n++
    sackUpTo(n)
    collect()
  }
  t.equal(resent.length, 2, 'segment 0 went out again')
  t.equal(f.s.counter('tcp_events', 'lost_retransmit'), 1)
  t.ok((f.ackAt(n * MSS) - sentAtRetransmit) >>> 0 > 2 * MSS, 'once more than 2 SMSS beyond the first retransmission were SACKed')
  t.equal(f.s.counter('tcp_retransmits', 'rto'), 0, 'without waiting for the retransmission timer')
  f.send({ ack: f.ackAt(n * MSS) })
  t.equal(f.conn.snd.una, f.ackAt(n * MSS))
})

t.test('ESTABLISHED sack recovery: a lost retransmission of a later hole is found after a partial ACK, no RTO', async t => {
  const f = new Fixture({ initialWindowSegments: 10 }, { sack: true, windowScale: 7 })
  f.open()
  f.conn.write(data(60 * MSS))
  f.conn.flush(f.s.now)
  t.equal(f.dataOf(f.s.take()).length, 10)
  const sent5: number[] = []
  const collect = (): void => { for (const [off] of f.dataOf(f.s.take())) if (off === 5 * MSS) sent5.push(f.s.now) }
  // Segments 0 and 5 are lost. The peer SACKs 1-4, then 6 and up as they arrive.
  for (let n = 2; n <= 5; n++) f.send({ ack: f.ackAt(0), sackBlocks: [f.ackAt(MSS), f.ackAt(n * MSS)] })
  t.equal(f.conn.recovery.active, true, 'recovery for segment 0')
  f.s.take()
  let top = 7
  const sackAbove = (una: number): void => {
    f.send({ ack: f.ackAt(una), sackBlocks: [f.ackAt(6 * MSS), f.ackAt(top * MSS), ...(una === 0 ? [f.ackAt(MSS), f.ackAt(5 * MSS)] : [])] })
    collect()
  }
  while (sent5.length === 0 && top < 12) { sackAbove(0); top++ }
  t.equal(sent5.length, 1, 'segment 5 retransmitted once SACKs above it marked it lost')
  // Segment 0's retransmission arrives: a partial ACK up to the hole at 5, whose retransmission was lost too.
  sackAbove(5 * MSS)
  t.equal(f.conn.snd.una, f.ackAt(5 * MSS))
  t.equal(f.conn.recovery.active, true)
  t.ok(f.conn.recovery.rxtMark !== -1, 'the mark of the retransmission of segment 5 is back')
  while (sent5.length === 1 && top < 40) { top++; sackAbove(5 * MSS) }
  t.equal(sent5.length, 2, 'segment 5 went out again')
  t.equal(f.s.counter('tcp_events', 'lost_retransmit'), 1)
  t.equal(f.s.counter('tcp_retransmits', 'rto'), 0, 'without waiting for the retransmission timer')
})
