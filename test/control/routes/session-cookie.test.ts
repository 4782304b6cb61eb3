// The dashboard's cookie session: cc_refresh on login/refresh in cookie mode, the Origin check on
// cookie-sourced refresh and logout, reuse detection through the cookie, sign out everywhere.
import t from 'tap'
import { assertError, bearer, forEachDatabase, PASSWORD, signUp, startApp, type Reply, type TestApp } from '../harness.ts'

const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/
const ORIGIN = 'https://api.example.test' // CC_PUBLIC_URL in the harness
const COOKIE_MODE = { 'x-cc-session': 'cookie' }
const REFRESH_TTL = 7 * 24 * 3600

function setCookie (res: Reply): string {
  const header = res.headers['set-cookie']
  const list = Array.isArray(header) ? header : header === undefined ? [] : [header]
  if (list.length !== 1) throw new Error(`expected one Set-Cookie, got ${JSON.stringify(header)}`)
  return list[0]
}

function cookieToken (res: Reply): string {
  const match = /^cc_refresh=([^;]*);/.exec(setCookie(res))
  if (match === null) throw new Error(`not a cc_refresh cookie: ${setCookie(res)}`)
  return match[1]
}

async function cookieLogin (h: TestApp, email: string): Promise<{ access: string, cookie: string, res: Reply }> {
  await signUp(h, email)
  const res = await h.request('POST', '/v1/auth/login', { email, password: PASSWORD }, COOKIE_MODE)
  if (res.status !== 200) throw new Error(`cookie login: ${res.status} ${res.raw}`)
  return { access: res.body.access_token, cookie: cookieToken(res), res }
}

function cookieRequest (cookie: string, extra: Record<string, string> = { origin: ORIGIN }): Record<string, string> {
  return { cookie: `other=1; cc_refresh=${cookie}; theme=dark`, ...extra }
}

