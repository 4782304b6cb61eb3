// Rate limits through the API: 429 RATE_LIMITED with Retry-After, per IP, per account and per token.
import t from 'tap'
import type { Request } from '@hapi/hapi'
import { clientIp } from '../../control/ratelimit.ts'
import { assertError, bearer, openTestDatabase, PASSWORD, registration, signUp, startApp } from './harness.ts'

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

t.test('auth endpoints: an IPv6 client is limited by its /64, an IPv4 client whatever form the dual-stack socket gives it', async t => {
  const h = await startApp(t, db, { env: { CC_RATE_AUTH_PER_IP: '3/1' } })
  const forgot = async (ip: string): Promise<Awaited<ReturnType<typeof h.request>>> =>
    await h.request('POST', '/v1/auth/forgot-password', { email: 'someone@example.com' }, { 'x-test-ip': ip })
  for (const ip of ['2001:db8:0:1::1', '2001:db8:0:1::2', '2001:db8:0:1:ffff::3']) t.equal((await forgot(ip)).status, 200, ip)
  assertError(t, await forgot('2001:db8:0:1:abcd::9'), 'RATE_LIMITED', 'a fourth address of the same /64 shares its budget')
  t.equal((await forgot('2001:db8:0:2::1')).status, 200, 'another /64 is another client')
  for (const ip of ['198.51.100.20', '::ffff:198.51.100.20', '198.51.100.20']) t.equal((await forgot(ip)).status, 200, ip)
  assertError(t, await forgot('::ffff:198.51.100.20'), 'RATE_LIMITED', 'an IPv4 client and its mapped form are one client')
})

t.test('auth endpoints: refresh and logout are outside the sign-in budget (a dashboard page load is a cookie refresh)', async t => {
  const h = await startApp(t, db, { env: { CC_RATE_AUTH_PER_IP: '3/1', CC_RATE_PER_IP: '100/100' } })
  const ip = { 'x-test-ip': '203.0.113.9' }
  await signUp(h, 'reloader@example.com')
  let refresh = (await h.request('POST', '/v1/auth/login', { email: 'reloader@example.com', password: PASSWORD }, ip)).body.refresh_token as string
  for (let i = 0; i < 10; i++) {
    const res = await h.request('POST', '/v1/auth/refresh', { refresh_token: refresh }, ip)
    t.equal(res.status, 200, `refresh ${i + 1} of 10 from one address`)
    refresh = res.body.refresh_token
  }
  t.equal((await h.request('POST', '/v1/auth/logout', { refresh_token: refresh }, ip)).status, 204, 'logout too')
  const login = async (): Promise<Awaited<ReturnType<typeof h.request>>> => await h.request('POST', '/v1/auth/login', { email: 'reloader@example.com', password: PASSWORD }, ip)
  t.equal((await login()).status, 200, 'the sign-in budget is untouched by them: 2 of 3 left')
  t.equal((await login()).status, 200)
  assertError(t, await login(), 'RATE_LIMITED', 'and it still holds for sign-in')
})

t.test('auth endpoints: per account across IPs', async t => {
  const h = await startApp(t, db, { env: { CC_RATE_LOGIN_FAILURES_PER_ACCOUNT: '2/1' } })
  const attempt = async (ip: string, email: string): Promise<number> =>
    (await h.request('POST', '/v1/auth/login', { email, password: 'wrong password' }, { 'x-test-ip': ip })).status
  t.equal(await attempt('198.51.100.1', 'victim@example.com'), 401)
  t.equal(await attempt('198.51.100.2', 'Victim@example.com'), 401)
  const res = await h.request('POST', '/v1/auth/login', { email: ' VICTIM@example.com', password: 'wrong password' }, { 'x-test-ip': '198.51.100.3' })
  assertError(t, res, 'RATE_LIMITED', 'third guess at the same account from a third IP')
  t.ok(Number(res.headers['retry-after']) >= 1)
  t.equal(await attempt('198.51.100.3', 'other@example.com'), 401, 'other accounts unaffected')
})

