import t from 'tap'
import { Backoff } from '../../agent/backoff.ts'

t.test('ceilings double up to the maximum; waits sit between half and all of the ceiling', async t => {
  const low = new Backoff({ initialMs: 100, maxMs: 1_000, random: () => 0 })
  t.same([1, 2, 3, 4, 5, 6].map(() => low.next()), [50, 100, 200, 400, 500, 500])
  const high = new Backoff({ initialMs: 100, maxMs: 1_000, random: () => 0.999999 })
  t.same([1, 2, 3, 4, 5].map(() => high.next()), [100, 200, 400, 800, 1_000])
})

t.test('reset starts over; jitter spreads waits', async t => {
  const b = new Backoff({ initialMs: 100, maxMs: 10_000 })
  for (let i = 0; i < 5; i++) b.next()
  t.equal(b.attempts, 5)
  b.reset()
  t.equal(b.attempts, 0)
  const first = b.next()
  t.ok(first >= 50 && first <= 100)
  const waits = new Set(Array.from({ length: 50 }, () => new Backoff({ initialMs: 1_000, maxMs: 1_000 }).next()))
  t.ok(waits.size > 10, 'agents do not retry in lockstep')
})

t.test('bad settings are refused', async t => {
  t.throws(() => new Backoff({ initialMs: 0, maxMs: 10 }), RangeError)
  t.throws(() => new Backoff({ initialMs: 100, maxMs: 10 }), RangeError)
})
