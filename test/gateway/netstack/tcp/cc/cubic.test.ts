import t from 'tap'
import { Cubic } from '../../../../../gateway/netstack/tcp/cc/cubic.ts'

const MSS = 1000

t.test('CUBIC: beta 0.7 reduction, concave then convex growth back past W_max (RFC 9438)', async t => {
  const cc = new Cubic(MSS, 10 * MSS)
  // Grow to 100 segments in slow start, then lose.
  while (cc.cwnd < 100 * MSS) cc.onAck(2 * MSS, 0, 100, true)
  cc.onLoss(0, cc.cwnd)
  t.equal(cc.ssthresh, Math.floor(cc.ssthresh), 'integer bytes')
  t.ok(Math.abs(cc.cwnd - 70 * MSS) <= 2 * MSS, `cwnd ~ 0.7 W_max (${cc.cwnd})`)
  // K = cbrt(W_max (1 - beta) / C) = cbrt(100 * 0.3 / 0.4) ~ 4.2 s: by then cwnd is back near W_max.
  let now = 0
  const cwndAt: Record<number, number> = {}
  for (; now <= 8000; now += 100) {
    const acks = Math.round(cc.cwnd / MSS)
    for (let i = 0; i < acks; i++) cc.onAck(MSS, now, 100, true)
    if (now % 1000 === 0) cwndAt[now / 1000] = cc.cwnd / MSS
  }
  t.ok(cwndAt[2] > 75 && cwndAt[2] < 100, `growing towards W_max at 2 s (${cwndAt[2]})`)
  t.ok(cwndAt[4] > 90 && cwndAt[4] < 110, `plateau near W_max at K (${cwndAt[4]})`)
  t.ok(cwndAt[8] > cwndAt[4] + 5, `convex growth beyond W_max (${cwndAt[8]})`)
  // Growth slows near the plateau: the rise from 3 s to 5 s is smaller than from 0 s to 2 s.
  t.ok(cwndAt[5] - cwndAt[3] < cwndAt[2] - cwndAt[0], 'concave then flat around K')
  for (const v of Object.values(cwndAt)) t.ok(Number.isFinite(v))
})

t.test('CUBIC: fast convergence and timeouts stay finite', async t => {
  const cc = new Cubic(MSS, 10 * MSS)
  cc.onLoss(0, 10 * MSS)
  const first = cc.cwnd
  cc.onLoss(1, cc.cwnd)
  t.ok(cc.cwnd < first, 'a second loss below W_max reduces further')
  cc.onRetransmitTimeout(2, 5 * MSS)
  t.equal(cc.cwnd, MSS)
  // Years of idle time must not overflow anything.
  for (let i = 0; i < 100; i++) cc.onAck(MSS, 1e12, 1e6, true)
  t.ok(Number.isFinite(cc.cwnd) && cc.cwnd > 0)
})
