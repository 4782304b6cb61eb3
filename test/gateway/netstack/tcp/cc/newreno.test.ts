import t from 'tap'
import { NewReno } from '../../../../../gateway/netstack/tcp/cc/newreno.ts'

const MSS = 1000

t.test('NewReno: slow start, avoidance, loss, timeout (RFC 5681)', async t => {
  const cc = new NewReno(MSS, 10 * MSS)
  cc.onAck(2 * MSS, 0, 50, true)
  t.equal(cc.cwnd, 12 * MSS, 'slow start grows by the bytes acked')
  cc.onAck(5 * MSS, 0, 50, true)
  t.equal(cc.cwnd, 14 * MSS, 'at most 2 SMSS per ACK (RFC 3465 L = 2)')
  cc.onAck(2 * MSS, 0, 50, false)
  t.equal(cc.cwnd, 14 * MSS, 'an application-limited window does not grow (RFC 7661)')
  cc.onLoss(0, 14 * MSS)
  t.equal(cc.ssthresh, 7 * MSS, 'ssthresh = FlightSize / 2')
  t.equal(cc.cwnd, 7 * MSS)
  for (let i = 0; i < 7; i++) cc.onAck(MSS, 0, 50, true)
  t.equal(cc.cwnd, 8 * MSS, 'one SMSS per window in congestion avoidance')
  cc.onRetransmitTimeout(0, 2 * MSS)
  t.equal(cc.cwnd, MSS, 'loss window of one segment')
  t.equal(cc.ssthresh, 2 * MSS, 'ssthresh never below 2 SMSS')
})
