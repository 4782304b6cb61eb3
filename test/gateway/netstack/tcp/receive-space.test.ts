import t from 'tap'
import { ReceiveSpace } from '../../../../gateway/netstack/tcp/receive-space.ts'

const IRS = 0xffffff00

function synced (shift = 0): ReceiveSpace {
  const rcv = new ReceiveSpace(16)
  rcv.synReceived(IRS)
  rcv.negotiated(shift, 1000)
  return rcv
}

t.test('advertise: the right edge never moves left (RFC 9293 3.8.6.2.2)', async t => {
  const rcv = synced()
  t.equal(rcv.advertise(5000, false, 1000), 5000)
  const right = rcv.advRight
  t.equal(rcv.advertise(100, false, 1000), 5000, 'less space: the same edge')
  t.equal(rcv.advRight, right)
  rcv.advance(3000, 3000)
  t.equal(rcv.advertise(0, false, 1000), 2000, 'data in: the window is what is left up to the edge')
  t.equal(rcv.advRight, right)
})

t.test('advertise: grows only in steps of minGrow, rounded up to the scale unit (RFC 7323 2.3)', async t => {
  const rcv = synced(7)
  t.equal(rcv.advertise(10_000, true, 1000), 10_000, 'SYN: unscaled')
  t.equal(rcv.advertise(10_500, false, 1000), Math.ceil(10_000 / 128), 'grew by 500 < 1000: the old edge, in units')
  t.equal(rcv.advertise(20_000, false, 1000), Math.ceil(20_000 / 128))
})

t.test('acceptable: the four cases of RFC 9293 3.10.7.4 around RCV.NXT across the wrap', async t => {
  const rcv = synced()
  const nxt = rcv.nxt
  t.ok(rcv.acceptable(nxt, 0), 'zero window, zero length at RCV.NXT')
  t.notOk(rcv.acceptable((nxt + 1) >>> 0, 0), 'zero window: nothing else')
  rcv.advertise(1000, false, 1)
  t.ok(rcv.acceptable((nxt + 999) >>> 0, 0))
  t.notOk(rcv.acceptable((nxt + 1000) >>> 0, 0), 'the edge itself is outside')
  t.ok(rcv.acceptable((nxt - 10) >>> 0, 20), 'a segment that ends inside the window')
  t.notOk(rcv.acceptable((nxt - 10) >>> 0, 10), 'a segment entirely before RCV.NXT')
})

t.test('FIN: held while data before it is missing, then one sequence number and an ACK', async t => {
  const rcv = synced()
  rcv.advertise(1000, false, 1)
  rcv.holdFin((rcv.nxt + 100) >>> 0)
  t.equal(rcv.pendingFinSeq, (IRS + 101) >>> 0)
  rcv.advance(100, 100)
  rcv.finArrives()
  t.equal(rcv.nxt, (IRS + 102) >>> 0)
  t.equal(rcv.pendingFinSeq, -1)
  t.ok(rcv.finReceived)
  t.ok(rcv.ackNow)
  rcv.ackSent()
  t.equal(rcv.lastAckSent, rcv.nxt)
  t.equal(rcv.ackPendingBytes, 0)
  t.notOk(rcv.ackNow)
})

t.test('deferred ACK: deferred once per batch, taken at its end', async t => {
  const rcv = synced()
  t.ok(rcv.deferAck())
  t.notOk(rcv.deferAck(), 'already deferred: the host is not asked twice')
  t.ok(rcv.takeDeferredAck())
  t.notOk(rcv.takeDeferredAck())
})
