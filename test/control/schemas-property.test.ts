// Property: for every route with a request schema (server.table()), any value in any field (control
// characters, lone surrogates, long strings, any Unicode, wrong types, unknown fields) is answered
// with 2xx or 4xx, never 5xx, and every 4xx is the contract's {"error":{"code","message","details"}}.
// The requests carry a verified user's or an instance's token, so authenticated handlers really run.
// The seed is printed; CC_FUZZ_SEED=<seed> replays a run, CC_FUZZ_RUNS=<n> changes its length.
import t from 'tap'
import fc from 'fast-check'
import type { RequestRoute } from '@hapi/hapi'
import type { Schema } from 'joi'
import { ERROR_CODES, ERROR_STATUS, type ErrorCode } from '../../proto/api/errors.ts'
import { bearer, openTestDatabase, PASSWORD, registration, type Reply } from './harness.ts'
import { mustCreate, newPublicKey, newUser, startInstanceApp } from './routes/tunnel-fixtures.ts'

const SEED = process.env.CC_FUZZ_SEED !== undefined ? Number(process.env.CC_FUZZ_SEED) : Date.now() % 2 ** 31
const RUNS_PER_ROUTE = Number(process.env.CC_FUZZ_RUNS ?? 150)

const db = await openTestDatabase(t, 'pglite')

/** A body each route accepts, so a run that leaves most fields alone reaches the handler. */
const VALID_PAYLOADS: Record<string, () => Record<string, unknown>> = {
  'post /v1/auth/register': () => registration(`fuzz-${Math.random().toString(36).slice(2)}@example.com`),
  'post /v1/auth/login': () => ({ email: 'fuzz-owner@example.com', password: PASSWORD }),
  'post /v1/auth/forgot-password': () => ({ email: 'fuzz-owner@example.com' }),
  'post /v1/auth/resend-verification': () => ({ email: 'fuzz-owner@example.com' }),
  'post /v1/auth/reset-password': () => ({ token: 'a'.repeat(43), password: PASSWORD, password_confirmation: PASSWORD }),
  'patch /v1/user': () => ({ name: 'Fuzzed Name' }),
  'post /v1/instances': () => ({ name: 'Fuzz', subdomain: 'fuzz-second' }),
  'patch /v1/instances/{instance_id}': () => ({ name: 'Fuzz renamed' }),
  'post /v1/instances/{instance_id}/domains': () => ({ domain: 'files.example.com' }),
  'post /v1/tunnel/register': () => ({ public_key: newPublicKey() }),
  'post /v1/tunnel/heartbeat': () => ({ timestamp: new Date().toISOString() }),
  'post /v1/billing/checkout': () => ({ plan: 'pro' }),
}
const VALID_QUERIES: Record<string, Record<string, string>> = {
  'get /v1/subdomains/check': { subdomain: 'fuzzfree' },
  'get /v1/auth/verify-email': { token: 'a'.repeat(43) },
}

const surrogate = fc.integer({ min: 0xd800, max: 0xdfff }).map(code => String.fromCharCode(code))
const control = fc.oneof(fc.integer({ min: 0, max: 0x1f }), fc.integer({ min: 0x7f, max: 0x9f })).map(code => String.fromCharCode(code))
const hostileChar = fc.oneof({ weight: 3, arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }) }, { weight: 1, arbitrary: control }, { weight: 1, arbitrary: surrogate })

const hostileString: fc.Arbitrary<string> = fc.oneof(
  fc.string({ unit: hostileChar, maxLength: 40 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: 'grapheme', maxLength: 40 }),
  fc.tuple(fc.integer({ min: 200, max: 20_000 }), fc.string({ unit: hostileChar, maxLength: 3 })).map(([n, tail]) => 'a'.repeat(n) + tail),
  fc.constantFrom('', ' ', 'a\u0000b', '\r\n', '\ud800', '\udfff\ud800', '\u2028', '\ufeff', '%00', '../../etc/passwd', '__proto__', "'; drop table users; --", 'x@example.com\u0000'),
)

const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 6, arbitrary: hostileString },
  { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.double(), fc.boolean(), fc.constant(null)) },
  { weight: 1, arbitrary: fc.oneof(fc.array(hostileString, { maxLength: 3 }), fc.dictionary(hostileString, hostileString, { maxKeys: 3 })) },
)

const KEEP = Symbol('keep')

/** Percent-encodes a string for a path or query; a lone surrogate becomes its (invalid) 3-byte UTF-8 form. */
function encodeComponent (value: string): string {
  let out = ''
  for (const ch of value) {
    const code = ch.codePointAt(0)!
    if (code >= 0xd800 && code <= 0xdfff) out += [0xe0 | (code >> 12), 0x80 | ((code >> 6) & 0x3f), 0x80 | (code & 0x3f)].map(b => `%${b.toString(16).toUpperCase()}`).join('')
    else out += encodeURIComponent(ch)
  }
  return out
}

function keysOf (schema: Schema | null | undefined): string[] {
  if (schema == null || typeof schema.describe !== 'function') return []
  return Object.keys((schema.describe() as { keys?: Record<string, unknown> }).keys ?? {})
}

