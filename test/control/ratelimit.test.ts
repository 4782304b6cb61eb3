// Rate limits through the API: 429 RATE_LIMITED with Retry-After, per IP, per account and per token.
import t from 'tap'
import type { Request } from '@hapi/hapi'
import { clientIp } from '../../control/ratelimit.ts'
import { assertError, bearer, openTestDatabase, signUp, startApp } from './harness.ts'

const db = await openTestDatabase(t, 'pglite')

t.test('auth endpoints: per IP', async t => {
  const h = await startApp(t, db, { env: { CC_RATE_AUTH_PER_IP: '3/1' } })
  const ip = { 'x-test-ip': '203.0.113.7' }
  for (let i = 0; i < 3; i++) {
    t.equal((await h.request('POST', '/v1/auth/forgot-password', { email: `a${i}@example.com` }, ip)).status, 200)
  }
  const limited = await h.request('POST', '/v1/auth/login', { email: 'x@example.com', password: 'whatever1' }, ip)
  assertError(t, limited, 'RATE_LIMITED')
  t.equal(limited.headers['retry-after'], '60', 'Retry-After: one token per minute')
  t.equal(limited.body.error.details.retry_after, 60)
  t.equal((await h.request('POST', '/v1/auth/forgot-password', { email: 'a@example.com' }, { 'x-test-ip': '203.0.113.8' })).status, 200, 'another IP is unaffected')
  assertError(t, await h.request('POST', '/v1/auth/login', '{bad', { ...ip, 'content-type': 'application/json' }), 'RATE_LIMITED', 'limited before the body is even parsed')
})

t.test('auth endpoints: per account across IPs', async t => {
  const h = await startApp(t, db, { env: { CC_RATE_AUTH_PER_ACCOUNT: '2/1' } })
  const attempt = async (ip: string, email: string): Promise<number> =>
    (await h.request('POST', '/v1/auth/login', { email, password: 'wrong password' }, { 'x-test-ip': ip })).status
  t.equal(await attempt('198.51.100.1', 'victim@example.com'), 401)
  t.equal(await attempt('198.51.100.2', 'Victim@example.com'), 401)
  const res = await h.request('POST', '/v1/auth/login', { email: ' VICTIM@example.com', password: 'wrong password' }, { 'x-test-ip': '198.51.100.3' })
  assertError(t, res, 'RATE_LIMITED', 'third guess at the same account from a third IP')
  t.ok(Number(res.headers['retry-after']) >= 1)
  t.equal(await attempt('198.51.100.3', 'other@example.com'), 401, 'other accounts unaffected')
})

t.test('authenticated routes: per token; unauthenticated: per IP', async t => {
  const h = await startApp(t, db, { env: { CC_RATE_PER_TOKEN: '2/1', CC_RATE_PER_IP: '2/1' } })
  const login = await signUp(h, 'busy@example.com')
  t.equal((await h.request('GET', '/v1/user', undefined, bearer(login.access_token))).status, 200)
  t.equal((await h.request('GET', '/v1/user', undefined, bearer(login.access_token))).status, 200)
  const limited = await h.request('GET', '/v1/user', undefined, bearer(login.access_token))
  assertError(t, limited, 'RATE_LIMITED', 'third request on one token')
  t.equal(limited.headers['retry-after'], '60')
  const other = await signUp(h, 'calm@example.com')
  t.equal((await h.request('GET', '/v1/user', undefined, bearer(other.access_token))).status, 200, 'another account unaffected')

  const ip = { 'x-test-ip': '192.0.2.200' }
  t.equal((await h.request('GET', '/health', undefined, ip)).status, 200)
  t.equal((await h.request('GET', '/v1/openapi.json', undefined, ip)).status, 200)
  assertError(t, await h.request('GET', '/health', undefined, ip), 'RATE_LIMITED', 'per IP without a token')
})

t.test('client IP behind trusted proxies', async t => {
  const fake = (remoteAddress: string, xff?: string): Request => ({ info: { remoteAddress }, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } }) as unknown as Request
  t.equal(clientIp(fake('10.0.0.1', '1.1.1.1'), 0), '10.0.0.1', 'no trusted proxy: the header is ignored')
  t.equal(clientIp(fake('10.0.0.1', 'spoofed, 1.1.1.1'), 1), '1.1.1.1', 'one proxy: its appended entry')
  t.equal(clientIp(fake('10.0.0.1', 'spoofed, 1.1.1.1, 10.0.0.2'), 2), '1.1.1.1', 'two proxies')
  t.equal(clientIp(fake('10.0.0.1'), 1), '10.0.0.1', 'header missing')
})
