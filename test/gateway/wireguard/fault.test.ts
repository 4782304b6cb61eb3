/** The seeded datagram fault injector used by the UDP shell (gateway/netstack/fault.ts). */
import t from 'tap'
import { FaultInjector, SeededRandom } from '../../../gateway/netstack/fault.ts'

function run (config: ConstructorParameters<typeof FaultInjector>[1], n = 1000): { out: number[], inj: FaultInjector<number> } {
  const out: number[] = []
  const inj = new FaultInjector<number>(x => { out.push(x) }, config)
  for (let i = 0; i < n; i++) inj.push(i, i)
  inj.poll(Infinity)
  return { out, inj }
}

t.test('off by default: everything passes at once, in order', async t => {
  const out: number[] = []
  const inj = new FaultInjector<number>(x => { out.push(x) })
  t.equal(inj.enabled, false)
  for (let i = 0; i < 5; i++) inj.push(i, 0)
  t.same(out, [0, 1, 2, 3, 4])
  t.equal(inj.nextDeadline(), Infinity)
})

t.test('drop: about the configured share, reproducible from the seed', async t => {
  const a = run({ seed: 42, drop: 0.1 })
  const b = run({ seed: 42, drop: 0.1 })
  const c = run({ seed: 43, drop: 0.1 })
  t.ok(a.out.length > 850 && a.out.length < 950, `${a.out.length} of 1000 passed`)
  t.equal(a.inj.stats.dropped, 1000 - a.out.length)
  t.same(a.out, b.out, 'same seed, same faults')
  t.notSame(a.out, c.out, 'other seed, other faults')
})

t.test('duplicate: copies made with the clone function', async t => {
  const out: Array<{ v: number }> = []
  const inj = new FaultInjector<{ v: number }>(x => { out.push(x) }, { seed: 1, duplicate: 1 }, x => ({ v: x.v }))
  const item = { v: 7 }
  inj.push(item, 0)
  t.equal(out.length, 2)
  t.equal(out[0], item)
  t.not(out[1], item, 'second copy is a clone')
  t.same(out[1], item)
})

t.test('reorder: held items come right after their successor, none lost', async t => {
  const { out, inj } = run({ seed: 5, reorder: 0.2 }, 200)
  t.equal(out.length, 200)
  t.same([...out].sort((x, y) => x - y), Array.from({ length: 200 }, (_, i) => i))
  let swaps = 0
  for (let i = 1; i < out.length; i++) if (out[i] < out[i - 1]) swaps++
  t.ok(swaps > 10, `${swaps} swaps`)
  t.equal(inj.stats.reordered, swaps)
})

t.test('reorder: a held item with no successor is released after a short hold', async t => {
  const out: number[] = []
  const inj = new FaultInjector<number>(x => { out.push(x) }, { seed: 1, reorder: 1 })
  inj.push(1, 100)
  t.same(out, [])
  t.ok(inj.nextDeadline() > 100 && inj.nextDeadline() < 200)
  inj.poll(inj.nextDeadline())
  t.same(out, [1])
})

t.test('delay: items wait delayMs (plus jitter) and keep order without jitter', async t => {
  const out: Array<[number, number]> = []
  let now = 0
  const inj = new FaultInjector<number>(x => { out.push([x, now]) }, { delayMs: 30 })
  for (let i = 0; i < 3; i++) inj.push(i, i * 10)
  t.same(out, [])
  t.equal(inj.nextDeadline(), 30)
  for (now = 0; now <= 100; now++) inj.poll(now)
  t.same(out, [[0, 30], [1, 40], [2, 50]])

  const jittered: number[] = []
  const j = new FaultInjector<number>(x => { jittered.push(x) }, { seed: 9, delayMs: 5, jitterMs: 50 })
  for (let i = 0; i < 50; i++) j.push(i, i)
  j.poll(Infinity)
  t.equal(jittered.length, 50)
  t.notSame(jittered, [...jittered].sort((x, y) => x - y), 'jitter reorders')
})

t.test('SeededRandom: uniform-ish in [0, 1)', async t => {
  const r = new SeededRandom(123)
  let sum = 0
  for (let i = 0; i < 10_000; i++) {
    const x = r.next()
    if (x < 0 || x >= 1) t.fail(`out of range: ${x}`)
    sum += x
  }
  t.ok(Math.abs(sum / 10_000 - 0.5) < 0.02)
})
