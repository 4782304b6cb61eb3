import t from 'tap'
import { IsnGenerator } from '../../../../gateway/netstack/tcp/isn.ts'

t.test('RFC 6528: keyed by the 4-tuple, advancing with a 4-microsecond clock', async t => {
  const gen = new IsnGenerator(Buffer.alloc(32, 9))
  const [a] = gen.generate(1, 50000, 2, 80, 1000)
  const [again] = gen.generate(1, 50000, 2, 80, 1000)
  t.equal(again, a, 'deterministic for a key, tuple and time')
  const [later] = gen.generate(1, 50000, 2, 80, 1001)
  t.equal((later - a) >>> 0, 250, 'one millisecond is 250 ticks of 4 us')
  const [otherPort] = gen.generate(1, 50001, 2, 80, 1000)
  const [otherPeer] = gen.generate(1, 50000, 3, 80, 1000)
  t.not(otherPort, a)
  t.not(otherPeer, a)
  const [otherKey] = new IsnGenerator(Buffer.alloc(32, 10)).generate(1, 50000, 2, 80, 1000)
  t.not(otherKey, a, 'the secret changes everything')
  const [, ts1] = gen.generate(1, 50000, 2, 80, 1000)
  const [, ts2] = gen.generate(1, 50001, 2, 80, 1000)
  t.not(ts1, ts2, 'timestamp offsets differ per connection (RFC 7323 5.4)')
})
