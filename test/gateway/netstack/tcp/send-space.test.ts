import t from 'tap'
import { SendSpace } from '../../../../gateway/netstack/tcp/send-space.ts'

const ISS = 0xfffffff0 // the sequence space wraps inside these tests

function established (): SendSpace {
  const snd = new SendSpace()
  snd.init(ISS)
  snd.synSent()
  snd.acknowledge((ISS + 1) >>> 0)
  return snd
}

t.test('init: SND.UNA = SND.NXT = SND.MAX = ISS, data numbered from ISS + 1', async t => {
  const snd = new SendSpace()
  snd.init(ISS)
  t.same([snd.iss, snd.una, snd.nxt, snd.max, snd.bufSeq], [ISS, ISS, ISS, ISS, (ISS + 1) >>> 0])
  snd.synSent()
  t.same([snd.una, snd.nxt, snd.max], [ISS, (ISS + 1) >>> 0, (ISS + 1) >>> 0], 'the SYN takes one sequence number')
})

t.test('acknowledge: the buffer gives up what the ACK covers and SND.NXT never lags SND.UNA', async t => {
  const snd = established()
  snd.append(Buffer.alloc(100, 1), 0, 100)
  snd.advance(100, false)
  t.equal(snd.max, (ISS + 101) >>> 0, 'across the wrap')
  snd.rewind()
  t.equal(snd.nxt, snd.una, 'a timeout starts over from SND.UNA')
  t.equal(snd.max, (ISS + 101) >>> 0, 'SND.MAX stays')
  t.equal(snd.acknowledge((ISS + 41) >>> 0), 40, '40 data bytes freed')
  t.equal(snd.buffer.length, 60)
  t.equal(snd.bufSeq, (ISS + 41) >>> 0)
  t.equal(snd.nxt, snd.una, 'SND.NXT moved up with SND.UNA')
  t.ok(snd.hasUnsent())
})

t.test('acknowledge of our FIN: no data freed for it, finAcked once SND.UNA passes it', async t => {
  const snd = established()
  snd.append(Buffer.alloc(10), 0, 10)
  snd.queueFin()
  snd.advance(10, true)
  t.equal(snd.max, (ISS + 12) >>> 0, 'FIN takes one sequence number')
  t.equal(snd.acknowledge((ISS + 11) >>> 0), 10)
  t.equal(snd.finAcked, false)
  t.equal(snd.acknowledge((ISS + 12) >>> 0), 0, 'the FIN is not in the buffer')
  t.equal(snd.finAcked, true)
})

t.test('skipTo: SND.NXT never passes SND.MAX', async t => {
  const snd = established()
  snd.append(Buffer.alloc(100), 0, 100)
  snd.advance(50, false)
  snd.rewind()
  snd.skipTo((ISS + 500) >>> 0)
  t.equal(snd.nxt, snd.max)
})

t.test('updateWindow: only from a newer segment (RFC 9293 3.10.7.4 fifth check), scaled, MAX.SND.WND kept', async t => {
  const snd = established()
  snd.setShift(2)
  snd.synWindow(1000, 500, (ISS + 1) >>> 0)
  t.equal(snd.wnd, 1000, 'the SYN window is not scaled')
  t.ok(snd.updateWindow(400, 501, (ISS + 1) >>> 0))
  t.equal(snd.wnd, 1600)
  t.equal(snd.maxWnd, 1600)
  t.notOk(snd.updateWindow(10, 500, (ISS + 1) >>> 0), 'an older segment does not shrink it')
  t.equal(snd.wnd, 1600)
  t.ok(snd.updateWindow(10, 501, (ISS + 1) >>> 0), 'same SEG.SEQ, same SEG.ACK: taken')
  t.equal(snd.wnd, 40)
  t.equal(snd.maxWnd, 1600, 'the largest window offered stays')
  t.equal(snd.windowRoom(), 40)
})
