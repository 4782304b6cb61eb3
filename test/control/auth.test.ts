// Bearer authentication on the API: every malformed, forged or misused token is 401 in the spec's shape.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { SignJWT } from 'jose'
import type { TokenKeys } from '../../control/services/keys.ts'
import { TOKEN_KIND } from '../../control/services/tokens.ts'
import { assertError, bearer, forEachDatabase, signUp, startApp } from './harness.ts'

const keys: TokenKeys = { access: randomBytes(32), refresh: randomBytes(32), instance: randomBytes(32) }
const ISSUER = 'erugo-cloud-connect'

function b64 (value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url')
}

async function forge (claims: Record<string, unknown>, options: { key?: Uint8Array, typ?: string, aud?: string, iss?: string, exp?: number } = {}): Promise<string> {
  const now = Math.floor(Date.now() / 1000)
  return await new SignJWT(claims)
    .setProtectedHeader({ alg: 'HS256', typ: options.typ ?? TOKEN_KIND.access.typ })
    .setIssuer(options.iss ?? ISSUER)
    .setAudience(options.aud ?? TOKEN_KIND.access.audience)
    .setJti('forged')
    .setIssuedAt(now)
    .setExpirationTime(options.exp ?? now + 600)
    .sign(options.key ?? keys.access)
}

