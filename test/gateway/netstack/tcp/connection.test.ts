/**
 * The connection state machine against a hand-driven peer on an injected clock. Test names are
 * "<state> <event>" (smoltcp's socket tests are the model).
 */
import t from 'tap'
import { Scripted, Recorder, ADDR_A, ADDR_B, type Segment } from './harness.ts'
import type { TcpConnection } from '../../../../gateway/netstack/tcp/connection.ts'
import type { TcpOptions } from '../../../../gateway/netstack/tcp/options.ts'
import { TCP_SYN, TCP_ACK, TCP_RST, TCP_FIN, TCP_PSH, type TcpRepr } from '../../../../proto/wire/tcp.ts'

const PEER_PORT = 40000
const PEER_ISS = 1_000_000
const MSS = 1000

interface PeerOptions { mss?: number, sack?: boolean, windowScale?: number, timestamps?: boolean, window?: number }

/** Our side (the core) and a scripted peer at ADDR_B:PEER_PORT. */
class Fixture {
  readonly s: Scripted
  readonly rec = new Recorder()
  conn!: TcpConnection
  /** The peer's next sequence number. */
  peerNxt = PEER_ISS + 1
  peerWindow: number
  peerTs = 100
  readonly peer: PeerOptions

  constructor (options: Partial<TcpOptions> = {}, peer: PeerOptions = {}) {
    this.s = new Scripted(options)
    this.peer = peer
    this.peerWindow = peer.window ?? 65535
    this.rec.now = () => this.s.now
  }

  get localPort (): number {
    return this.conn.localPort
  }

  /** Fields of a segment from the peer with sensible defaults (ACK of everything we sent). */
  seg (fields: Partial<TcpRepr> = {}): Partial<TcpRepr> {
    const ts = this.peer.timestamps === true ? { timestamp: true, tsVal: this.peerTs++, tsEcr: this.conn.tsNow(this.s.now) } : {}
    return {
      srcPort: this.localPortFor(),
      dstPort: this.localPort,
      seq: this.peerNxt,
      ack: this.conn.sndMax,
      flags: TCP_ACK,
      window: this.peerWindow,
      ...ts,
      ...fields,
    }
  }

  private localPortFor (): number {
    return this.conn.remotePort
  }

  send (fields: Partial<TcpRepr> = {}, payload?: Buffer): void {
    const f = this.seg(fields)
    this.s.deliver(f, payload)
    if (payload !== undefined && f.seq === this.peerNxt) this.peerNxt = (this.peerNxt + payload.length) >>> 0
  }

  /** Active open; returns the SYN we sent. */
  connect (): Segment {
    this.conn = this.s.core.connect(ADDR_B, PEER_PORT, this.rec, this.s.now)
    this.rec.conn = this.conn
    const [syn] = this.s.take()
    return syn
  }

  /** Active open completed by a SYN-ACK from the peer; returns our ACK. */
  open (): Segment[] {
    const syn = this.connect()
    this.s.now += 10
    const p = this.peer
    this.s.deliver({
      srcPort: PEER_PORT,
      dstPort: syn.srcPort,
      seq: PEER_ISS,
      ack: (syn.seq + 1) >>> 0,
      flags: TCP_SYN | TCP_ACK,
      window: Math.min(this.peerWindow, 65535),
      mss: p.mss ?? MSS,
      windowScale: p.windowScale ?? -1,
      sackPermitted: p.sack ?? false,
      timestamp: p.timestamps ?? false,
      tsVal: this.peerTs++,
      tsEcr: syn.tsVal,
    })
    return this.s.take()
  }

  /** Data we sent, as [offset from our ISS + 1, length] pairs. */
  dataOf (segs: Segment[]): Array<[number, number]> {
    return segs.filter(x => x.payloadLen > 0).map(x => [(x.seq - this.conn.iss - 1) >>> 0, x.payloadLen])
  }

  /** Ack value for `offset` bytes of our data. */
  ackAt (offset: number): number {
    return (this.conn.iss + 1 + offset) >>> 0
  }
}

