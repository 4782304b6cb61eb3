/**
 * Timer expiry (timers.ts) on an injected clock: SYN and data retransmission with backoff,
 * zero-window probes, keepalive, user timeout, TIME-WAIT and the timeouts of stuck closing states.
 */
import t, { type Test } from 'tap'
import { Scripted, Recorder } from './harness.ts'
import { Fixture, reach, data, PEER_PORT, PEER_ISS, MSS, type PeerOptions } from './fixture.ts'
import { TCP_SYN, TCP_ACK, TCP_RST, TCP_FIN } from '../../../../proto/wire/tcp.ts'

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

t.test('SYN-RECEIVED timeout: SYN-ACK retried, then the half-open connection is freed', async t => {
  const s = new Scripted({ synAckRetries: 2 })
  s.core.listen(80, () => new Recorder())
  s.deliver({ srcPort: PEER_PORT, dstPort: 80, seq: PEER_ISS, flags: TCP_SYN, window: 1000, mss: MSS })
  s.advance(10_000)
  const synAcks = s.take().filter(x => x.flags === (TCP_SYN | TCP_ACK))
  t.equal(synAcks.length, 3)
  t.equal(s.core.size, 0)
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
  t.equal(f.conn.snd.una, f.ackAt(500))
  t.equal(f.conn.timers.rtoAt, Infinity, 'timer stopped when everything is acknowledged')
})

// Tail loss probes (RFC 8985 7). The handshake RTT of 10 ms gives SRTT 10: the probe is due
// 2 SRTT = 20 ms after the last transmission, long before the 200 ms RTO.

t.test('ESTABLISHED tail loss probe: the last segment again when the ACKs are lost, no RTO', async t => {
  const f = new Fixture({ tailLossProbe: true }, { sack: true })
  f.open()
  f.conn.write(data(3 * MSS))
  f.conn.flush(f.s.now)
  t.same(f.dataOf(f.s.take()), [[0, MSS], [MSS, MSS], [2 * MSS, MSS]])
  f.s.advance(19)
  t.same(f.s.take(), [], 'nothing before 2 SRTT')
  f.s.advance(1)
  t.same(f.dataOf(f.s.take()), [[2 * MSS, MSS]], 'no new data: the probe repeats the last segment')
  t.equal(f.s.counter('tcp_events', 'tail_loss_probe'), 1)
  t.equal(f.s.counter('tcp_retransmits', 'tlp'), 1)
  f.s.advance(100)
  t.same(f.s.take(), [], 'one probe until an ACK of new data')
  f.send({ ack: f.ackAt(3 * MSS) })
  t.equal(f.conn.snd.una, f.ackAt(3 * MSS), 'the probe\'s ACK acknowledges the whole tail')
  f.s.advance(1000)
  t.equal(f.s.counter('tcp_retransmits', 'rto'), 0, 'the retransmission timer never fired')
})

t.test('ESTABLISHED tail loss probe: the last segment again even when new data waits; its SACK starts recovery', async t => {
  const f = new Fixture({ tailLossProbe: true, initialWindowSegments: 3 }, { sack: true })
  f.open()
  f.conn.write(data(10 * MSS))
  f.conn.flush(f.s.now)
  t.same(f.dataOf(f.s.take()), [[0, MSS], [MSS, MSS], [2 * MSS, MSS]], 'cwnd: three segments')
  // Segments 0 and 1 arrive. Segment 2 and everything sent after the ACK for them is lost: a tail
  // loss that leaves no duplicate ACKs to count.
  f.send({ ack: f.ackAt(2 * MSS) })
  const more = f.dataOf(f.s.take())
  t.ok(more.length >= 1, 'the ACK opened the window for new data')
  const last = more[more.length - 1]
  t.ok(f.conn.snd.hasUnsent(), 'new data is waiting')
  f.s.advance(20)
  const [probe] = f.dataOf(f.s.take())
  t.same(probe, last, 'the probe is the last segment sent, again: a receiver answers a duplicate at once')
  t.equal(f.s.counter('tcp_retransmits', 'tlp'), 1)
  // Only the probe arrives: one SACKed segment, too little for RFC 6675's IsLost.
  f.send({ ack: f.ackAt(2 * MSS), sackBlocks: [f.ackAt(probe[0]), f.ackAt(probe[0] + MSS)] })
  t.equal(f.s.counter('tcp_events', 'probe_found_loss'), 1, 'the SACKed probe marks segment 2 lost')
  t.equal(f.conn.recovery.active, true)
  t.same(f.dataOf(f.s.take())[0], [2 * MSS, MSS], 'segment 2 is retransmitted at once')
  t.equal(f.s.counter('tcp_retransmits', 'rto'), 0)
})

