/**
 * Orders per time per ACME account (Let's Encrypt: 300 new orders per account per 3 hours). A
 * sliding window: an order beyond the budget is not placed; the caller learns when a slot frees
 * and retries then, so 1,000 new hostnames are paced over hours instead of tripping the CA's limit.
 */
export interface OrderBudgetOptions {
  /** Orders allowed per window (default 300, LE's new-orders limit). */
  limit?: number
  /** Window length (default 3 h). */
  windowMs?: number
  now?: () => number
}

export class OrderBudget {
  readonly limit: number
  readonly windowMs: number
  private readonly now: () => number
  private readonly placed: number[] = []

  constructor (options: OrderBudgetOptions = {}) {
    this.limit = options.limit ?? 300
    this.windowMs = options.windowMs ?? 3 * 3_600_000
    this.now = options.now ?? Date.now
    if (!(this.limit >= 1) || !(this.windowMs > 0)) throw new Error('order budget needs limit >= 1 and windowMs > 0')
  }

  /** Take one slot: 0 when taken, else the ms until one frees (nothing taken). */
  take (): number {
    const now = this.now()
    while (this.placed.length > 0 && this.placed[0]! <= now - this.windowMs) this.placed.shift()
    if (this.placed.length < this.limit) {
      this.placed.push(now)
      return 0
    }
    return this.placed[0]! + this.windowMs - now
  }

  /** Orders counted in the current window. */
  used (): number {
    const now = this.now()
    return this.placed.filter(t => t > now - this.windowMs).length
  }
}