/** The shipped defaults of the sign-in limits (the harness raises every limit). */
const LOGIN_DEFAULTS = { CC_RATE_LOGIN_FAILURES_PER_ADDRESS: '5/1', CC_RATE_LOGIN_FAILURES_PER_ACCOUNT: '50/5' }

t.test('login: wrong passwords from one address do not lock the owner out elsewhere', async t => {
  const h = await startApp(t, db, { env: LOGIN_DEFAULTS })
  await signUp(h, 'owner@example.com')
  const attacker = { 'x-test-ip': '203.0.113.66' }
  const statuses: number[] = []
  let lastCountedSent = 0
  for (let i = 0; i < 20; i++) {
    if (i === 4) lastCountedSent = Date.now()
    statuses.push((await h.request('POST', '/v1/auth/login', { email: 'owner@example.com', password: `guess number ${i}` }, attacker)).status)
  }
  t.same(statuses, [...Array(5).fill(401), ...Array(15).fill(429)], 'the guessing address is stopped after 5 failures')

  const owner = await h.request('POST', '/v1/auth/login', { email: 'owner@example.com', password: PASSWORD }, { 'x-test-ip': '198.51.100.20' })
  t.equal(owner.status, 200, 'the right password from another address signs in')
  t.type(owner.body.access_token, 'string')

  const stillBlocked = await h.request('POST', '/v1/auth/login', { email: 'owner@example.com', password: PASSWORD }, attacker)
  assertError(t, stillBlocked, 'RATE_LIMITED', 'the guessing address stays blocked, even with the right password')
  // The bucket refills from the fifth failure on: Retry-After is the rest of that minute.
  const elapsed = Math.ceil((Date.now() - lastCountedSent) / 1000)
  const retryAfter = Number(stillBlocked.headers['retry-after'])
  t.ok(retryAfter <= 60 && retryAfter >= 60 - elapsed, `one more failure allowed per minute (Retry-After ${retryAfter} s, ${elapsed} s after the fifth failure)`)

  const reset = await h.request('POST', '/v1/auth/forgot-password', { email: 'owner@example.com' }, attacker)
  t.equal(reset.status, 200, 'password reset is not held back by sign-in failures')
  await h.services.mailer.drain()
  t.equal(h.mail.to('owner@example.com').filter(m => /Reset/.test(m.subject)).length, 1, 'the reset mail leaves')
})

t.test('login: failures from one IPv6 /64 count as one address', async t => {
  const h = await startApp(t, db, { env: LOGIN_DEFAULTS })
  await signUp(h, 'six@example.com')
  const guess = async (ip: string, i: number): Promise<number> =>
    (await h.request('POST', '/v1/auth/login', { email: 'six@example.com', password: `guess number ${i}` }, { 'x-test-ip': ip })).status
  const statuses: number[] = []
  for (let i = 0; i < 8; i++) statuses.push(await guess(`2001:db8:66::${(i + 1).toString(16)}`, i))
  t.same(statuses, [401, 401, 401, 401, 401, 429, 429, 429], 'five guesses per /64, however many addresses it uses')
})

t.test('login: a success clears its address\'s failures, only failures count', async t => {
  const h = await startApp(t, db, { env: LOGIN_DEFAULTS })
  await signUp(h, 'typo@example.com')
  const ip = { 'x-test-ip': '198.51.100.30' }
  const login = async (password: string): Promise<number> => (await h.request('POST', '/v1/auth/login', { email: 'typo@example.com', password }, ip)).status
  for (let i = 0; i < 4; i++) t.equal(await login('a typo'), 401)
  for (let i = 0; i < 10; i++) t.equal(await login(PASSWORD), 200, `successful sign-in ${i + 1} is not counted`)
  for (let i = 0; i < 5; i++) t.equal(await login('a typo'), 401, `failure ${i + 1} after a success: the earlier ones were forgotten`)
  assertError(t, await h.request('POST', '/v1/auth/login', { email: 'typo@example.com', password: 'a typo' }, ip), 'RATE_LIMITED')
})