/** The contract's error shape and a 2xx/4xx status; the failure message says what broke. */
function violation (res: Reply): string | undefined {
  if (res.status >= 500) return `status ${res.status}: ${res.raw.slice(0, 300)}`
  if (res.status < 400) return res.status >= 200 ? undefined : `status ${res.status}`
  if (!/^application\/json/.test(String(res.headers['content-type']))) return `4xx without a JSON body: ${res.raw.slice(0, 200)}`
  const error = res.body?.error
  if (Object.keys(res.body ?? {}).join() !== 'error') return `body is not {error}: ${res.raw.slice(0, 200)}`
  if (Object.keys(error ?? {}).sort().join() !== 'code,details,message') return `error lacks code/message/details: ${res.raw.slice(0, 200)}`
  if (!ERROR_CODES.includes(error.code)) return `unknown code ${String(error.code)}`
  if (ERROR_STATUS[error.code as ErrorCode] !== res.status) return `code ${String(error.code)} with status ${res.status}`
  if (typeof error.message !== 'string' || error.message === '') return 'empty message'
  if (error.details === null || typeof error.details !== 'object' || Array.isArray(error.details)) return 'details is not an object'
  return undefined
}

t.test('every request schema: hostile values never give a 5xx, every 4xx in the contract\'s shape', async t => {
  t.comment(`fast-check seed ${SEED}, ${RUNS_PER_ROUTE} runs per route (CC_FUZZ_SEED / CC_FUZZ_RUNS to change)`)
  const h = await startInstanceApp(t, db)
  const user = await newUser(h, 'fuzz')
  await h.request('POST', '/v1/auth/register', registration('fuzz-owner@example.com'))
  const instance = await mustCreate(t, h, user.token, 'fuzzing')
  const routes = (h.app.table() as RequestRoute[]).filter(route => {
    const v = route.settings.validate as { payload?: Schema | null, query?: Schema | null, params?: Schema | null }
    return [v.payload, v.query, v.params].some(schema => keysOf(schema).length > 0)
  })
  t.ok(routes.length >= 15, `${routes.length} routes with request schemas`)

  let requests = 0
  const successes = new Map<string, number>()
  for (const route of routes) {
    const id = `${route.method} ${route.path}`
    const v = route.settings.validate as { payload?: Schema | null, query?: Schema | null, params?: Schema | null }
    const auth = route.settings.auth as { strategies?: string[] } | false | undefined
    const headers = auth === false ? {} : bearer(auth?.strategies?.includes('instance') === true ? instance.token : user.token)
    // Destructive routes get an instance id that does not exist, so the others keep a live one.
    const ownId = route.method === 'delete' || route.path.endsWith('/regenerate-token') ? 'inst_0000000000000000000000' : instance.id
    const validParams: Record<string, string> = { instance_id: ownId, domain: 'files.example.com' }
    // About one field per request is hostile, the rest left alone (KEEP) and valid, so the value reaches the handler.
    const fieldsOf = (schema: Schema | null | undefined): fc.Arbitrary<Record<string, unknown>> => {
      const keys = keysOf(schema)
      const sometimes = (weight: number): fc.Arbitrary<unknown> => fc.oneof({ weight, arbitrary: fc.constant(KEEP) }, { weight: 1, arbitrary: hostileValue })
      return fc.record(Object.fromEntries([...keys.map(key => [key, sometimes(keys.length)]), ['unexpected_field', sometimes(9)]]))
        .map(fields => Object.fromEntries(Object.entries(fields).filter(([, value]) => value !== KEEP)))
    }
    const input = fc.record({
      params: fieldsOf(v.params).map(p => Object.fromEntries(Object.entries(p).map(([k, value]) => [k, typeof value === 'string' ? value : JSON.stringify(value) ?? 'null']))),
      query: fieldsOf(v.query),
      payload: fieldsOf(v.payload),
      wholeBody: fc.oneof({ weight: 9, arbitrary: fc.constant(KEEP) }, { weight: 1, arbitrary: hostileValue }),
    })
    await fc.assert(fc.asyncProperty(input, async ({ params, query, payload, wholeBody }) => {
      const path = route.path.replace(/\{(\w+)\}/g, (_, name: string) => encodeComponent(name in params ? params[name] as string : validParams[name] ?? 'x'))
      const queryPairs = Object.entries({ ...VALID_QUERIES[id], ...query }).map(([k, value]) => `${encodeComponent(k)}=${encodeComponent(typeof value === 'string' ? value : JSON.stringify(value) ?? '')}`)
      const url = queryPairs.length > 0 ? `${path}?${queryPairs.join('&')}` : path
      const body = route.method === 'get' ? undefined : wholeBody !== KEEP ? wholeBody : { ...VALID_PAYLOADS[id]?.(), ...payload }
      const res = await h.request(route.method.toUpperCase(), url, body === undefined ? undefined : JSON.stringify(body), { 'content-type': 'application/json', ...headers })
      requests++
      if (res.status < 300) successes.set(id, (successes.get(id) ?? 0) + 1)
      const problem = violation(res)
      if (problem !== undefined) throw new Error(`${route.method.toUpperCase()} ${url.slice(0, 200)} ${JSON.stringify(body)?.slice(0, 200)} -> ${problem}`)
    }), { seed: SEED, numRuns: RUNS_PER_ROUTE, endOnFailure: true })
  }
  // Hostile but valid values (any printable Unicode, edge lengths) reach these handlers and succeed.
  for (const id of ['post /v1/auth/register', 'patch /v1/user', 'patch /v1/instances/{instance_id}', 'get /v1/subdomains/check']) {
    t.ok((successes.get(id) ?? 0) > 0, `${id}: ${successes.get(id) ?? 0} runs passed validation and succeeded`)
  }
  t.pass(`${requests} requests over ${routes.length} routes: none 5xx, every error in the contract's shape`)
})
