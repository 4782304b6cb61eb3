import t from 'tap'
import { DeadlineHeap, type HeapItem } from '../../../../gateway/netstack/tcp/deadline-heap.ts'

t.test('keeps the minimum through inserts, moves and removals', async t => {
  const heap = new DeadlineHeap<HeapItem & { id: number }>()
  const items = Array.from({ length: 200 }, (_, id) => ({ id, heapIndex: -1, heapKey: Infinity }))
  let seed = 7
  const rnd = () => (seed = (seed * 16807) % 2147483647) / 2147483647
  const keys = new Map<number, number>()
  for (let round = 0; round < 5000; round++) {
    const item = items[Math.floor(rnd() * items.length)]
    const key = rnd() < 0.2 ? Infinity : Math.floor(rnd() * 1000)
    heap.set(item, key)
    if (key === Infinity) keys.delete(item.id)
    else keys.set(item.id, key)
    const expected = keys.size === 0 ? Infinity : Math.min(...keys.values())
    if (heap.minKey !== expected) {
      t.fail(`round ${round}: min ${heap.minKey} expected ${expected}`)
      return
    }
  }
  t.equal(heap.size, keys.size)
  for (const item of items) heap.remove(item)
  t.equal(heap.size, 0)
  t.equal(heap.minKey, Infinity)
})
