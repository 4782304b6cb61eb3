/** Transmission (output.ts): pacing of data segments at a multiple of cwnd / SRTT. */
import t from 'tap'
import { Fixture, MSS } from './fixture.ts'

/** Opens with a 10 ms SYN/SYN-ACK round trip (the first RTT sample) and 40 segments of data queued. */
function bulk (pacing: boolean): Fixture {
  const f = new Fixture({ pacing, initialWindowSegments: 40 }, { windowScale: 7, window: 65535 })
  f.open()
  f.peerWindow = 1000
  return f
}

t.test('ESTABLISHED pacing: a 40-segment window leaves in paced bursts over a fraction of the RTT', async t => {
  const f = bulk(true)
  f.conn.write(Buffer.alloc(40 * MSS, 1))
  f.conn.flush(f.s.now)
  // Slow start: rate 2 x cwnd / SRTT = 2 x 40 000 B / 10 ms = 8 000 B/ms; one burst is 2 ms worth
  // (PACE_BURST_MS; more than PACE_BURST_SEGMENTS here): 16 segments, then one per 1000 / 8000 ms.
  const first = f.dataOf(f.s.take()).length
  t.ok(first >= 16 && first <= 17, `the first burst is about 16 segments (${first})`)
  t.ok(f.conn.nextDeadline() < f.s.now + 1, 'the pacing timer is armed for the next segment')
  const times: number[] = []
  let total = first
  for (let ms = 0; ms < 10 && total < 40; ms += 0.25) {
    f.s.advance(0.25)
    const n = f.dataOf(f.s.take()).length
    for (let i = 0; i < n; i++) times.push(f.s.now)
    total += n
  }
  t.equal(total, 40, 'the whole window left')
  const spread = times[times.length - 1] - times[0]
  t.ok(spread >= 2.5 && spread <= 4, `the other 23-24 segments were spread over ~3 ms at 8 segments/ms (${spread} ms)`)
  const perMs = new Map<number, number>()
  for (const at of times) perMs.set(Math.floor(at), (perMs.get(Math.floor(at)) ?? 0) + 1)
  t.ok([...perMs.values()].every(n => n <= 9), 'no millisecond carries more than the rate allows')
  t.equal(f.s.counter('tcp_retransmits', 'rto'), 0)
})

t.test('ESTABLISHED pacing off: the same window leaves at once', async t => {
  const f = bulk(false)
  f.conn.write(Buffer.alloc(40 * MSS, 1))
  f.conn.flush(f.s.now)
  t.equal(f.dataOf(f.s.take()).length, 40)
})

t.test('ESTABLISHED pacing never holds back ACKs', async t => {
  const f = bulk(true)
  f.conn.write(Buffer.alloc(40 * MSS, 1))
  f.conn.flush(f.s.now)
  f.s.take()
  // Data from the peer while our data waits for its pacing time: two full segments are ACKed at once.
  f.send({}, Buffer.alloc(MSS, 2))
  f.send({}, Buffer.alloc(MSS, 2))
  const out = f.s.take()
  t.ok(out.some(x => x.ack === f.peerNxt), 'the ACK for the second full segment left at once')
})

t.test('ESTABLISHED pacing: the timer ends with the connection', async t => {
  const f = bulk(true)
  f.conn.write(Buffer.alloc(40 * MSS, 1))
  f.conn.flush(f.s.now)
  f.s.take()
  t.ok(f.conn.timers.paceAt < Infinity, 'segments wait for the pacing timer')
  f.conn.abort(f.s.now)
  t.equal(f.conn.stateName, 'CLOSED')
  t.equal(f.conn.timers.paceAt, Infinity, 'no pacing deadline after the reset')
  t.equal(f.s.core.nextDeadline(), Infinity, 'nothing left to wake up for')
})

t.test('ESTABLISHED pacing: congestion avoidance paces at 1.2 x cwnd / SRTT', async t => {
  const f = new Fixture({ pacing: true, initialWindowSegments: 40 }, { windowScale: 7, window: 65535 })
  f.open()
  f.peerWindow = 1000
  f.conn.cc.ssthresh = 40 * MSS // cwnd >= ssthresh / 2: the congestion-avoidance ratio
  f.conn.write(Buffer.alloc(40 * MSS, 1))
  f.conn.flush(f.s.now)
  const first = f.dataOf(f.s.take()).length
  // 1.2 x 40 000 / 10 = 4 800 B/ms: a first burst of 10 segments (2.08 ms worth), the other 30 need ~6.25 ms.
  let total = first
  let doneAt = 0
  for (let ms = 0; ms < 20 && total < 40; ms += 0.25) {
    f.s.advance(0.25)
    total += f.dataOf(f.s.take()).length
    doneAt = ms + 0.25
  }
  t.equal(total, 40)
  t.ok(doneAt >= 5.5 && doneAt <= 7.5, `the window took ~6.25 ms instead of ~3 ms (${doneAt} ms)`)
})

t.test('ESTABLISHED pacing on a sub-millisecond path does not hold the sender below cwnd / SRTT', async t => {
  // Regression: the rate used max(SRTT, 1 ms), so at SRTT 0.3 ms a 10-segment window was paced to
  // 1.2 x 10 segments per ms instead of per 0.3 ms.
  const f = new Fixture({ pacing: true, initialWindowSegments: 10 }, { windowScale: 7, window: 65535 })
  f.open()
  f.peerWindow = 4000
  f.conn.cc.ssthresh = 10 * MSS
  f.conn.rtt.srtt = 0.3
  f.conn.write(Buffer.alloc(1000 * MSS, 1))
  f.conn.flush(f.s.now)
  let sent = f.dataOf(f.s.take()).length
  // The peer acknowledges everything 0.3 ms after it was sent, for 15 ms.
  for (let i = 0; i < 50; i++) {
    f.s.advance(0.3)
    f.conn.rtt.srtt = 0.3
    f.send({ ack: f.conn.snd.max })
    sent += f.dataOf(f.s.take()).length
  }
  t.ok(sent >= 10 * 50 * 0.9, `about a window per 0.3 ms round trip (${sent} segments in 15 ms)`)
})
