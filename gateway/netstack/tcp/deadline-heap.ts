/**
 * Indexed binary min-heap of items keyed by a deadline, so a stack with many connections keeps one
 * timer armed for the earliest of them. Each item stores its own position (heapIndex, -1 when out).
 */
export interface HeapItem {
  heapIndex: number
  heapKey: number
}

export class DeadlineHeap<T extends HeapItem> {
  private readonly items: T[] = []

  get size (): number {
    return this.items.length
  }

  peek (): T | undefined {
    return this.items[0]
  }

  /** Earliest key, Infinity when empty. */
  get minKey (): number {
    return this.items.length > 0 ? this.items[0].heapKey : Infinity
  }

  /** Inserts, moves or (with key Infinity) removes `item`. */
  set (item: T, key: number): void {
    if (key === Infinity) {
      this.remove(item)
      return
    }
    if (item.heapIndex < 0) {
      item.heapKey = key
      item.heapIndex = this.items.length
      this.items.push(item)
      this.up(item.heapIndex)
      return
    }
    const old = item.heapKey
    item.heapKey = key
    if (key < old) this.up(item.heapIndex)
    else if (key > old) this.down(item.heapIndex)
  }

  remove (item: T): void {
    const i = item.heapIndex
    if (i < 0) return
    const last = this.items.pop()!
    item.heapIndex = -1
    item.heapKey = Infinity
    if (last === item) return
    this.items[i] = last
    last.heapIndex = i
    this.up(i)
    this.down(last.heapIndex)
  }

  private up (i: number): void {
    const items = this.items
    const item = items[i]
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (items[parent].heapKey <= item.heapKey) break
      items[i] = items[parent]
      items[i].heapIndex = i
      i = parent
    }
    items[i] = item
    item.heapIndex = i
  }

  private down (i: number): void {
    const items = this.items
    const n = items.length
    const item = items[i]
    while (true) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      const child = r < n && items[r].heapKey < items[l].heapKey ? r : l
      if (items[child].heapKey >= item.heapKey) break
      items[i] = items[child]
      items[i].heapIndex = i
      i = child
    }
    items[i] = item
    item.heapIndex = i
  }
}
