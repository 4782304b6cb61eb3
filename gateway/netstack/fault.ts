/**
 * Seeded fault injector for a datagram link (after smoltcp's phy/fault_injector.rs): drops,
 * duplicates, reorders and delays items. Sans-IO: `push` with the current time, `poll` when
 * `nextDeadline()` is due. Off by default; the same seed and inputs give the same faults.
 */

export interface FaultConfig {
  /** PRNG seed; equal seeds replay equal fault sequences. */
  seed?: number
  /** Probability in [0, 1] that an item is dropped. */
  drop?: number
  /** Probability that an item is delivered twice. */
  duplicate?: number
  /** Probability that an item is held back and delivered after the next one. */
  reorder?: number
  /** Fixed delay added to every item, in ms. */
  delayMs?: number
  /** Extra uniform random delay in [0, jitterMs), in ms (reorders items too). */
  jitterMs?: number
}

export interface FaultStats { passed: number, dropped: number, duplicated: number, reordered: number, delayed: number }

/** Small seeded PRNG (32-bit state, splitmix-style mixing); not for cryptography. */
export class SeededRandom {
  private state: number

  constructor (seed: number) {
    this.state = seed >>> 0
  }

  /** Uniform in [0, 1). */
  next (): number {
    this.state = (this.state + 0x9e3779b9) >>> 0
    let z = this.state
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b)
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35)
    z = (z ^ (z >>> 16)) >>> 0
    return z / 0x1_0000_0000
  }
}

interface Scheduled<T> { item: T, due: number }

/** How long a reordered item waits for a successor before it is released anyway. */
const REORDER_HOLD_MS = 5

export class FaultInjector<T> {
  readonly stats: FaultStats = { passed: 0, dropped: 0, duplicated: 0, reordered: 0, delayed: 0 }
  private config: Required<FaultConfig> = { seed: 1, drop: 0, duplicate: 0, reorder: 0, delayMs: 0, jitterMs: 0 }
  private random = new SeededRandom(1)
  private readonly queue: Scheduled<T>[] = []
  private held: Scheduled<T> | null = null
  private readonly deliver: (item: T) => void
  private readonly clone: (item: T) => T

  /**
   * `clone` makes the second copy of a duplicated item; pass a deep copy when the receiver mutates
   * items in place (WireGuard decrypts datagrams in place).
   */
  constructor (deliver: (item: T) => void, config: FaultConfig = {}, clone: (item: T) => T = item => item) {
    this.deliver = deliver
    this.clone = clone
    this.configure(config)
  }

  /** Replaces the fault settings (and reseeds). Items already held keep their schedule. */
  configure (config: FaultConfig): void {
    this.config = {
      seed: config.seed ?? 1,
      drop: config.drop ?? 0,
      duplicate: config.duplicate ?? 0,
      reorder: config.reorder ?? 0,
      delayMs: config.delayMs ?? 0,
      jitterMs: config.jitterMs ?? 0,
    }
    this.random = new SeededRandom(this.config.seed)
  }

  /** True when any fault is configured; callers may bypass the injector entirely otherwise. */
  get enabled (): boolean {
    const c = this.config
    return c.drop > 0 || c.duplicate > 0 || c.reorder > 0 || c.delayMs > 0 || c.jitterMs > 0
  }

  push (item: T, now: number): void {
    const c = this.config
    if (c.drop > 0 && this.random.next() < c.drop) {
      this.stats.dropped++
      return
    }
    const copies = c.duplicate > 0 && this.random.next() < c.duplicate ? 2 : 1
    if (copies === 2) this.stats.duplicated++
    for (let i = 0; i < copies; i++) {
      if (i === 1) item = this.clone(item)
      if (c.reorder > 0 && this.held === null && this.random.next() < c.reorder) {
        this.stats.reordered++
        this.held = { item, due: now + this.delay() + REORDER_HOLD_MS }
        continue
      }
      this.schedule(item, now + this.delay(), now)
      if (this.held !== null) {
        // Released right behind its successor: the pair arrives swapped.
        const held = this.held
        this.held = null
        this.schedule(held.item, Math.max(now + this.delay(), this.lastDue()), now)
      }
    }
  }

  /** Delivers every item due at `now`. */
  poll (now: number): void {
    while (this.queue.length > 0 && this.queue[0].due <= now) this.emit(this.queue.shift()!.item)
    if (this.held !== null && this.held.due <= now) {
      const held = this.held
      this.held = null
      this.emit(held.item)
    }
  }

  nextDeadline (): number {
    let deadline = this.queue.length > 0 ? this.queue[0].due : Infinity
    if (this.held !== null && this.held.due < deadline) deadline = this.held.due
    return deadline
  }

  /** Items currently held back (delayed or waiting to be reordered). */
  get pending (): number {
    return this.queue.length + (this.held === null ? 0 : 1)
  }

  private delay (): number {
    const c = this.config
    return c.delayMs + (c.jitterMs > 0 ? this.random.next() * c.jitterMs : 0)
  }

  private lastDue (): number {
    return this.queue.length > 0 ? this.queue[this.queue.length - 1].due : -Infinity
  }

  private schedule (item: T, due: number, now: number): void {
    if (due <= now && this.queue.length === 0) {
      this.emit(item)
      return
    }
    this.stats.delayed++
    // Stable sorted insert: equal due times keep arrival order.
    let i = this.queue.length
    while (i > 0 && this.queue[i - 1].due > due) i--
    this.queue.splice(i, 0, { item, due })
  }

  private emit (item: T): void {
    this.stats.passed++
    this.deliver(item)
  }
}
