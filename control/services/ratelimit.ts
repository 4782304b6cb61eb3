/**
 * In-memory token buckets keyed by string ("ip:1.2.3.4", "account:a@b.c", "token:usr_..."). A
 * bucket holds at most `burst` tokens and refills at `perMinute`; a request takes one. State is
 * per process (a fleet behind a balancer multiplies the limits by its size) and bounded: full
 * buckets carry no information and are dropped, and past `maxKeys` the oldest keys go first.
 */
import type { RateLimitRule } from '../config.ts'

interface Bucket {
  tokens: number
  updatedAt: number
}

export interface TakeResult {
  allowed: boolean
  /** Whole seconds until a token is available (0 when allowed). */
  retryAfterSeconds: number
}

export class RateLimiter {
  readonly #buckets = new Map<string, Bucket>()
  readonly #now: () => number
  readonly #maxKeys: number
  #operations = 0

  constructor (options: { now?: () => number, maxKeys?: number } = {}) {
    this.#now = options.now ?? (() => Date.now())
    this.#maxKeys = options.maxKeys ?? 100_000
  }

  get size (): number {
    return this.#buckets.size
  }

  take (key: string, rule: RateLimitRule): TakeResult {
    const now = this.#now()
    const ratePerMs = rule.perMinute / 60_000
    let bucket = this.#buckets.get(key)
    if (bucket === undefined) {
      bucket = { tokens: rule.burst, updatedAt: now }
    } else {
      this.#buckets.delete(key) // re-inserted below: Map order becomes least-recently-used first
      bucket.tokens = Math.min(rule.burst, bucket.tokens + Math.max(0, now - bucket.updatedAt) * ratePerMs)
      bucket.updatedAt = now
    }
    this.#buckets.set(key, bucket)
    this.#evict(now)
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1
      return { allowed: true, retryAfterSeconds: 0 }
    }
    return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - bucket.tokens) / ratePerMs / 1000)) }
  }

  #evict (now: number): void {
    while (this.#buckets.size > this.#maxKeys) {
      const oldest = this.#buckets.keys().next().value as string
      this.#buckets.delete(oldest)
    }
    // Every so often drop buckets idle for over an hour: refilled (all our rules refill well within it).
    if (++this.#operations % 1024 === 0) {
      for (const [key, bucket] of this.#buckets) {
        if (now - bucket.updatedAt < 3_600_000) break // LRU order: the rest are fresher
        this.#buckets.delete(key)
      }
    }
  }
}