t.test('ESTABLISHED tail loss probe: due after 2 ms on a sub-millisecond path', async t => {
  const f = new Fixture({ tailLossProbe: true }, { sack: true })
  f.open()
  f.conn.rtt.srtt = 0.3
  f.conn.write(data(3 * MSS))
  f.conn.flush(f.s.now)
  f.s.take()
  f.s.advance(1)
  t.same(f.s.take(), [], 'not at 2 SRTT (0.6 ms): the floor is 2 ms')
  f.s.advance(1)
  t.same(f.dataOf(f.s.take()), [[2 * MSS, MSS]], 'the probe at 2 ms, not 10')
})

/**
 * `segments` sent at once (all in the initial window); segment 0 is lost and 1 .. `sackedThrough`
 * - 1 arrive and are SACKed: recovery retransmits segment 0.
 */
function recoveryForSegment0 (t: Test, segments: number, sackedThrough: number, peer: PeerOptions = {}): Fixture {
  const f = new Fixture({ tailLossProbe: true, initialWindowSegments: segments }, { sack: true, ...peer })
  f.open()
  f.conn.write(data(segments * MSS))
  f.conn.flush(f.s.now)
  t.equal(f.dataOf(f.s.take()).length, segments)
  for (let n = 2; n <= sackedThrough; n++) f.send({ ack: f.ackAt(0), sackBlocks: [f.ackAt(MSS), f.ackAt(n * MSS)] })
  t.equal(f.conn.recovery.active, true)
  t.same(f.dataOf(f.s.take()), [[0, MSS]], 'segment 0 retransmitted')
  return f
}

t.test('ESTABLISHED fast recovery tail loss probe: the ACK that would end recovery is lost; the probe brings it, no RTO', async t => {
  // Segment 0 is lost; three SACKs start recovery, which retransmits it.
  const f = recoveryForSegment0(t, 10, 4)
  // The retransmission arrives and the peer acknowledges everything; that ACK is lost.
  f.s.advance(19)
  t.same(f.s.take(), [], 'nothing before 2 SRTT')
  f.s.advance(1)
  t.same(f.dataOf(f.s.take()), [[9 * MSS, MSS]], 'the probe: the last segment again')
  t.equal(f.s.counter('tcp_events', 'tail_loss_probe'), 1)
  f.send({ ack: f.ackAt(10 * MSS), sackBlocks: [f.ackAt(9 * MSS), f.ackAt(10 * MSS)] }) // its duplicate ACK (D-SACK)
  t.equal(f.conn.recovery.active, false, 'the ACK it brought ended recovery')
  t.equal(f.conn.snd.una, f.ackAt(10 * MSS))
  f.s.advance(1000)
  t.equal(f.s.counter('tcp_retransmits', 'rto'), 0, 'the retransmission timer never fired')
})