const data = (n: number, fill = 0x61): Buffer => Buffer.alloc(n, fill)

t.test('CLOSED connect: SYN carries MSS 1380, window scale, SACK-permitted, timestamps', async t => {
  const f = new Fixture()
  const syn = f.connect()
  t.equal(syn.flags, TCP_SYN)
  t.equal(syn.mss, 1380, 'MSS from the 1420 tunnel MTU')
  t.equal(syn.windowScale, 7, '4 MiB receive buffer needs shift 7')
  t.equal(syn.sackPermitted, true)
  t.equal(syn.timestamp, true)
  t.equal(syn.tsEcr, 0)
  t.equal(syn.window, 65535, 'a SYN window is never scaled')
  t.equal(syn.dstPort, PEER_PORT)
  t.ok(syn.srcPort >= 49152, 'ephemeral port')
  t.equal(f.conn.stateName, 'SYN-SENT')
})

t.test('SYN-SENT syn-ack: ESTABLISHED, ACK sent, connect event, options negotiated', async t => {
  const f = new Fixture({}, { mss: 1200, sack: true, windowScale: 9, timestamps: true })
  const [ack] = f.open()
  t.equal(f.conn.stateName, 'ESTABLISHED')
  t.same(f.rec.events, ['connect'])
  t.equal(ack.flags, TCP_ACK)
  t.equal(ack.ack, PEER_ISS + 1)
  t.equal(f.conn.mss, 1200, "the peer's smaller MSS wins")
  t.equal(f.conn.smss, 1188, 'timestamps take 12 bytes of every segment (RFC 6691)')
  t.equal(f.conn.sndShift, 9)
  t.equal(f.conn.rcvShift, 7)
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
  t.equal(f.conn.rcvShift, 0)
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

t.test('SYN-SENT timeout: SYN retransmitted with exponential backoff, then ETIMEDOUT', async t => {
  const f = new Fixture({ synRetries: 3 })
  f.connect()
  const times: number[] = []
  for (let i = 0; i < 40; i++) {
    f.s.advance(500)
    for (const x of f.s.take()) if (x.flags === TCP_SYN) times.push(f.s.now)
  }
  t.same(times, [1000, 3000, 7000], 'RTO 1 s, then 2 s, then 4 s (RFC 6298 2.1 and 5.5)')
  t.equal(f.rec.error?.code, 'ETIMEDOUT')
  t.equal(f.conn.stateName, 'CLOSED')
  t.equal(f.s.counter('tcp_retransmits', 'syn'), 3)
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
  t.equal(accepted!.sndWnd, 502 * 128, 'window scaled after the handshake')
  t.equal(rec.text(), 'GET / HTTP/1.1\r\n\r\n', 'data on the handshake ACK is delivered')
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

t.test('SYN-RECEIVED timeout: SYN-ACK retried, then the half-open connection is freed', async t => {
  const s = new Scripted({ synAckRetries: 2 })
  s.core.listen(80, () => new Recorder())
  s.deliver({ srcPort: PEER_PORT, dstPort: 80, seq: PEER_ISS, flags: TCP_SYN, window: 1000, mss: MSS })
  s.advance(10_000)
  const synAcks = s.take().filter(x => x.flags === (TCP_SYN | TCP_ACK))
  t.equal(synAcks.length, 3)
  t.equal(s.core.size, 0)
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

t.test('ESTABLISHED data both ways: delivery, delayed ACK, ACK every second full segment', async t => {
  const f = new Fixture()
  f.open()
  t.equal(f.conn.write(Buffer.from('hello')), 5)
  f.conn.flush(f.s.now)
  const [out] = f.s.take()
  t.equal(out.payload.toString(), 'hello')
  t.equal(out.flags, TCP_ACK | TCP_PSH)
  f.send({}, data(MSS))
  t.same(f.s.take(), [], 'one segment: the ACK is delayed')
  f.s.advance(39)
  t.same(f.s.take(), [])
  f.s.advance(1)
  const [delayed] = f.s.take()
  t.equal(delayed.ack, f.peerNxt, 'delayed ACK after 40 ms')
  f.send({}, data(MSS))
  t.same(f.s.take(), [])
  f.send({}, data(MSS))
  const [second] = f.s.take()
  t.equal(second.ack, f.peerNxt, 'immediate ACK on the second full segment')
  t.equal(f.rec.received, 3 * MSS)
  t.equal(f.conn.bytesReceived, 3 * MSS)
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
  t.equal(f.conn.reassembly.bytes, 0)
})

t.test('ESTABLISHED rto: retransmission with exponential backoff (RFC 6298 5.5)', async t => {
  const f = new Fixture()
  f.open()
  const t0 = f.s.now
  f.conn.write(data(500))
  f.conn.flush(f.s.now)
  f.s.take()
  const times: number[] = []
  for (let i = 0; i < 60; i++) {
    f.s.advance(50)
    for (const x of f.s.take()) if (x.payloadLen > 0) times.push(f.s.now - t0)
  }
  // Handshake RTT of 10 ms gives RTO = max(200, 10 + 4 * 5) = 200 ms.
  t.same(times, [200, 600, 1400, 3000], 'RTO 200, then 400, 800 and 1600 ms')
  t.equal(f.s.counter('tcp_retransmits', 'rto'), 4)
  f.send({ ack: f.ackAt(500) })
  t.equal(f.conn.sndUna, f.ackAt(500))
  t.equal(f.conn.rtoAt, Infinity, 'timer stopped when everything is acknowledged')
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
  t.equal(f.conn.inRecovery, true)
  t.equal(f.s.counter('tcp_retransmits', 'fast'), 1)
  // Partial ACK (RFC 6582): up to the second hole; it is retransmitted immediately.
  f.send({ ack: f.ackAt(3000) })
  t.same(f.dataOf(f.s.take()), [[3000, 1000]])
  t.equal(f.conn.inRecovery, true)
  f.send({ ack: f.ackAt(10_000) })
  t.equal(f.conn.inRecovery, false, 'full ACK ends recovery')
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
  t.equal(f.conn.inRecovery, true)
  f.send({ ack: f.ackAt(20 * MSS) })
  t.equal(f.conn.inRecovery, false)
  t.ok(f.conn.scoreboard.empty)
})

t.test('ESTABLISHED zero window: persist probes back off, data resumes when the window opens', async t => {
  const f = new Fixture()
  f.open()
  f.conn.write(data(2000))
  f.conn.flush(f.s.now)
  f.s.take()
  f.peerWindow = 0
  f.send({ ack: f.ackAt(2000) })
  f.conn.write(data(3000, 0x62))
  f.conn.flush(f.s.now)
  t.same(f.dataOf(f.s.take()), [], 'nothing fits a zero window')
  const probes: number[] = []
  const t0 = f.s.now
  for (let i = 0; i < 40; i++) {
    f.s.advance(50)
    for (const x of f.s.take()) {
      t.equal(x.payloadLen, 0)
      t.equal(x.seq, (f.ackAt(2000) - 1) >>> 0, 'probe: an ACK with an old sequence number')
      probes.push(f.s.now - t0)
      f.send({ ack: f.ackAt(2000) }) // still closed
    }
  }
  t.ok(probes.length >= 3, `probes sent (${probes.join(',')})`)
  t.ok(probes[2] - probes[1] > probes[1] - probes[0], 'intervals grow')
  t.equal(f.conn.stateName, 'ESTABLISHED', 'probes answered: no abort')
  f.peerWindow = 65535
  f.send({ ack: f.ackAt(2000) })
  t.same(f.dataOf(f.s.take()), [[2000, 1000], [3000, 1000], [4000, 1000]], 'window open: data flows')
  t.equal(f.conn.persistAt, Infinity)
})

t.test('ESTABLISHED receive window closes while unread and reopens as the application reads', async t => {
  const f = new Fixture({ receiveBuffer: 4000 })
  f.open()
  f.rec.holdReads = true
  for (let i = 0; i < 4; i++) f.send({}, data(MSS))
  const acks = f.s.take()
  t.equal(acks[acks.length - 1].window, 0, 'unread data fills the window')
  f.send({}, data(MSS))
  t.equal(f.rec.received, 4 * MSS, 'data beyond the window is not accepted')
  t.equal(f.s.counter('tcp_dropped', 'zero_window'), 1)
  f.s.take()
  f.rec.readAll(f.s.now)
  const [update] = f.s.take()
  t.equal(update.window, 4000, 'window update as the application reads')
})

const STATES = ['SYN-SENT', 'SYN-RECEIVED', 'ESTABLISHED', 'FIN-WAIT-1', 'FIN-WAIT-2', 'CLOSE-WAIT', 'CLOSING', 'LAST-ACK', 'TIME-WAIT'] as const

/** Brings a fresh fixture to `state`; the core is the active opener except for SYN-RECEIVED. */
function reach (state: typeof STATES[number]): Fixture {
  const f = new Fixture({ timeWait: 1000 })
  if (state === 'SYN-SENT') {
    f.connect()
    return f
  }
  if (state === 'SYN-RECEIVED') {
    f.s.core.listen(80, conn => {
      f.rec.conn = conn
      return f.rec
    })
    f.s.deliver({ srcPort: PEER_PORT, dstPort: 80, seq: PEER_ISS, flags: TCP_SYN, window: 65535, mss: MSS })
    f.conn = f.s.core.find(ADDR_B, PEER_PORT, 80)!
    f.s.take()
    return f
  }
  f.open()
  if (state === 'ESTABLISHED') return f
  if (state === 'FIN-WAIT-1' || state === 'FIN-WAIT-2' || state === 'CLOSING' || state === 'TIME-WAIT') {
    f.conn.shutdown(f.s.now)
    f.s.take()
    if (state === 'FIN-WAIT-1') return f
    if (state === 'CLOSING') {
      f.send({ ack: f.ackAt(0), flags: TCP_ACK | TCP_FIN })
      f.peerNxt++
      f.s.take()
      return f
    }
    f.send({ ack: f.ackAt(1) })
    if (state === 'FIN-WAIT-2') return f
    f.send({ flags: TCP_ACK | TCP_FIN })
    f.peerNxt++
    f.s.take()
    return f
  }
  // CLOSE-WAIT, LAST-ACK: the peer closes first.
  f.send({ flags: TCP_ACK | TCP_FIN })
  f.peerNxt++
  f.s.take()
  if (state === 'CLOSE-WAIT') return f
  f.conn.shutdown(f.s.now)
  f.s.take()
  return f
}

t.test('every state is reachable', async t => {
  for (const state of STATES) t.equal(reach(state).conn.stateName, state, state)
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
    const ours = f.conn.sndMax
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
    if (state === 'TIME-WAIT') t.equal(f.conn.stateAt, f.s.now + 1000, 'TIME-WAIT restarted by a retransmitted FIN')
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
      f.s.deliver({ srcPort: PEER_PORT, dstPort: f.localPort, seq: 0, ack: f.conn.sndMax, flags: TCP_RST | TCP_ACK })
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
  t.equal(challenge.seq, f.conn.sndNxt)
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
  f.send({ ack: (f.conn.sndMax + 5000) >>> 0 }, data(10))
  t.equal(f.rec.received, 0)
  const [ack] = f.s.take()
  t.equal(ack.flags, TCP_ACK)
  t.equal(f.s.counter('tcp_dropped', 'ack_unsent'), 1)
})

t.test('FIN-WAIT-1 fin then ack: simultaneous close through CLOSING to TIME-WAIT', async t => {
  const f = reach('CLOSING')
  f.send({ ack: f.conn.sndMax })
  t.equal(f.conn.stateName, 'TIME-WAIT')
  t.same(f.rec.events, ['connect', 'end', 'close'])
})

t.test('TIME-WAIT expiry: the connection leaves the table', async t => {
  const f = reach('TIME-WAIT')
  t.equal(f.s.core.size, 1)
  f.s.advance(999)
  t.equal(f.s.core.size, 1)
  f.s.advance(1)
  t.equal(f.s.core.size, 0)
  t.equal(f.s.core.nextDeadline(), Infinity)
  t.same(f.s.core.connectionsByState(), {})
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
  f.s.deliver({ srcPort: PEER_PORT, dstPort: 80, seq: PEER_ISS + 1, ack: conn.sndMax, flags: TCP_ACK | TCP_FIN, window: 65535 })
  t.equal(conn.stateName, 'TIME-WAIT')
  f.s.take()
  f.s.deliver({ srcPort: PEER_PORT, dstPort: 80, seq: PEER_ISS + 100_000, flags: TCP_SYN, window: 65535, mss: MSS })
  const [fresh] = f.s.take()
  t.equal(fresh.flags, TCP_SYN | TCP_ACK)
  t.equal(fresh.ack, PEER_ISS + 100_001)
  t.equal(f.s.core.find(ADDR_B, PEER_PORT, 80)!.stateName, 'SYN-RECEIVED')
  t.equal(f.s.counter('tcp_events', 'time_wait_reused'), 1)
})

t.test('ESTABLISHED keepalive: probes when idle, abort with ETIMEDOUT when unanswered', async t => {
  const f = new Fixture({ keepAlive: true, keepAliveIdle: 1000, keepAliveInterval: 500, keepAliveProbes: 3 })
  f.open()
  const t0 = f.s.now
  const probes: number[] = []
  for (let i = 0; i < 100 && f.conn.stateName === 'ESTABLISHED'; i++) {
    f.s.advance(50)
    for (const x of f.s.take()) {
      if ((x.flags & TCP_RST) !== 0) continue
      t.equal(x.seq, (f.conn.sndUna - 1) >>> 0)
      probes.push(f.s.now - t0)
    }
  }
  t.same(probes, [1000, 1500, 2000])
  t.equal(f.rec.error?.code, 'ETIMEDOUT')
  t.equal(f.s.counter('tcp_events', 'keepalive_abort'), 1)
})

t.test('ESTABLISHED keepalive answered: the connection stays', async t => {
  const f = new Fixture({ keepAlive: true, keepAliveIdle: 1000, keepAliveInterval: 500, keepAliveProbes: 2 })
  f.open()
  for (let i = 0; i < 200; i++) {
    f.s.advance(50)
    for (const x of f.s.take()) if (x.payloadLen === 0) f.send({}) // the peer answers each probe
  }
  t.equal(f.conn.stateName, 'ESTABLISHED')
  t.ok(f.s.counter('tcp_events', 'keepalive_probe') >= 5)
})

t.test('ESTABLISHED user timeout: unacknowledged data aborts the connection (RFC 5482)', async t => {
  const f = new Fixture({ userTimeout: 3000 })
  f.open()
  const t0 = f.s.now
  f.conn.write(data(100))
  f.conn.flush(f.s.now)
  while (f.conn.stateName === 'ESTABLISHED' && f.s.now - t0 < 10_000) f.s.advance(100)
  t.equal(f.rec.error?.code, 'ETIMEDOUT')
  t.equal(f.s.now - t0, 3000)
  t.ok(f.s.take().some(x => (x.flags & TCP_RST) !== 0), 'the peer is reset')
  t.equal(f.s.core.size, 0)
})

t.test('CLOSE-WAIT timeout: an application that never closes is freed', async t => {
  const f = new Fixture({ closeWaitTimeout: 5000 })
  f.open()
  f.send({ flags: TCP_ACK | TCP_FIN })
  f.s.advance(4999)
  t.equal(f.conn.stateName, 'CLOSE-WAIT')
  f.s.advance(1)
  t.equal(f.conn.stateName, 'CLOSED')
  t.equal(f.rec.error?.code, 'ETIMEDOUT')
  t.equal(f.s.core.size, 0)
})

t.test('FIN-WAIT-2 timeout: a peer that never sends FIN is freed', async t => {
  const f = new Fixture({ finWait2Timeout: 5000 })
  f.open()
  f.conn.shutdown(f.s.now)
  f.send({ ack: f.ackAt(1) })
  t.equal(f.conn.stateName, 'FIN-WAIT-2')
  f.s.advance(5000)
  t.equal(f.conn.stateName, 'CLOSED')
  t.equal(f.s.core.size, 0)
})

t.test('LAST-ACK timeout: a peer that never acknowledges our FIN is freed', async t => {
  const f = new Fixture({ lastAckTimeout: 5000 })
  f.open()
  f.send({ flags: TCP_ACK | TCP_FIN })
  f.conn.shutdown(f.s.now)
  t.equal(f.conn.stateName, 'LAST-ACK')
  f.s.advance(4000)
  t.ok(f.s.take().filter(x => (x.flags & TCP_FIN) !== 0).length >= 2, 'FIN retransmitted meanwhile')
  f.s.advance(1000)
  t.equal(f.conn.stateName, 'CLOSED')
  t.equal(f.s.core.size, 0)
})

t.test('ESTABLISHED detach: the orphaned connection finishes its close, data after close resets', async t => {
  const f = new Fixture()
  f.open()
  f.conn.write(data(10))
  f.conn.detach(f.s.now)
  const out = f.s.take()
  t.ok(out.some(x => x.payloadLen === 10 && (x.flags & TCP_FIN) !== 0), 'data and FIN still go out')
  t.equal(f.conn.stateName, 'FIN-WAIT-1')
  f.send({}, data(5))
  t.equal(f.conn.stateName, 'CLOSED')
  t.ok(f.s.take().some(x => (x.flags & TCP_RST) !== 0))
})

t.test('CLOSED abort: RST with SND.NXT', async t => {
  const f = new Fixture()
  f.open()
  f.conn.abort(f.s.now)
  const [rst] = f.s.take()
  t.equal(rst.flags, TCP_RST | TCP_ACK)
  t.equal(rst.seq, f.conn.sndNxt)
  t.equal(f.s.core.size, 0)
  t.same(f.rec.events, ['connect'], 'no close event for the application that aborted')
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

t.test('bad checksum and strangers are counted and dropped', async t => {
  const s = new Scripted()
  s.core.listen(80, () => new Recorder())
  const { buildSegment } = await import('./harness.ts')
  const { parseIPv4 } = await import('../../../../proto/wire/ipv4.ts')
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

t.test('ESTABLISHED global buffer limit: windows and send room shrink to the minimum under pressure', async t => {
  const f = new Fixture({ globalBufferLimit: 100_000, minBuffer: 8000, receiveBuffer: 64_000, sendBuffer: 64_000 })
  // Other connections' data (accounted directly here) push the stack over its limit.
  f.s.core.adjustMemory(150_000)
  t.equal(f.s.core.memoryPressure, true)
  const syn = f.connect()
  t.equal(syn.window, 8000, 'the SYN offers only the minimum buffer')
  f.s.deliver({ srcPort: PEER_PORT, dstPort: syn.srcPort, seq: PEER_ISS, ack: (syn.seq + 1) >>> 0, flags: TCP_SYN | TCP_ACK, window: 65535, mss: MSS })
  f.s.take()
  t.equal(f.conn.writableRoom(), 8000, 'writes limited to minBuffer')
  t.equal(f.conn.write(data(20_000)), 8000, 'write() accepts only what fits')
  f.conn.flush(f.s.now)
  f.s.take()
  f.rec.holdReads = true
  for (let i = 0; i < 10; i++) f.send({ ack: f.conn.sndUna }, data(MSS))
  t.equal(f.rec.received, 8000, 'no more than the minimum is accepted while unread')
  f.s.core.adjustMemory(-150_000)
  t.equal(f.s.core.memoryPressure, false)
  f.s.take()
  f.rec.readAll(f.s.now)
  const [update] = f.s.take()
  t.equal(update.window, 64_000, 'the full window returns with the pressure gone')
})

t.test('garbage segments never throw out of input()', async t => {
  const s = new Scripted()
  s.core.listen(80, () => new Recorder())
  const { buildSegment } = await import('./harness.ts')
  const { parseIPv4 } = await import('../../../../proto/wire/ipv4.ts')
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
