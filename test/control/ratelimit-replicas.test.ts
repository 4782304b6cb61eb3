// Rate limits with several control replicas on one Postgres: the buckets live in the database
// (services/ratelimit-postgres.ts), so requests spread over replicas are limited as one.
import t from 'tap'
import pino from 'pino'
import type { RateLimitRule } from '../../control/config.ts'
import { RateLimiter } from '../../control/services/ratelimit.ts'
import { PostgresRateLimiter } from '../../control/services/ratelimit-postgres.ts'
import { assertError, openTestDatabase, signUp, startApp } from './harness.ts'
import { postgresOrSkip } from '../helpers/postgres.ts'

const silent = pino({ level: 'silent' })

if (await postgresOrSkip(t, 'shared rate limits', 'shared rate limits need a real Postgres server') !== undefined) {
  const LOGIN_DEFAULTS = { CC_RATE_LOGIN_FAILURES_PER_ADDRESS: '5/1', CC_RATE_LOGIN_FAILURES_PER_ACCOUNT: '50/5' }

  t.test('two replicas failed logins from one address alternate replicas -> limited at the single-replica count', async t => {
    const db = await openTestDatabase(t, 'postgres')
    const replicas = [await startApp(t, db, { env: LOGIN_DEFAULTS }), await startApp(t, db, { env: LOGIN_DEFAULTS })]
    await signUp(replicas[0], 'owner@example.com')
    const attacker = { 'x-test-ip': '203.0.113.66' }
    const statuses: number[] = []
    for (let i = 0; i < 12; i++) {
      const res = await replicas[i % 2].request('POST', '/v1/auth/login', { email: 'owner@example.com', password: `guess number ${i}` }, attacker)
      statuses.push(res.status)
    }
    t.same(statuses, [...Array(5).fill(401), ...Array(7).fill(429)], 'the fifth failure, on whichever replica, is the last one let through')
    const limited = await replicas[1].request('POST', '/v1/auth/login', { email: 'owner@example.com', password: 'correct horse battery' }, attacker)
    assertError(t, limited, 'RATE_LIMITED', 'the guessing address is blocked on both replicas')
    t.equal(limited.headers['retry-after'], '60')
    const owner = await replicas[0].request('POST', '/v1/auth/login', { email: 'owner@example.com', password: 'correct horse battery' }, { 'x-test-ip': '198.51.100.20' })
    t.equal(owner.status, 200, 'the owner from another address signs in')
  })

  t.test('two replicas concurrent requests on one bucket -> exactly burst let through', async t => {
    const db = await openTestDatabase(t, 'postgres')
    const env = { CC_RATE_AUTH_PER_IP: '6/1' }
    const replicas = [await startApp(t, db, { env }), await startApp(t, db, { env })]
    const ip = { 'x-test-ip': '203.0.113.80' }
    const statuses = await Promise.all(Array.from({ length: 20 }, async (_, i) =>
      (await replicas[i % 2].request('POST', '/v1/auth/forgot-password', { email: `x${i}@example.com` }, ip)).status))
    t.equal(statuses.filter(s => s === 200).length, 6, 'six answered')
    t.equal(statuses.filter(s => s === 429).length, 14, 'the rest limited')
  })

  t.test('shared buckets answer as the in-memory ones for the same sequence and clock', async t => {
    const db = await openTestDatabase(t, 'postgres')
    let now = 1_000_000
    const shared = new PostgresRateLimiter({ db, now: () => now, logger: silent })
    const local = new RateLimiter({ now: () => now })
    const rule: RateLimitRule = { burst: 3, perMinute: 2 }
    const trace = async (store: RateLimiter | PostgresRateLimiter, key: string): Promise<unknown[]> => {
      const out: unknown[] = []
      now = 1_000_000
      for (let i = 0; i < 5; i++) out.push(await store.take(key, rule))
      await store.charge(key, rule)
      await store.charge(key, rule)
      out.push(await store.peek(key, rule))
      now += 45_000
      out.push(await store.peek(key, rule))
      await store.refund(key, rule)
      out.push(await store.take(key, rule))
      now += 120_000
      out.push(await store.take(key, rule), await store.take(key, rule))
      await store.forget(key)
      out.push(await store.peek(key, rule), await store.take(key, rule))
      out.push(await store.peek('never-seen', rule))
      return out
    }
    const expected = await trace(local, 'k')
    t.same(await trace(shared, 'k'), expected, 'same verdicts and Retry-After values')
    t.ok(expected.some(r => (r as { allowed: boolean }).allowed === false), 'the sequence does hit the limit')

    now += 10 * 60_000
    t.equal(await shared.sweep(), 1, 'a bucket full again by now is swept')
    t.equal((await db('rate_limit_buckets').count({ n: '*' }))[0].n, '0')
  })

  t.test('database unreachable -> limits fall back to this process and the database is tried again later', async t => {
    const db = await openTestDatabase(t, 'postgres')
    let now = 5_000_000
    const shared = new PostgresRateLimiter({ db, now: () => now, logger: silent, fallbackMs: 1_000 })
    const rule: RateLimitRule = { burst: 2, perMinute: 1 }
    await db.schema.renameTable('rate_limit_buckets', 'rate_limit_buckets_away')
    const verdicts = [await shared.take('k', rule), await shared.take('k', rule), await shared.take('k', rule)]
    t.same(verdicts.map(v => v.allowed), [true, true, false], 'still limited, by the local buckets')
    await db.schema.renameTable('rate_limit_buckets_away', 'rate_limit_buckets')
    now += 2_000
    t.equal((await shared.take('k2', rule)).allowed, true)
    t.equal((await db('rate_limit_buckets').where({ key: 'k2' })).length, 1, 'back on the shared table after fallbackMs')
  })
}