t.test('ESTABLISHED fast recovery tail loss probe: a lost run at the tail stops holding the pipe once the probe is SACKed, no RTO', async t => {
  // Segment 0 and the whole run 5-19 are lost; 1-4 arrive and are SACKed: recovery.
  const f = recoveryForSegment0(t, 20, 5, { windowScale: 7 })
  // Its ACK: a partial ACK up to 5. The lost run (15 segments, nothing SACKed above it) is not
  // "lost" to RFC 6675 and fills the reduced window: nothing more can be sent.
  f.send({ ack: f.ackAt(5 * MSS) })
  t.same(f.dataOf(f.s.take()), [], 'the pipe is full')
  f.s.advance(20)
  const [probe] = f.dataOf(f.s.take())
  t.same(probe, [19 * MSS, MSS], 'the probe: the last segment again')
  f.send({ ack: f.ackAt(5 * MSS), sackBlocks: [f.ackAt(19 * MSS), f.ackAt(20 * MSS)] })
  t.equal(f.s.counter('tcp_events', 'probe_found_loss'), 1)
  const resent = f.dataOf(f.s.take())
  t.ok(resent.length >= 2, `the run below the probe is retransmitted at once (${resent.length} segments)`)
  t.same(resent[0], [5 * MSS, MSS], 'from its start')
  f.send({ ack: f.ackAt(20 * MSS) })
  t.equal(f.conn.recovery.active, false)
  t.equal(f.s.counter('tcp_retransmits', 'rto'), 0, 'the retransmission timer never fired')
})

t.test('ESTABLISHED tail loss probe off: the same lost ACKs wait for the RTO', async t => {
  const f = new Fixture({ tailLossProbe: false }, { sack: true })
  f.open()
  f.conn.write(data(3 * MSS))
  f.conn.flush(f.s.now)
  f.s.take()
  f.s.advance(199)
  t.same(f.s.take(), [])
  f.s.advance(1)
  t.same(f.dataOf(f.s.take()), [[0, MSS]], 'the RTO retransmits from SND.UNA after 200 ms')
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
  t.equal(f.conn.timers.persistAt, Infinity)
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

t.test('ESTABLISHED keepalive: probes when idle, abort with ETIMEDOUT when unanswered', async t => {
  const f = new Fixture({ keepAlive: true, keepAliveIdle: 1000, keepAliveInterval: 500, keepAliveProbes: 3 })
  f.open()
  const t0 = f.s.now
  const probes: number[] = []
  for (let i = 0; i < 100 && f.conn.stateName === 'ESTABLISHED'; i++) {
    f.s.advance(50)
    for (const x of f.s.take()) {
      if ((x.flags & TCP_RST) !== 0) continue
      t.equal(x.seq, (f.conn.snd.una - 1) >>> 0)
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

t.test('ESTABLISHED delayed ACK: a lone segment is acknowledged by the timer after 40 ms, and counted', async t => {
  const f = new Fixture()
  f.open()
  f.send({}, data(1200)) // a small response, nothing to send back
  t.same(f.s.take(), [], 'the ACK waits')
  f.s.advance(40)
  const acks = f.s.take()
  t.equal(acks.length, 1)
  t.equal(acks[0].ack, f.peerNxt)
  t.equal(acks[0].payloadLen, 0)
  t.equal(f.s.counter('tcp_events', 'delayed_ack'), 1)
})

t.test('ESTABLISHED delayed ACK: the next request carries the ACK at once, the timer sends nothing', async t => {
  const f = new Fixture()
  f.open()
  f.send({}, data(1200)) // the response
  f.s.advance(5)
  f.conn.write(Buffer.from('GET / HTTP/1.1\r\nhost: a\r\n\r\n'))
  f.conn.flush(f.s.now)
  const out = f.s.take()
  t.equal(out.length, 1, 'the request in one segment, without waiting (noDelay)')
  t.equal(out[0].ack, f.peerNxt, 'acknowledging the response')
  f.s.advance(100)
  t.same(f.s.take().filter(x => x.payloadLen === 0), [], 'no ACK of its own later')
  t.equal(f.s.counter('tcp_events', 'delayed_ack'), 0)
})