await forEachDatabase(t, async (t, db) => {
  t.test('login in cookie mode: the cookie with exact attributes, no refresh_token in the body', async t => {
    const h = await startApp(t, db)
    const { res, cookie } = await cookieLogin(h, 'cookie-login@example.com')
    t.match(cookie, JWT)
    t.equal(setCookie(res), `cc_refresh=${cookie}; HttpOnly; Secure; SameSite=Strict; Path=/v1/auth; Max-Age=${REFRESH_TTL}`)
    t.same(Object.keys(res.body).sort(), ['access_token', 'expires_in', 'token_type', 'user'])
    const plain = await h.request('POST', '/v1/auth/login', { email: 'cookie-login@example.com', password: PASSWORD })
    t.type(plain.body.refresh_token, 'string', 'without the header: refresh_token in the body as before')
    t.equal(plain.headers['set-cookie'], undefined, 'and no cookie')
  })

  t.test('cookie refresh with same Origin: rotates the cookie; the spent cookie revokes the family', async t => {
    const h = await startApp(t, db)
    const { cookie } = await cookieLogin(h, 'cookie-rotate@example.com')
    const first = await h.request('POST', '/v1/auth/refresh', undefined, cookieRequest(cookie))
    t.equal(first.status, 200, first.raw)
    t.same(Object.keys(first.body).sort(), ['access_token', 'expires_in', 'token_type'])
    const next = cookieToken(first)
    t.not(next, cookie, 'rotated')
    t.equal(setCookie(first), `cc_refresh=${next}; HttpOnly; Secure; SameSite=Strict; Path=/v1/auth; Max-Age=${REFRESH_TTL}`)
    t.equal((await h.request('GET', '/v1/user', undefined, bearer(first.body.access_token))).status, 200, 'new access token works')

    const empty = await h.request('POST', '/v1/auth/refresh', {}, cookieRequest(next))
    t.equal(empty.status, 200, '{} body refreshes from the cookie too')
    const third = cookieToken(empty)

    const reused = await h.request('POST', '/v1/auth/refresh', undefined, cookieRequest(cookie))
    assertError(t, reused, 'UNAUTHORIZED', 'spent cookie')
    t.equal(setCookie(reused), 'cc_refresh=; HttpOnly; Secure; SameSite=Strict; Path=/v1/auth; Max-Age=0', 'dead cookie cleared')
    assertError(t, await h.request('POST', '/v1/auth/refresh', undefined, cookieRequest(third)), 'UNAUTHORIZED', 'latest cookie revoked with its family')
  })

  t.test('cookie refresh: the request\'s own origin is accepted (Host), a trusted proxy\'s forwarded host too', async t => {
    const h = await startApp(t, db)
    const { cookie } = await cookieLogin(h, 'cookie-host@example.com')
    const own = await h.request('POST', '/v1/auth/refresh', undefined, cookieRequest(cookie, { host: 'localhost:8080', origin: 'http://localhost:8080' }))
    t.equal(own.status, 200, own.raw)
    const p = await startApp(t, db, { env: { CC_TRUST_PROXY_HOPS: '1' } })
    const proxied = await cookieLogin(p, 'cookie-proxied@example.com')
    const viaProxy = await p.request('POST', '/v1/auth/refresh', undefined, cookieRequest(proxied.cookie, {
      host: '127.0.0.1:3000', 'x-forwarded-host': 'app.localhost:8443', 'x-forwarded-proto': 'https', origin: 'https://app.localhost:8443',
    }))
    t.equal(viaProxy.status, 200, viaProxy.raw)
    const wrongScheme = await p.request('POST', '/v1/auth/refresh', undefined, cookieRequest(cookieToken(viaProxy), {
      host: '127.0.0.1:3000', 'x-forwarded-host': 'app.localhost:8443', 'x-forwarded-proto': 'https', origin: 'http://app.localhost:8443',
    }))
    assertError(t, wrongScheme, 'FORBIDDEN', 'http origin for an https request')
    const untrusted = await h.request('POST', '/v1/auth/refresh', undefined, cookieRequest(cookieToken(viaProxy), {
      host: 'localhost:8080', 'x-forwarded-host': 'evil.example.net', origin: 'https://evil.example.net',
    }))
    assertError(t, untrusted, 'FORBIDDEN', 'X-Forwarded-Host ignored without a trusted proxy')
  })

  t.test('cookie refresh from another origin, without Origin, or with Origin null: 403, cookie untouched', async t => {
    const h = await startApp(t, db)
    const { cookie } = await cookieLogin(h, 'cookie-csrf@example.com')
    const cases: Array<[string, Record<string, string>]> = [
      ['sibling subdomain', { origin: 'https://evil.example.test' }],
      ['other site', { origin: 'https://attacker.example.net' }],
      ['missing Origin', {}],
      ['opaque origin', { origin: 'null' }],
      ['garbage', { origin: 'not a url' }],
      ['same host, other port', { host: 'localhost:8080', origin: 'http://localhost:9999' }],
      ['origin with a path', { origin: `${ORIGIN}/x` }],
    ]
    for (const [name, headers] of cases) {
      const res = await h.request('POST', '/v1/auth/refresh', undefined, cookieRequest(cookie, headers))
      assertError(t, res, 'FORBIDDEN', name)
      t.equal(res.headers['set-cookie'], undefined, `${name}: no cookie change`)
      assertError(t, await h.request('POST', '/v1/auth/logout', undefined, cookieRequest(cookie, headers)), 'FORBIDDEN', `${name} logout`)
    }
    const ok = await h.request('POST', '/v1/auth/refresh', undefined, cookieRequest(cookie))
    t.equal(ok.status, 200, 'the refused attempts neither spent nor revoked the cookie')
  })

  t.test('cookie refresh without a cookie, with a garbled one, or with two: 401', async t => {
    const h = await startApp(t, db)
    const { cookie } = await cookieLogin(h, 'cookie-missing@example.com')
    assertError(t, await h.request('POST', '/v1/auth/refresh', undefined, { origin: ORIGIN }), 'UNAUTHORIZED', 'no cookie')
    assertError(t, await h.request('POST', '/v1/auth/refresh', undefined, { origin: ORIGIN, cookie: 'cc_refresh=%%%;' }), 'UNAUTHORIZED', 'garbled')
    const tossed = await h.request('POST', '/v1/auth/refresh', undefined, { origin: ORIGIN, cookie: `cc_refresh=${cookie}; cc_refresh=${cookie}` })
    assertError(t, tossed, 'UNAUTHORIZED', 'two cc_refresh cookies (one planted by a sibling subdomain)')
  })

  t.test('refresh with a body token and X-CC-Session: cookie switches to the cookie', async t => {
    const h = await startApp(t, db)
    const login = await signUp(h, 'cookie-switch@example.com')
    const res = await h.request('POST', '/v1/auth/refresh', { refresh_token: login.refresh_token }, COOKIE_MODE)
    t.equal(res.status, 200)
    t.equal(res.body.refresh_token, undefined)
    t.match(cookieToken(res), JWT)
    const plain = await h.request('POST', '/v1/auth/refresh', { refresh_token: cookieToken(res) })
    t.equal(plain.status, 200, 'body-token refresh needs no Origin (API clients)')
    t.type(plain.body.refresh_token, 'string')
  })

  t.test('logout with the cookie: revokes the sign-in and clears the cookie', async t => {
    const h = await startApp(t, db)
    const { cookie } = await cookieLogin(h, 'cookie-logout@example.com')
    const res = await h.request('POST', '/v1/auth/logout', undefined, cookieRequest(cookie))
    t.equal(res.status, 204)
    t.equal(setCookie(res), 'cc_refresh=; HttpOnly; Secure; SameSite=Strict; Path=/v1/auth; Max-Age=0')
    assertError(t, await h.request('POST', '/v1/auth/refresh', undefined, cookieRequest(cookie)), 'UNAUTHORIZED', 'signed out')
    const none = await h.request('POST', '/v1/auth/logout', {}, { origin: ORIGIN })
    t.equal(none.status, 204, 'no cookie: nothing to do, still 204')
    t.match(setCookie(none), /Max-Age=0$/)
  })

  t.test('logout-all: every sign-in of the account stops refreshing; other accounts untouched', async t => {
    const h = await startApp(t, db)
    const browser = await cookieLogin(h, 'everywhere@example.com')
    const api = await h.request('POST', '/v1/auth/login', { email: 'everywhere@example.com', password: PASSWORD })
    const other = await signUp(h, 'bystander@example.com')
    assertError(t, await h.request('POST', '/v1/auth/logout-all'), 'UNAUTHORIZED', 'needs an access token')
    const res = await h.request('POST', '/v1/auth/logout-all', undefined, bearer(api.body.access_token))
    t.equal(res.status, 204)
    t.match(setCookie(res), /^cc_refresh=; .*Max-Age=0$/)
    assertError(t, await h.request('POST', '/v1/auth/refresh', undefined, cookieRequest(browser.cookie)), 'UNAUTHORIZED', 'browser session')
    assertError(t, await h.request('POST', '/v1/auth/refresh', { refresh_token: api.body.refresh_token }), 'UNAUTHORIZED', 'API session')
    t.equal((await h.request('POST', '/v1/auth/refresh', { refresh_token: other.refresh_token })).status, 200, 'another account keeps its session')
    const fresh = await h.request('POST', '/v1/auth/login', { email: 'everywhere@example.com', password: PASSWORD })
    t.equal((await h.request('POST', '/v1/auth/refresh', { refresh_token: fresh.body.refresh_token })).status, 200, 'signing in again works')
  })

  t.test('malformed Cookie headers never give a 5xx, on any kind of route', async t => {
    const h = await startApp(t, db)
    const { access, cookie } = await cookieLogin(h, 'cookie-garbage@example.com')
    const garbage = [
      '=', ';;;', 'cc_refresh', 'cc_refresh=', '__proto__=1', 'a="unterminated', 'a=b; a=c; a=d', '\u00ff=\u00fe',
      'cc_refresh="quoted"', `cc_refresh=${'x'.repeat(8000)}`, 'x=1;'.repeat(500), 'constructor=1; hasOwnProperty=2',
    ]
    for (const header of garbage) {
      const refresh = await h.request('POST', '/v1/auth/refresh', undefined, { origin: ORIGIN, cookie: header })
      t.ok(refresh.status === 401, `refresh with ${JSON.stringify(header.slice(0, 40))}: ${refresh.status}`)
      const user = await h.request('GET', '/v1/user', undefined, { ...bearer(access), cookie: header })
      t.equal(user.status, 200, `an unrelated route ignores the cookie ${JSON.stringify(header.slice(0, 40))}`)
      const health = await h.request('GET', '/health', undefined, { cookie: header })
      t.ok(health.status < 500, 'health')
    }
    const alongside = await h.request('POST', '/v1/auth/refresh', undefined, { origin: ORIGIN, cookie: `a="bad; cc_refresh=${cookie}; \u00ff=1` })
    t.equal(alongside.status, 200, 'a good cc_refresh among broken neighbours still works')
  })
})