t.test('login: guessing from many addresses meets the per-account ceiling', async t => {
  const h = await startApp(t, db, { env: { CC_RATE_LOGIN_FAILURES_PER_ADDRESS: '2/1', CC_RATE_LOGIN_FAILURES_PER_ACCOUNT: '10/1' } })
  await signUp(h, 'target@example.com')
  await signUp(h, 'bystander@example.com')
  const statuses: number[] = []
  for (let i = 0; i < 8; i++) {
    for (let j = 0; j < 2; j++) {
      statuses.push((await h.request('POST', '/v1/auth/login', { email: 'target@example.com', password: `guess ${i}.${j}` }, { 'x-test-ip': `192.0.2.${i + 1}` })).status)
    }
  }
  t.same(statuses, [...Array(10).fill(401), ...Array(6).fill(429)], '10 failures in all, then every address is refused')
  const late = await h.request('POST', '/v1/auth/login', { email: 'target@example.com', password: 'guess 9' }, { 'x-test-ip': '192.0.2.99' })
  assertError(t, late, 'RATE_LIMITED', 'a fresh address is refused too')
  t.equal(late.headers['retry-after'], '60')
  t.equal((await h.request('POST', '/v1/auth/login', { email: 'bystander@example.com', password: PASSWORD }, { 'x-test-ip': '192.0.2.1' })).status, 200, 'other accounts unaffected')
  t.equal((await h.request('POST', '/v1/auth/forgot-password', { email: 'target@example.com' }, { 'x-test-ip': '192.0.2.1' })).status, 200, 'the owner can still reset the password')
})

t.test('mail routes: one bucket per account and route', async t => {
  const h = await startApp(t, db, { env: { CC_RATE_MAIL_PER_ACCOUNT: '2/1' } })
  const forgot = async (ip: string): Promise<number> => (await h.request('POST', '/v1/auth/forgot-password', { email: 'mailbox@example.com' }, { 'x-test-ip': ip })).status
  t.equal(await forgot('198.51.100.41'), 200)
  t.equal(await forgot('198.51.100.42'), 200)
  const limited = await h.request('POST', '/v1/auth/forgot-password', { email: 'MailBox@example.com' }, { 'x-test-ip': '198.51.100.43' })
  assertError(t, limited, 'RATE_LIMITED', 'third reset mail for one account, from any address')
  t.equal(limited.headers['retry-after'], '60')
  t.equal((await h.request('POST', '/v1/auth/resend-verification', { email: 'mailbox@example.com' })).status, 200, 'resend-verification has its own bucket')
  t.equal((await h.request('POST', '/v1/auth/forgot-password', { email: 'other@example.com' })).status, 200, 'other accounts unaffected')

  const h2 = await startApp(t, db, { env: { CC_RATE_MAIL_PER_ACCOUNT: '2/1', CC_RATE_LOGIN_FAILURES_PER_ACCOUNT: '1/1' } })
  for (let i = 0; i < 3; i++) await h2.request('POST', '/v1/auth/login', { email: 'mailbox@example.com', password: 'wrong password' }, { 'x-test-ip': `198.51.100.${50 + i}` })
  for (let i = 0; i < 2; i++) await h2.request('POST', '/v1/auth/register', registration('mailbox@example.com'))
  t.equal((await h2.request('POST', '/v1/auth/forgot-password', { email: 'mailbox@example.com' })).status, 200, 'sign-in failures and sign-ups leave the reset bucket alone')
})

