/** Application calls on a connection (connection.ts): open, write/flush, read window, detach, abort, limits. */
import t from 'tap'
import { Fixture, reach, data, STATES, PEER_PORT, PEER_ISS, MSS } from './fixture.ts'
import { TCP_SYN, TCP_ACK, TCP_RST, TCP_FIN, TCP_PSH } from '../../../../proto/wire/tcp.ts'

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

t.test('ESTABLISHED reads while the window is wide open send no window update: the ACK stays delayed', async t => {
  // Regression: every read used to send a window update, one extra ACK per segment received.
  const f = new Fixture({}, { windowScale: 7 })
  f.open()
  f.rec.holdReads = true
  f.send({}, data(MSS))
  t.same(f.s.take(), [], 'one segment: the ACK is delayed')
  f.rec.readAll(f.s.now)
  t.same(f.s.take(), [], 'reading it frees one MSS of a 4 MiB window: no update of its own')
  f.s.advance(40)
  const acks = f.s.take()
  t.equal(acks.length, 1, 'the delayed ACK follows')
  t.equal(acks[0].ack, f.peerNxt)
  t.equal(acks[0].window * 128, 4 * 1024 * 1024, 'and carries the whole 4 MiB window (scaled by 2^7)')
})

t.test('every state is reachable', async t => {
  for (const state of STATES) t.equal(reach(state).conn.stateName, state, state)
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
  t.equal(rst.seq, f.conn.snd.nxt)
  t.equal(f.s.core.size, 0)
  t.same(f.rec.events, ['connect'], 'no close event for the application that aborted')
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
  for (let i = 0; i < 10; i++) f.send({ ack: f.conn.snd.una }, data(MSS))
  t.equal(f.rec.received, 8000, 'no more than the minimum is accepted while unread')
  f.s.core.adjustMemory(-150_000)
  t.equal(f.s.core.memoryPressure, false)
  f.s.take()
  f.rec.readAll(f.s.now)
  const [update] = f.s.take()
  t.equal(update.window, 64_000, 'the full window returns with the pressure gone')
})
