import t from 'tap'
import { randomBytes } from 'node:crypto'
import { CookieChecker, CookieGenerator } from '../../../proto/noise/cookie.ts'
import { mac1Key, verifyMac1 } from '../../../proto/noise/mac.ts'
import { COOKIE_REFRESH_TIME } from '../../../proto/noise/constants.ts'

const responderPublic = randomBytes(32)
const source = Buffer.from([198, 18, 0, 2, 0xca, 0x6c])

/** A handshake-shaped message whose macs the generator writes. */
function message (size = 148): Buffer {
  const m = randomBytes(size)
  m.writeUInt32LE(size === 148 ? 1 : 2, 0)
  return m
}

t.test('cookie round trip: CookieChecker -> CookieGenerator -> mac2 verifies', async t => {
  const checker = new CookieChecker(responderPublic)
  const generator = new CookieGenerator(responderPublic)
  const first = message()
  generator.addMacs(first, 0)
  t.ok(verifyMac1(first, mac1Key(responderPublic)))
  t.same(first.subarray(132), Buffer.alloc(16), 'no cookie yet: mac2 zero')
  t.notOk(checker.verifyMac2(first, source, 0))

  const reply = checker.createReply(first, 0x01020304, source, 0)
  t.equal(reply.length, 64)
  t.equal(reply.readUInt32LE(0), 3)
  t.equal(reply.readUInt32LE(4), 0x01020304)
  t.ok(generator.consumeReply(reply, 10))

  const second = message(92)
  generator.addMacs(second, 20)
  t.ok(verifyMac1(second, mac1Key(responderPublic)))
  t.ok(checker.verifyMac2(second, source, 30))
  t.notOk(checker.verifyMac2(second, Buffer.from([198, 18, 0, 3, 0xca, 0x6c]), 30), 'other source address')
  const bad = Buffer.from(second); bad[91] ^= 1
  t.notOk(checker.verifyMac2(bad, source, 30), 'tampered mac2')
})

t.test('a reply only authenticates against the mac1 of our last message and our peer key', async t => {
  const checker = new CookieChecker(responderPublic)
  const generator = new CookieGenerator(responderPublic)
  const reply0 = checker.createReply(message(), 1, source, 0)
  t.notOk(generator.consumeReply(reply0, 0), 'nothing sent yet')
  const sent = message()
  generator.addMacs(sent, 0)
  t.notOk(generator.consumeReply(reply0, 0), 'reply for another message')
  const reply = checker.createReply(sent, 1, source, 0)
  t.notOk(new CookieGenerator(randomBytes(32)).consumeReply(reply, 0), 'other peer key')
  const tampered = Buffer.from(reply); tampered[40] ^= 1
  t.notOk(generator.consumeReply(tampered, 0), 'tampered reply')
  t.notOk(generator.consumeReply(reply.subarray(0, 63), 0), 'short reply')
  t.ok(generator.consumeReply(reply, 0))
})

t.test('the initiator drops its cookie after COOKIE_REFRESH_TIME', async t => {
  const checker = new CookieChecker(responderPublic)
  const generator = new CookieGenerator(responderPublic)
  const sent = message(); generator.addMacs(sent, 1000)
  t.ok(generator.consumeReply(checker.createReply(sent, 1, source, 1000), 1000))
  const fresh = message(); generator.addMacs(fresh, 1000 + COOKIE_REFRESH_TIME - 1)
  t.notSame(fresh.subarray(132), Buffer.alloc(16))
  const stale = message(); generator.addMacs(stale, 1000 + COOKIE_REFRESH_TIME)
  t.same(stale.subarray(132), Buffer.alloc(16))
})

t.test('secret rotation every 120 s: old cookies survive one rotation, not two', async t => {
  const checker = new CookieChecker(responderPublic)
  const generator = new CookieGenerator(responderPublic)
  const sent = message(); generator.addMacs(sent, 0)
  t.ok(generator.consumeReply(checker.createReply(sent, 1, source, 0), 0))
  const withCookie = message(); generator.addMacs(withCookie, 5000)

  t.ok(checker.verifyMac2(withCookie, source, COOKIE_REFRESH_TIME - 1), 'same secret')
  t.ok(checker.verifyMac2(withCookie, source, COOKIE_REFRESH_TIME + 10), 'after one rotation: previous secret')
  t.notOk(checker.verifyMac2(withCookie, source, 2 * COOKIE_REFRESH_TIME + 20), 'after two rotations')

  // The same when the checker sees no traffic in between: a jump of two periods forgets both secrets.
  const idle = new CookieChecker(responderPublic)
  const g2 = new CookieGenerator(responderPublic)
  const s2 = message(); g2.addMacs(s2, 0)
  t.ok(g2.consumeReply(idle.createReply(s2, 1, source, 0), 0))
  const m2 = message(); g2.addMacs(m2, 1)
  t.notOk(idle.verifyMac2(m2, source, 2 * COOKIE_REFRESH_TIME), 'two periods later')
})