t.test('bearer failures: limited per address before the token is looked up', async t => {
  const h = await startApp(t, db, { env: { CC_RATE_AUTH_FAILURES_PER_IP: '5/1' } })
  const login = await signUp(h, 'stale@example.com')
  // A correctly signed token of a session that has ended: verifying it costs a database lookup.
  await h.services.db('users').where({ email: 'stale@example.com' }).increment('session_version', 1)
  let lookups = 0
  const findById = h.services.accounts.findById.bind(h.services.accounts)
  h.services.accounts.findById = async (...args) => { lookups++; return await findById(...args) }

  const attacker = { 'x-test-ip': '203.0.113.99' }
  const tokens = [login.access_token, 'garbage', 'eyJhbGciOiJub25lIn0.e30.', login.access_token, 'x'.repeat(300)]
  for (const token of tokens) assertError(t, await h.request('GET', '/v1/user', undefined, { ...bearer(token), ...attacker }), 'UNAUTHORIZED')
  t.equal(lookups, 2, 'the two well-signed tokens were looked up')
  for (let i = 0; i < 20; i++) {
    const res = await h.request(i % 2 === 0 ? 'GET' : 'POST', i % 2 === 0 ? '/v1/user' : '/v1/instances', undefined, { ...bearer(i % 3 === 0 ? login.access_token : `junk${i}`), ...attacker })
    assertError(t, res, 'RATE_LIMITED', `request ${i + 6} from the failing address`)
    t.equal(res.headers['retry-after'], '60')
  }
  t.equal(lookups, 2, 'no lookup once the address is over its limit')
  assertError(t, await h.request('GET', '/v1/user', undefined, { authorization: 'Basic abc', ...attacker }), 'RATE_LIMITED', 'any Authorization header')

  const other = { 'x-test-ip': '198.51.100.77' }
  assertError(t, await h.request('GET', '/v1/user', undefined, { ...bearer('garbage'), ...other }), 'UNAUTHORIZED', 'another address is unaffected')
  const fresh = await signUp(h, 'fresh@example.com')
  t.equal((await h.request('GET', '/v1/user', undefined, { ...bearer(fresh.access_token), ...other })).status, 200)
  for (let i = 0; i < 30; i++) {
    if ((await h.request('GET', '/v1/user', undefined, { ...bearer(fresh.access_token), ...other })).status !== 200) t.fail(`valid request ${i} refused`)
  }
  t.pass('successful authentications are not counted')
})

