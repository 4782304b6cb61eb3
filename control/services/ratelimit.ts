/**
 * In-memory token buckets keyed by string ("ip:1.2.3.4", "account:a@b.c", "token:usr_..."). A
 * bucket holds at most `burst` tokens and refills at `perMinute`; a request takes one. State is
 * per process and bounded: full buckets carry no information and are dropped, and past `maxKeys`
 * the oldest keys go first. On Postgres, control uses the same buckets kept in the database
 * (services/ratelimit-postgres.ts), so replicas limit as one; this one serves PGlite (a single
 * process by construction) and stands in while the database is unreachable.
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

/** The limiter the rate-limit plugin uses: these buckets in memory, or shared ones in Postgres. */
export interface RateLimitStore {
  /** Takes a token if there is one. */
  take: (key: string, rule: RateLimitRule) => TakeResult | Promise<TakeResult>
  /** Whether `take` would succeed, without taking anything. */
  peek: (key: string, rule: RateLimitRule) => TakeResult | Promise<TakeResult>
  /** Counts an event already let through, down to -burst. */
  charge: (key: string, rule: RateLimitRule) => void | Promise<void>
  /** Gives back a token taken for something that turned out not to count. */
  refund: (key: string, rule: RateLimitRule) => void | Promise<void>
  /** Forgets a key: its bucket is full again. */
  forget: (key: string) => void | Promise<void>
}

const ALLOWED: TakeResult = Object.freeze({ allowed: true, retryAfterSeconds: 0 })

function denied (bucket: Bucket, rule: RateLimitRule): TakeResult {
  const ratePerMs = rule.perMinute / 60_000
  return { allowed: false, retryAfterSeconds: Math.max(1, Math.ceil((1 - bucket.tokens) / ratePerMs / 1000)) }
}

export class RateLimiter implements RateLimitStore {
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

  /** Takes a token if there is one. */
  take (key: string, rule: RateLimitRule): TakeResult {
    const bucket = this.#refilled(key, rule)
    if (bucket.tokens >= 1) {
      bucket.tokens -= 1
      return ALLOWED
    }
    return denied(bucket, rule)
  }

  /** Whether `take` would succeed, without taking anything (an unknown key stays unknown). */
  peek (key: string, rule: RateLimitRule): TakeResult {
    if (!this.#buckets.has(key)) return ALLOWED
    const bucket = this.#refilled(key, rule)
    return bucket.tokens >= 1 ? ALLOWED : denied(bucket, rule)
  }

  /**
   * Counts an event already let through (a failure found after `peek`): takes a token even from an
   * empty bucket, down to `-burst`, so failures that raced past the check extend the wait instead
   * of going unpaid.
   */
  charge (key: string, rule: RateLimitRule): void {
    const bucket = this.#refilled(key, rule)
    bucket.tokens = Math.max(-rule.burst, bucket.tokens - 1)
  }

  /** Gives back a token taken for something that turned out not to count. */
  refund (key: string, rule: RateLimitRule): void {
    const bucket = this.#buckets.get(key)
    if (bucket !== undefined) bucket.tokens = Math.min(rule.burst, bucket.tokens + 1)
  }

  /** Forgets a key: its bucket is full again. */
  forget (key: string): void {
    this.#buckets.delete(key)
  }

  /** The key's bucket, refilled up to now and moved to the most recently used end. */
  #refilled (key: string, rule: RateLimitRule): Bucket {
    const now = this.#now()
    let bucket = this.#buckets.get(key)
    if (bucket === undefined) {
      bucket = { tokens: rule.burst, updatedAt: now }
    } else {
      this.#buckets.delete(key) // re-inserted below: Map order becomes least-recently-used first
      bucket.tokens = Math.min(rule.burst, bucket.tokens + Math.max(0, now - bucket.updatedAt) * rule.perMinute / 60_000)
      bucket.updatedAt = now
    }
    this.#buckets.set(key, bucket)
    this.#evict(now)
    return bucket
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
