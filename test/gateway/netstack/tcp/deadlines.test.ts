import t from 'tap'
import { Deadlines } from '../../../../gateway/netstack/tcp/deadlines.ts'

t.test('next: the earliest deadline, the user timeout counted from the oldest unacknowledged data', async t => {
  const d = new Deadlines()
  t.equal(d.next(0), Infinity)
  d.startRto(500)
  d.armDelack(300)
  d.armDelack(100)
  t.equal(d.delackAt, 300, 'a pending delayed ACK is not moved')
  d.unackedFrom(10)
  d.unackedFrom(20)
  t.equal(d.next(0), 300)
  t.equal(d.next(200), 210, 'user timeout from the first unacknowledged send')
})

t.test('stopSending keeps the delayed ACK and state timer; stopAll stops everything', async t => {
  const d = new Deadlines()
  d.startRto(1); d.startTlp(2); d.paceUntil(3); d.armDelack(4); d.armPersist(5); d.startKeepalive(6); d.startStateTimer(7); d.unackedFrom(8)
  d.stopSending()
  t.same([d.rtoAt, d.tlpAt, d.paceAt, d.persistAt, d.keepaliveAt, d.unackedSince], Array(6).fill(Infinity))
  t.equal(d.next(100), 4)
  d.stopAll()
  t.equal(d.next(100), Infinity)
})

t.test('persist backoff doubles up to the cap and resets when the window opens', async t => {
  const d = new Deadlines()
  d.persistBackedOff(0, 200, 1000)
  t.equal(d.persistAt, 400)
  d.persistBackedOff(0, 200, 1000)
  t.equal(d.persistAt, 800)
  d.persistBackedOff(0, 200, 1000)
  t.equal(d.persistAt, 1000, 'capped')
  d.resetPersistBackoff()
  d.persistBackedOff(0, 200, 1000)
  t.equal(d.persistAt, 400)
})

t.test('RTO: armRto keeps a running timer, newDataAcked stops or restarts it (RFC 6298 5.1-5.3)', async t => {
  const d = new Deadlines()
  d.armRto(100)
  d.armRto(200)
  t.equal(d.rtoAt, 100)
  d.newDataAcked(false, 50, 250)
  t.equal(d.rtoAt, 250)
  t.equal(d.unackedSince, 50)
  d.newDataAcked(true, 60, 300)
  t.equal(d.rtoAt, Infinity)
  t.equal(d.unackedSince, Infinity)
})