t.test('public routes: an Authorization header does not escape the per-IP limit', async t => {
  const h = await startApp(t, db, { env: { CC_RATE_PER_IP: '2/1' } })
  const ip = { 'x-test-ip': '192.0.2.210', ...bearer('anything') }
  t.equal((await h.request('GET', '/health', undefined, ip)).status, 200)
  t.equal((await h.request('GET', '/v1/openapi.json', undefined, ip)).status, 200)
  assertError(t, await h.request('GET', '/health', undefined, ip), 'RATE_LIMITED')
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

t.test('dashboard pages and files: their own per-address bucket, so page loads never spend the API\'s', async t => {
  const h = await startApp(t, db, { env: { CC_RATE_PER_IP: '3/1', CC_RATE_STATIC_PER_IP: '30/1' } })
  const ip = { 'x-test-ip': '203.0.113.40' }
  // Ten page loads' worth of shells and files (a real load asks for a dozen files).
  for (let i = 0; i < 10; i++) {
    t.equal((await h.request('GET', '/sign-in', undefined, ip)).status, 200, `shell ${i + 1}`)
    t.equal((await h.request('GET', '/assets/app.js', undefined, ip)).status, 200, `file ${i + 1}`)
  }
  for (let i = 0; i < 3; i++) t.equal((await h.request('GET', '/health', undefined, ip)).status, 200, `API request ${i + 1} of 3 still allowed`)
  assertError(t, await h.request('GET', '/health', undefined, ip), 'RATE_LIMITED', 'the API\'s per-address limit is its own')
  for (let i = 0; i < 10; i++) t.equal((await h.request('GET', '/assets/app.css', undefined, ip)).status, 200, `file ${i + 11}, with the API bucket empty`)
  const limited = await h.request('GET', '/assets/app.js', undefined, ip)
  assertError(t, limited, 'RATE_LIMITED', 'past CC_RATE_STATIC_PER_IP')
  t.ok(Number(limited.headers['retry-after']) > 0, 'with Retry-After')
  t.equal((await h.request('GET', '/assets/app.js', undefined, { 'x-test-ip': '203.0.113.41' })).status, 200, 'another address is unaffected')
})

t.test('client IP behind trusted proxies', async t => {
  const fake = (remoteAddress: string, xff?: string): Request => ({ info: { remoteAddress }, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } }) as unknown as Request
  t.equal(clientIp(fake('10.0.0.1', '1.1.1.1'), 0), '10.0.0.1', 'no trusted proxy: the header is ignored')
  t.equal(clientIp(fake('10.0.0.1', 'spoofed, 1.1.1.1'), 1), '1.1.1.1', 'one proxy: its appended entry')
  t.equal(clientIp(fake('10.0.0.1', 'spoofed, 1.1.1.1, 10.0.0.2'), 2), '1.1.1.1', 'two proxies')
  t.equal(clientIp(fake('10.0.0.1'), 1), '10.0.0.1', 'header missing')
})

t.test('CC_TRUSTED_PROXIES: a client that is not a trusted peer cannot spoof X-Forwarded-For', async t => {
  const h = await startApp(t, db, { env: { CC_RATE_AUTH_PER_IP: '2/1', CC_TRUSTED_PROXIES: '127.0.0.0/8,::1' } })
  const forgot = async (peer: string, xff: string): Promise<number> =>
    (await h.request('POST', '/v1/auth/forgot-password', { email: 'a@example.com' }, { 'x-test-ip': peer, 'x-forwarded-for': xff })).status
  // A direct client: every request claims another address, all count against its own.
  t.equal(await forgot('203.0.113.50', '198.51.100.1'), 200)
  t.equal(await forgot('203.0.113.50', '198.51.100.2'), 200)
  t.equal(await forgot('203.0.113.50', '198.51.100.3'), 429, 'limited on its socket address, whatever it claims')
  // Through the trusted proxy (loopback, as the edge in `start`): the forwarded client counts.
  t.equal(await forgot('127.0.0.1', '198.51.100.1'), 200)
  t.equal(await forgot('127.0.0.1', '198.51.100.1'), 200)
  t.equal(await forgot('127.0.0.1', '198.51.100.1'), 429, 'the forwarded client is limited')
  t.equal(await forgot('127.0.0.1', '198.51.100.9'), 200, 'another client behind the same proxy is not')
  // A client prepending a fake hop through the proxy: the hop the proxy saw is the client.
  t.equal(await forgot('127.0.0.1', '198.51.100.9, 198.51.100.1'), 429, 'the rightmost untrusted hop, not the claimed one')
})

t.test('client IP with CC_TRUSTED_PROXIES: first untrusted hop from the right', async t => {
  const { parseTrustedProxies } = await import('../../control/trusted-proxies.ts')
  const trustedProxies = parseTrustedProxies('10.0.0.0/8, ::1, 192.0.2.7')
  const trust = { trustProxyHops: 0, trustedProxies }
  const fake = (remoteAddress: string, xff?: string): Request => ({ info: { remoteAddress }, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } }) as unknown as Request
  t.equal(clientIp(fake('203.0.113.1', '1.1.1.1'), trust), '203.0.113.1', 'an untrusted peer: the header is ignored')
  t.equal(clientIp(fake('10.1.2.3', 'spoofed, 1.1.1.1'), trust), '1.1.1.1', 'a trusted peer: its entry')
  t.equal(clientIp(fake('::ffff:10.0.0.1', 'spoofed, 1.1.1.1, 10.0.0.2, 192.0.2.7'), trust), '1.1.1.1', 'trusted hops skipped (IPv4-mapped peer too)')
  t.equal(clientIp(fake('::1', '10.0.0.9, 10.0.0.2'), trust), '10.0.0.9', 'all trusted: the leftmost')
  t.equal(clientIp(fake('::1'), trust), '::1', 'header missing')
  t.equal(clientIp(fake('192.0.2.8', '1.1.1.1'), trust), '192.0.2.8', 'a single address is not a network')
})
