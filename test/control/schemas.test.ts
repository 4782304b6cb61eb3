// The shared request string type (control/schemas.ts): control characters and lone surrogates are
// 422 VALIDATION_ERROR in every field of every route, never a 500 from the database.
import t, { type Test } from 'tap'
import type { RequestRoute } from '@hapi/hapi'
import type { Schema } from 'joi'
import { assertError, bearer, openTestDatabase, registration, type TestApp } from './harness.ts'
import { mustCreate, newUser, startInstanceApp } from './routes/tunnel-fixtures.ts'

const db = await openTestDatabase(t, 'pglite')

const HOSTILE: Array<[string, string]> = [
  ['NUL', 'Ada\u0000Lovelace'],
  ['CR LF', 'Ada\r\nBcc: victim@example.com'],
  ['LF', 'Ada\nLovelace'],
  ['tab', 'Ada\tLovelace'],
  ['DEL', 'Ada\u007fLovelace'],
  ['C1 (NEL)', 'Ada\u0085Lovelace'],
  ['ESC', '\u001b[31mAda'],
  ['trailing LF (refused before trimming)', 'Ada Lovelace\n'],
  ['lone surrogate', 'Ada\ud800Lovelace'],
]

function expectFieldRefused (t: Test, res: Awaited<ReturnType<TestApp['request']>>, field: string, label: string): void {
  assertError(t, res, 'VALIDATION_ERROR', label)
  t.same(Object.keys(res.body?.error?.details?.fields ?? {}), [field], `${label}: one details entry, for ${field}`)
  t.equal(res.body?.error?.details?.fields?.[field]?.length, 1, `${label}: one message`)
}

t.test('register, PATCH /user, PATCH /instances/{id}: control characters are 422, nothing stored', async t => {
  const h = await startInstanceApp(t, db)
  const user = await newUser(h)
  const instance = await mustCreate(t, h, user.token, 'ctrlchars')
  for (const [label, value] of HOSTILE) {
    const email = `ctl-${label.replace(/\W/g, '')}@example.com`
    expectFieldRefused(t, await h.request('POST', '/v1/auth/register', registration(email, { name: value })), 'name', `register name with ${label}`)
    t.equal(await db('users').where({ email }).first(), undefined, `register with ${label}: no account`)
    expectFieldRefused(t, await h.request('PATCH', '/v1/user', { name: value }, bearer(user.token)), 'name', `PATCH /user with ${label}`)
    expectFieldRefused(t, await h.request('PATCH', `/v1/instances/${instance.id}`, { name: value }, bearer(user.token)), 'name', `PATCH /instances name with ${label}`)
    expectFieldRefused(t, await h.request('PATCH', `/v1/instances/${instance.id}`, { subdomain: value }, bearer(user.token)), 'subdomain', `PATCH /instances subdomain with ${label}`)
  }
  const password = 'correct\u0000horse battery'
  const pw = await h.request('POST', '/v1/auth/register', registration('ctl-pw@example.com', { password, password_confirmation: password }))
  assertError(t, pw, 'VALIDATION_ERROR', 'password with NUL')
  t.same(pw.body.error.details.fields, { password: ['must not contain control characters'], password_confirmation: ['must not contain control characters'] }, 'both password fields named')
  t.equal((await db('users').where({ id: user.id }).first()).name, 'Ada Lovelace', 'profile unchanged')
  t.equal((await db('instances').where({ id: instance.id }).first()).name, 'My Erugo Server', 'instance unchanged')
  expectFieldRefused(t, await h.request('GET', '/v1/instances/inst_%00', undefined, bearer(user.token)), 'instance_id', 'NUL in a path parameter')
  expectFieldRefused(t, await h.request('GET', '/v1/auth/verify-email?token=a%0Ab'), 'token', 'LF in a query parameter')
})

t.test('printable Unicode is accepted', async t => {
  const h = await startInstanceApp(t, db)
  const name = 'Zoë Ĳssel 李小龍 😀 e\u0301 \u200d'
  const res = await h.request('POST', '/v1/auth/register', registration('unicode@example.com', { name, password: 'pässwörd 🔑 密码', password_confirmation: 'pässwörd 🔑 密码' }))
  t.equal(res.status, 201)
  t.equal(res.body.user.name, name.trim())
  t.equal((await h.request('POST', '/v1/auth/login', { email: 'unicode@example.com', password: 'pässwörd 🔑 密码' })).status, 200, 'a Unicode password signs in')
})

/** The top-level string fields of a joi object schema. */
function stringFields (schema: Schema | null | undefined): string[] {
  if (schema == null || typeof schema.describe !== 'function') return []
  const description = schema.describe() as { keys?: Record<string, { type: string }> }
  return Object.entries(description.keys ?? {}).filter(([, d]) => d.type === 'string').map(([name]) => name)
}

/** A path with every parameter given a plausible value, `override` for one of them. */
function fillPath (path: string, override?: [string, string]): string {
  return path.replace(/\{(\w+)\*?\}/g, (_, name: string) => name === override?.[0] ? override[1] : name === 'domain' ? 'files.example.com' : 'inst_0000000000000000000000')
}

t.test('every string field of every request schema refuses a NUL', async t => {
  const h = await startInstanceApp(t, db)
  const user = await newUser(h)
  const instance = await mustCreate(t, h, user.token, 'everyfield')
  const routes = h.app.table() as RequestRoute[]
  let checked = 0
  for (const route of routes) {
    const validate = route.settings.validate as { payload?: Schema, query?: Schema, params?: Schema } | undefined
    const auth = route.settings.auth as { strategies?: string[] } | false | undefined
    const headers = auth === false ? {} : bearer(auth?.strategies?.includes('instance') === true ? instance.token : user.token)
    const method = route.method.toUpperCase()
    for (const field of stringFields(validate?.params)) {
      const res = await h.request(method, fillPath(route.path, [field, 'a%00b']), method === 'GET' ? undefined : {}, headers)
      expectFieldRefused(t, res, field, `${method} ${route.path} params.${field}`)
      checked++
    }
    for (const field of stringFields(validate?.query)) {
      const res = await h.request(method, `${fillPath(route.path)}?${field}=a%00b`, undefined, headers)
      expectFieldRefused(t, res, field, `${method} ${route.path} query.${field}`)
      checked++
    }
    for (const field of stringFields(validate?.payload)) {
      const res = await h.request(method, fillPath(route.path), { [field]: 'a\u0000b' }, headers)
      assertError(t, res, 'VALIDATION_ERROR', `${method} ${route.path} payload.${field}`)
      t.same(res.body?.error?.details?.fields?.[field], ['must not contain control characters'], `${method} ${route.path} payload.${field}: refused for the NUL`)
      checked++
    }
  }
  t.ok(checked >= 20, `${checked} fields checked`)
})
