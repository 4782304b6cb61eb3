import t from 'tap'
import { RateLimiter } from '../../../control/services/ratelimit.ts'

t.test('token bucket: burst, refill, retry-after', async t => {
  let now = 0
  const limiter = new RateLimiter({ now: () => now })
  const rule = { burst: 3, perMinute: 6 } // one token every 10 s
  t.same([1, 2, 3].map(() => limiter.take('k', rule).allowed), [true, true, true], 'burst of 3')
  const denied = limiter.take('k', rule)
  t.equal(denied.allowed, false)
  t.equal(denied.retryAfterSeconds, 10)
  now = 4_000
  t.equal(limiter.take('k', rule).retryAfterSeconds, 6, 'retry-after shrinks as time passes')
  now = 10_000
  t.equal(limiter.take('k', rule).allowed, true, 'one token back after 10 s')
  t.equal(limiter.take('k', rule).allowed, false)
  now = 1_000_000
  t.same([1, 2, 3, 4].map(() => limiter.take('k', rule).allowed), [true, true, true, false], 'refill stops at the burst size')
  t.equal(limiter.take('other', rule).allowed, true, 'keys are independent')
})

t.test('memory stays bounded', async t => {
  let now = 0
  const limiter = new RateLimiter({ now: () => now, maxKeys: 100 })
  const rule = { burst: 1, perMinute: 1 }
  for (let i = 0; i < 1000; i++) limiter.take(`ip:${i}`, rule)
  t.equal(limiter.size, 100, 'capped at maxKeys')
  t.equal(limiter.take('ip:999', rule).allowed, false, 'recent keys kept')
  now = 2 * 3_600_000
  for (let i = 0; i < 1024; i++) limiter.take('hot', { burst: 100000, perMinute: 100000 })
  t.ok(limiter.size < 100, `idle buckets swept (${limiter.size} left)`)
})

t.test('peek, charge, refund, forget', async t => {
  let now = 0
  const limiter = new RateLimiter({ now: () => now })
  const rule = { burst: 2, perMinute: 6 } // one token every 10 s
  t.same(limiter.peek('k', rule), { allowed: true, retryAfterSeconds: 0 }, 'an unknown key is full')
  t.equal(limiter.size, 0, 'peeking creates nothing')
  limiter.charge('k', rule)
  limiter.charge('k', rule)
  t.same(limiter.peek('k', rule), { allowed: false, retryAfterSeconds: 10 }, 'two charges empty the bucket')
  t.equal(limiter.peek('k', rule).allowed, false, 'peeking takes nothing')
  limiter.charge('k', rule)
  limiter.charge('k', rule)
  limiter.charge('k', rule)
  t.equal(limiter.peek('k', rule).retryAfterSeconds, 30, 'charges past empty are debt, floored at -burst')
  now = 30_000
  t.equal(limiter.peek('k', rule).allowed, true, 'the debt is paid by refill')
  t.equal(limiter.take('k', rule).allowed, true)
  t.equal(limiter.take('k', rule).allowed, false)
  limiter.refund('k', rule)
  t.equal(limiter.take('k', rule).allowed, true, 'a refunded token can be taken again')
  for (let i = 0; i < 5; i++) limiter.refund('k', rule)
  t.same([1, 2, 3].map(() => limiter.take('k', rule).allowed), [true, true, false], 'refunds stop at the burst size')
  limiter.forget('k')
  t.same([1, 2, 3].map(() => limiter.take('k', rule).allowed), [true, true, false], 'a forgotten key starts full')
})
