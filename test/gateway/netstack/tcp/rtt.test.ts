import t from 'tap'
import { RttEstimator } from '../../../../gateway/netstack/tcp/rtt.ts'

t.test('RFC 6298: first sample, smoothing, floor, backoff and ceiling', async t => {
  const rtt = new RttEstimator(200, 120_000, 1000)
  t.equal(rtt.rto, 1000, '2.1: initial RTO')
  rtt.sample(100)
  // 2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4 RTTVAR = 300
  t.equal(rtt.srtt, 100)
  t.equal(rtt.rttvar, 50)
  t.equal(rtt.rto, 300)
  rtt.sample(200)
  // 2.3: RTTVAR = 3/4 * 50 + 1/4 * |100 - 200| = 62.5; SRTT = 7/8 * 100 + 1/8 * 200 = 112.5
  t.equal(rtt.rttvar, 62.5)
  t.equal(rtt.srtt, 112.5)
  t.equal(rtt.rto, 112.5 + 250)
  for (let i = 0; i < 50; i++) rtt.sample(1)
  t.equal(rtt.rto, 200, '2.4: the minimum applies')
  rtt.backoff()
  t.equal(rtt.rto, 400, '5.5: doubled')
  for (let i = 0; i < 20; i++) rtt.backoff()
  t.equal(rtt.rto, 120_000, 'capped at the maximum')
  rtt.sample(1)
  t.ok(rtt.rto < 1000, 'a new sample ends the backoff (5.7)')
})

t.test('RFC 6298 3 and Karn: one timed segment, not sampled after its retransmission', async t => {
  const rtt = new RttEstimator(1, 120_000, 1000)
  rtt.timeSegment(1000, 10)
  rtt.timeSegment(2000, 20)
  rtt.acknowledged(999, 30)
  t.equal(rtt.hasSample, false, 'an ACK below the timed segment is no sample')
  rtt.acknowledged(1000, 50)
  t.equal(rtt.srtt, 40, 'timed from the first send, not the second')
  rtt.timeSegment(3000, 60)
  rtt.retransmitted(2500)
  rtt.acknowledged(3000, 500)
  t.equal(rtt.srtt, 40, 'Karn: a retransmitted segment is not timed')
  rtt.timeSegment(4000, 600)
  rtt.synAcknowledged(700, true)
  t.equal(rtt.timingSegment, false, 'a retransmitted SYN is not sampled and timing ends')
  t.equal(rtt.srtt, 40)
})
