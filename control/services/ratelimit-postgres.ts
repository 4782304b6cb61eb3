/**
 * The rate limiter shared by control replicas on one Postgres: the same token buckets as
 * services/ratelimit.ts (same keys, rules and answers), kept in `rate_limit_buckets`, each change
 * one atomic statement (an upsert computes refill, take and verdict from the stored row under its
 * row lock), so concurrent requests on any replica draw from one bucket. A row past `expires_ms`
 * is certainly full again and is swept (jobs/periodic.ts runs `sweep`).
 *
 * While the database fails, limits fall back to this process's in-memory buckets for `fallbackMs`
 * before the database is tried again: requests that need the database fail anyway, and those that
 * do not (health, static pages) stay limited without waiting on a dead connection each time.
 */
import type { Logger } from 'pino'
import type { RateLimitRule } from '../config.ts'
import type { Db } from '../db/knex.ts'
import { isDatabaseUnavailable } from '../errors.ts'
import { RateLimiter, type RateLimitStore, type TakeResult } from './ratelimit.ts'

interface BucketRow { tokens: number | string, allowed: boolean }

/** Bound a bucket refills within from its lowest point (-burst, see `charge`) to full. */
function expiresAt (now: number, rule: RateLimitRule): number {
  const ratePerMs = rule.perMinute / 60_000
  return ratePerMs > 0 ? now + Math.ceil(2 * Math.max(1, rule.burst) / ratePerMs) : now + 86_400_000
}

function verdict (tokens: number, allowed: boolean, rule: RateLimitRule): TakeResult {
  if (allowed) return { allowed: true, retryAfterSeconds: 0 }
  const ratePerMs = rule.perMinute / 60_000
  return { allowed: false, retryAfterSeconds: ratePerMs > 0 ? Math.max(1, Math.ceil((1 - tokens) / ratePerMs / 1000)) : 86_400 }
}

/** The stored bucket refilled up to `:now` (SQL over the existing row `b`). */
const REFILLED = 'least(cast(:burst as float8), b.tokens + greatest(0, cast(:now as bigint) - b.updated_ms) * cast(:rate as float8))'

export class PostgresRateLimiter implements RateLimitStore {
  readonly #db: Db
  readonly #now: () => number
  readonly #logger: Logger
  readonly #fallback: RateLimiter
  readonly #fallbackMs: number
  #sharedAgainAt = 0

  constructor (options: { db: Db, now?: () => number, logger: Logger, fallbackMs?: number }) {
    this.#db = options.db
    this.#now = options.now ?? (() => Date.now())
    this.#logger = options.logger
    this.#fallback = new RateLimiter({ now: this.#now })
    this.#fallbackMs = options.fallbackMs ?? 5_000
  }

  async take (key: string, rule: RateLimitRule): Promise<TakeResult> {
    return await this.#shared(async () => {
      const row = await this.#upsert(key, rule, `
        allowed = ${REFILLED} >= 1,
        tokens = case when ${REFILLED} >= 1 then ${REFILLED} - 1 else ${REFILLED} end`)
      return verdict(Number(row.tokens), row.allowed, rule)
    }, () => this.#fallback.take(key, rule))
  }

  async peek (key: string, rule: RateLimitRule): Promise<TakeResult> {
    return await this.#shared(async () => {
      const row = await this.#db('rate_limit_buckets').where({ key }).first('tokens', 'updated_ms') as { tokens: number | string, updated_ms: number | string } | undefined
      if (row === undefined) return { allowed: true, retryAfterSeconds: 0 }
      const tokens = Math.min(rule.burst, Number(row.tokens) + Math.max(0, this.#now() - Number(row.updated_ms)) * rule.perMinute / 60_000)
      return verdict(tokens, tokens >= 1, rule)
    }, () => this.#fallback.peek(key, rule))
  }

  /** As RateLimiter.charge: takes a token even from an empty bucket, down to -burst. */
  async charge (key: string, rule: RateLimitRule): Promise<void> {
    await this.#shared(async () => {
      await this.#upsert(key, rule, `allowed = false, tokens = greatest(-cast(:burst as float8), ${REFILLED} - 1)`)
    }, () => { this.#fallback.charge(key, rule) })
  }

  async refund (key: string, rule: RateLimitRule): Promise<void> {
    await this.#shared(async () => {
      await this.#db('rate_limit_buckets').where({ key }).update({ tokens: this.#db.raw('least(?, tokens + 1)', [rule.burst]) })
    }, () => { this.#fallback.refund(key, rule) })
  }

  async forget (key: string): Promise<void> {
    await this.#shared(async () => {
      await this.#db('rate_limit_buckets').where({ key }).delete()
    }, () => { this.#fallback.forget(key) })
  }

  /** Deletes buckets that are full again by now; returns how many. */
  async sweep (): Promise<number> {
    const rows = await this.#db('rate_limit_buckets').where('expires_ms', '<', this.#now()).delete().returning('key') as unknown[]
    return rows.length
  }

  /** A new key starts full and takes one token (a fresh bucket always has one: burst >= 1). */
  async #upsert (key: string, rule: RateLimitRule, onConflict: string): Promise<BucketRow> {
    const now = this.#now()
    const result = await this.#db.raw(`
      insert into rate_limit_buckets as b (key, tokens, updated_ms, expires_ms, allowed)
      values (:key, :fresh, :now, :expires, :freshAllowed)
      on conflict (key) do update set ${onConflict}, updated_ms = excluded.updated_ms, expires_ms = excluded.expires_ms
      returning tokens, allowed`, {
      key,
      burst: rule.burst,
      rate: rule.perMinute / 60_000,
      now,
      expires: expiresAt(now, rule),
      fresh: rule.burst >= 1 ? rule.burst - 1 : rule.burst,
      freshAllowed: rule.burst >= 1,
    }) as { rows: BucketRow[] }
    return result.rows[0]
  }

  async #shared<T> (body: () => Promise<T>, local: () => T): Promise<T> {
    if (this.#now() < this.#sharedAgainAt) return local()
    try {
      return await body()
    } catch (err) {
      this.#sharedAgainAt = this.#now() + this.#fallbackMs
      const level = isDatabaseUnavailable(err) ? 'warn' : 'error'
      this.#logger[level]({ err: (err as Error).message, fallbackMs: this.#fallbackMs }, 'shared rate limits unavailable: limiting in this process for now')
      return local()
    }
  }
}
