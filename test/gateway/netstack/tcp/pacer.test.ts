/** Pacing (pacer.ts, applied by output.ts): the rate, the burst cap, and a window released over turns. */
import t from 'tap'
import { burstAllowance, nextDue, pacingRate } from '../../../../gateway/netstack/tcp/pacer.ts'
import { PACE_MIN_SRTT } from '../../../../gateway/netstack/tcp/constants.ts'
import { Fixture, MSS } from './fixture.ts'

t.test('the pacing rate is 2 x cwnd / SRTT in slow start and 1.2 x after, in bytes per ms', async t => {
  t.equal(pacingRate(40_000, Infinity, 10), 8000, 'slow start')
  t.equal(pacingRate(40_000, 40_000, 10), 4800, 'cwnd >= ssthresh / 2: congestion avoidance')
  t.equal(pacingRate(80_000, Infinity, 10), 2 * pacingRate(40_000, Infinity, 10), 'twice the window, twice the rate')
  t.equal(pacingRate(40_000, Infinity, 20), pacingRate(40_000, Infinity, 10) / 2, 'twice the SRTT, half the rate')
  t.equal(pacingRate(40_000, Infinity, 0), pacingRate(40_000, Infinity, PACE_MIN_SRTT), 'SRTT has a floor')
})

t.test('at one instant at most maxBurst full segments are due, however far behind the clock is', async t => {
  for (const cap of [1, 8, 32]) {
    const rate = 100_000 // 100 MB/s: PACE_BURST_MS alone would allow 2 ms, ~145 segments of 1,380
    const allowance = burstAllowance(rate, 1380, cap)
    let next = -Infinity
    let sent = 0
    while (next <= 1000 && sent < 1000) {
      next = nextDue(next, 1000, 1380, rate, allowance)
      sent++
    }
    t.equal(sent, cap, `cap ${cap}`)
  }
  const uncapped = burstAllowance(100_000, 1380, 0)
  t.equal(uncapped, 2, 'no cap: PACE_BURST_MS of the rate')
})

/** Opens with a 10 ms SYN/SYN-ACK round trip (the first SRTT) and `segments` of data queued in one window. */
function window (segments: number, maxBurst: number): Fixture {
  const f = new Fixture({ pacing: true, initialWindowSegments: segments, maxBurst }, { windowScale: 7, window: 65535 })
  f.open()
  f.peerWindow = 4000
  f.send({}) // the window update: 512 KB
  f.conn.write(Buffer.alloc(segments * MSS, 1))
  return f
}

/** Flushes, then advances in turns of `turnMs` until the whole window left: the segments of each turn and when it ended. */
function releaseInTurns (f: Fixture, segments: number, turnMs: number): { perTurn: number[], spanMs: number } {
  const start = f.s.now
  f.conn.flush(f.s.now)
  const perTurn = [f.dataOf(f.s.take()).length]
  let total = perTurn[0]
  for (let turn = 0; turn < 1000 && total < segments; turn++) {
    f.s.advance(turnMs)
    const n = f.dataOf(f.s.take()).length
    perTurn.push(n)
    total += n
  }
  return { perTurn, spanMs: f.s.now - start }
}

t.test('ESTABLISHED pacing: a 200-segment window leaves over several turns, never more than maxBurst in one, at 2 x cwnd / SRTT', async t => {
  const f = window(200, 16)
  const rate = pacingRate(f.conn.cc.cwnd, f.conn.cc.ssthresh, f.conn.rtt.srtt)
  t.equal(rate, 2 * 200 * MSS / 10, 'slow start, SRTT 10 ms: 40 segments per ms')
  const { perTurn, spanMs } = releaseInTurns(f, 200, 0.1)
  t.equal(perTurn.reduce((a, b) => a + b, 0), 200, 'the whole window left')
  t.equal(perTurn[0], 16, 'the first turn sends maxBurst segments')
  t.ok(perTurn.every(n => n <= 16), `no turn above the cap (largest ${Math.max(...perTurn)})`)
  t.ok(perTurn.length > 10, `over many turns (${perTurn.length})`)
  // The other 184 segments at 40 per ms: 4.6 ms of virtual time.
  const expected = (200 - 16) * MSS / rate
  t.ok(Math.abs(spanMs - expected) <= 0.3, `spread at the rate: ${spanMs.toFixed(2)} ms for ~${expected.toFixed(2)} ms`)
  t.equal(f.s.counter('tcp_retransmits', 'rto'), 0)
})

t.test('ESTABLISHED pacing: twice the SRTT, the same window takes twice as long', async t => {
  const spans: number[] = []
  for (const srtt of [10, 20]) {
    const f = window(200, 16)
    f.conn.rtt.srtt = srtt
    spans.push(releaseInTurns(f, 200, 0.1).spanMs)
  }
  t.ok(Math.abs(spans[1] / spans[0] - 2) < 0.1, `rate = 2 x cwnd / SRTT (${spans[0].toFixed(2)} ms, then ${spans[1].toFixed(2)} ms)`)
})

t.test('ESTABLISHED pacing without a cap: the first turn sends PACE_BURST_MS of the rate', async t => {
  const f = window(200, 0)
  f.conn.flush(f.s.now)
  // 2 ms at 40 segments per ms, plus the one at the clock itself.
  const n = f.dataOf(f.s.take()).length
  t.ok(n >= 80 && n <= 81, `80 or 81 segments (${n})`)
})