await forEachDatabase(t, async (t, db) => {
  const h = await startApp(t, db, { deps: { keys } })
  const login = await signUp(h, 'bearer@example.com')
  const sub = login.user.id
  const good = await h.request('GET', '/v1/user', undefined, bearer(login.access_token))
  t.equal(good.status, 200, 'control: the real access token works')
  t.equal((await h.request('GET', '/v1/user', undefined, bearer(await forge({ sub, sv: 0 })))).status, 200, 'control: a token forged with the right key and claims works, so the rejections below are about the one thing changed')

  t.test('garbage Authorization headers', async t => {
    const headers = [
      'Bearer', 'Bearer ', 'Bearer  ', 'Basic dXNlcjpwYXNz', `Token ${login.access_token}`, `${login.access_token}`,
      'Bearer a b', 'Bearer ...', 'Bearer a.b.c', 'Bearer \u00ff\u00fe', 'Bearer %00', 'Bearer eyJ', `Bearer ${login.access_token}x`,
      `Bearer ${login.access_token.slice(0, -2)}`, 'Bearer ' + 'A'.repeat(4100), `Bearer ${login.access_token},Bearer ${login.access_token}`,
    ]
    for (const value of headers) {
      assertError(t, await h.request('GET', '/v1/user', undefined, { authorization: value }), 'UNAUTHORIZED', JSON.stringify(value.slice(0, 30)))
    }
    const missing = await h.request('GET', '/v1/user')
    assertError(t, missing, 'UNAUTHORIZED', 'no header')
    t.equal(missing.headers['www-authenticate'], 'Bearer', 'RFC 6750 3: challenge on a missing token')
  })

  t.test('a 64 KB token', async t => {
    const huge = 'A'.repeat(64 * 1024)
    assertError(t, await h.request('GET', '/v1/user', undefined, { authorization: `Bearer ${huge}` }), 'UNAUTHORIZED', 'as bearer')
    const jwtShaped = `${b64({ alg: 'HS256', typ: 'at+jwt' })}.${'B'.repeat(64 * 1024)}.sig`
    assertError(t, await h.request('GET', '/v1/user', undefined, { authorization: `Bearer ${jwtShaped}` }), 'UNAUTHORIZED', 'JWT-shaped as bearer')
    assertError(t, await h.request('POST', '/v1/auth/refresh', { refresh_token: jwtShaped }), 'UNAUTHORIZED', 'as refresh token')
  })

  t.test('alg none and algorithm substitution', async t => {
    const now = Math.floor(Date.now() / 1000)
    const claims = { iss: ISSUER, aud: TOKEN_KIND.access.audience, sub, sv: 0, jti: 'x', iat: now, exp: now + 600 }
    for (const header of [{ alg: 'none', typ: 'at+jwt' }, { alg: 'None', typ: 'at+jwt' }, { alg: 'none' }]) {
      const token = `${b64(header)}.${b64(claims)}.`
      assertError(t, await h.request('GET', '/v1/user', undefined, bearer(token)), 'UNAUTHORIZED', `alg ${header.alg}`)
    }
    // HS512 with the right key: not the pinned algorithm.
    const hs512 = await new SignJWT({ sv: 0 }).setProtectedHeader({ alg: 'HS512', typ: 'at+jwt' }).setIssuer(ISSUER)
      .setAudience(TOKEN_KIND.access.audience).setSubject(sub).setJti('x').setIssuedAt().setExpirationTime('10m').sign(new Uint8Array(Buffer.concat([keys.access, keys.access])))
    assertError(t, await h.request('GET', '/v1/user', undefined, bearer(hs512)), 'UNAUTHORIZED', 'HS512')
  })

  t.test('tampered payload', async t => {
    const [header, payload, signature] = login.access_token.split('.')
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString())
    claims.sub = 'usr_AAAAAAAAAAAAAAAAAAAAAA'
    assertError(t, await h.request('GET', '/v1/user', undefined, bearer(`${header}.${b64(claims)}.${signature}`)), 'UNAUTHORIZED')
  })

  t.test('wrong audience, issuer, typ or key', async t => {
    const cases: Array<[string, Parameters<typeof forge>[1]]> = [
      ['refresh audience', { aud: TOKEN_KIND.refresh.audience }],
      ['instance audience', { aud: TOKEN_KIND.instance.audience }],
      ['foreign audience', { aud: 'someone-else' }],
      ['wrong issuer', { iss: 'https://evil.example.net' }],
      ['refresh typ', { typ: TOKEN_KIND.refresh.typ }],
      ['plain JWT typ', { typ: 'JWT' }],
      ['refresh key', { key: keys.refresh }],
      ['instance key', { key: keys.instance }],
      ['random key', { key: randomBytes(32) }],
      ['expired', { exp: Math.floor(Date.now() / 1000) - 10 }],
    ]
    for (const [label, options] of cases) {
      assertError(t, await h.request('GET', '/v1/user', undefined, bearer(await forge({ sub, sv: 0 }, options))), 'UNAUTHORIZED', label)
    }
    assertError(t, await h.request('GET', '/v1/user', undefined, bearer(await forge({ sub, sv: 1 }))), 'UNAUTHORIZED', 'stale session version')
    assertError(t, await h.request('GET', '/v1/user', undefined, bearer(await forge({ sub }))), 'UNAUTHORIZED', 'no session version')
    assertError(t, await h.request('GET', '/v1/user', undefined, bearer(await forge({ sub: 'usr_AAAAAAAAAAAAAAAAAAAAAA', sv: 0 }))), 'UNAUTHORIZED', 'no such user')
  })

  t.test('token kinds are not interchangeable', async t => {
    assertError(t, await h.request('GET', '/v1/user', undefined, bearer(login.refresh_token)), 'UNAUTHORIZED', 'refresh token as bearer')
    assertError(t, await h.request('POST', '/v1/auth/refresh', { refresh_token: login.access_token }), 'UNAUTHORIZED', 'access token as refresh')
    const instance = await h.services.tokens.signInstance('inst_AAAAAAAAAAAAAAAAAAAAAA', sub)
    assertError(t, await h.request('GET', '/v1/user', undefined, bearer(instance.token)), 'UNAUTHORIZED', 'instance token as bearer')
    assertError(t, await h.request('POST', '/v1/auth/refresh', { refresh_token: instance.token }), 'UNAUTHORIZED', 'instance token as refresh')
    // A refresh-shaped token with the right key but never issued (not in the store).
    const unissued = await forge({ sub, fam: 'rtf_x' }, { key: keys.refresh, typ: TOKEN_KIND.refresh.typ, aud: TOKEN_KIND.refresh.audience })
    assertError(t, await h.request('POST', '/v1/auth/refresh', { refresh_token: unissued }), 'UNAUTHORIZED', 'unissued refresh token')
    t.equal((await h.request('POST', '/v1/auth/refresh', { refresh_token: login.refresh_token })).status, 200, 'the real refresh token still works after all that')
  })

  t.test('deleted account: its tokens stop working', async t => {
    const other = await signUp(h, 'deleted@example.com')
    await db('users').where({ id: other.user.id }).delete()
    assertError(t, await h.request('GET', '/v1/user', undefined, bearer(other.access_token)), 'UNAUTHORIZED', 'access')
    assertError(t, await h.request('POST', '/v1/auth/refresh', { refresh_token: other.refresh_token }), 'UNAUTHORIZED', 'refresh')
  })
})
