// The error contract: every failure, ours or the framework's, is {"error":{"code","message","details"}}.
import t from 'tap'
import { connect } from 'node:net'
import Boom from '@hapi/boom'
import { isDatabaseUnavailable, normalizeError } from '../../control/errors.ts'
import { createDb } from '../../control/db/knex.ts'
import { assertError, bearer, openTestDatabase, registration, signUp, startApp } from './harness.ts'

const db = await openTestDatabase(t, 'pglite')

t.test('framework errors in our shape', async t => {
  const h = await startApp(t, db, { env: { CC_MAX_BODY_BYTES: '2048' } })
  h.app.route({ method: 'GET', path: '/v1/test-bug', options: { auth: false }, handler: () => { throw new TypeError('a bug with a secret: hunter2') } })

  assertError(t, await h.request('GET', '/v1/no-such-route'), 'NOT_FOUND', 'unknown route')
  assertError(t, await h.request('GET', '/no-such-page'), 'NOT_FOUND', 'unknown path outside the API')
  assertError(t, await h.request('GET', '/assets/no-such.js'), 'NOT_FOUND', 'unknown dashboard asset')
  const wrongMethod = await h.request('DELETE', '/v1/auth/login')
  assertError(t, wrongMethod, 'METHOD_NOT_ALLOWED', 'wrong method on a known path')
  t.equal(wrongMethod.headers.allow, 'POST', 'Allow names the methods of the path (RFC 9110 15.5.6)')
  // Paths hapi's router refuses to match (invalid UTF-8 in a percent-encoding, a bad escape) on a
  // method no route has: no 405 probe may throw on them.
  for (const path of ['/v1/instances/N%ED%B6%94a/domains/', '/v1/instances/%ZZ/domains/x', '/v1/auth/login%FF']) {
    const res = await h.request('DELETE', path)
    t.ok(res.status === 400 || res.status === 404, `${path}: ${res.status} (a 4xx, not a 5xx)`)
    assertError(t, res, res.status === 400 ? 'BAD_REQUEST' : 'NOT_FOUND', `DELETE ${path}`)
  }
  assertError(t, await h.request('POST', '/v1/auth/register', '{"name": "x",', { 'content-type': 'application/json' }), 'BAD_REQUEST', 'malformed JSON')
  assertError(t, await h.request('POST', '/v1/auth/register', '\u0000\u0001', { 'content-type': 'application/json' }), 'BAD_REQUEST', 'binary JSON')
  assertError(t, await h.request('POST', '/v1/auth/register', 'name=x', { 'content-type': 'application/x-www-form-urlencoded' }), 'UNSUPPORTED_MEDIA_TYPE', 'form body')
  assertError(t, await h.request('POST', '/v1/auth/register', 'x', { 'content-type': 'text/plain' }), 'UNSUPPORTED_MEDIA_TYPE', 'text body')
  assertError(t, await h.request('POST', '/v1/auth/register', '"a string"', { 'content-type': 'application/json' }), 'VALIDATION_ERROR', 'JSON string body')
  assertError(t, await h.request('POST', '/v1/auth/register', 'null', { 'content-type': 'application/json' }), 'VALIDATION_ERROR', 'JSON null body')
  assertError(t, await h.request('POST', '/v1/auth/register'), 'VALIDATION_ERROR', 'no body')

  const unknown = await h.request('POST', '/v1/auth/register', registration('u@example.com', { role: 'admin', nested: { a: 1 } }))
  assertError(t, unknown, 'VALIDATION_ERROR', 'unknown fields')
  t.same(Object.keys(unknown.body.error.details.fields).sort(), ['nested', 'role'], 'each unknown field named')

  const big = await h.request('POST', '/v1/auth/register', registration('big@example.com', { name: 'x'.repeat(4096) }))
  assertError(t, big, 'PAYLOAD_TOO_LARGE', 'oversize body')

  const bug = await h.request('GET', '/v1/test-bug')
  assertError(t, bug, 'INTERNAL_ERROR', 'a real bug')
  t.notMatch(bug.raw, /hunter2|TypeError|stack/, 'no internals leak')
})

t.test('unrouted method on a known path: 405 with Allow; unknown paths and missing resources stay 404', async t => {
  const h = await startApp(t, db)
  const login = await signUp(h, 'methods@example.com')
  const cases: Array<[string, string, string]> = [
    ['PUT', '/v1/user', 'GET, HEAD, PATCH'],
    ['DELETE', '/v1/user', 'GET, HEAD, PATCH'],
    ['PUT', '/v1/instances/inst_0000000000000000000000', 'GET, HEAD, PATCH, DELETE'],
    ['GET', '/v1/auth/login', 'POST'],
    ['OPTIONS', '/v1/instances', 'GET, HEAD, POST'],
    ['PATCH', '/health', 'GET, HEAD'],
    ['PUT', '/v1/user/', 'GET, HEAD, PATCH'],
  ]
  for (const [method, path, allow] of cases) {
    const res = await h.request(method, path, method === 'GET' || method === 'OPTIONS' ? undefined : {}, bearer(login.access_token))
    assertError(t, res, 'METHOD_NOT_ALLOWED', `${method} ${path}`)
    t.equal(res.headers.allow, allow, `${method} ${path}: Allow`)
    t.same(res.body.error.details, { allow: allow.split(', ') }, `${method} ${path}: details`)
  }
  assertError(t, await h.request('PUT', '/v1/nothing-here', {}), 'NOT_FOUND', 'unknown path')
  assertError(t, await h.request('GET', '/v1/instances/inst_0000000000000000000000', undefined, bearer(login.access_token)), 'NOT_FOUND', 'a missing resource on a routed method')
  t.equal((await h.request('HEAD', '/v1/user', undefined, bearer(login.access_token))).status, 200, 'HEAD, as Allow says')
})

t.test('normalizeError', async t => {
  const pgTerminated = Object.assign(new Error('terminating connection due to administrator command'), { code: '57P01' })
  const n1 = normalizeError(Boom.boomify(pgTerminated))
  t.equal(n1.status, 503)
  t.equal(n1.body.error.code, 'SERVICE_UNAVAILABLE')
  t.equal(n1.unexpected, false)
  t.equal(n1.headers['retry-after'], '5')
  const n2 = normalizeError(Boom.boomify(new Error('boom')))
  t.same([n2.status, n2.body.error.code, n2.unexpected], [500, 'INTERNAL_ERROR', true])
  const n3 = normalizeError(Boom.methodNotAllowed('nope', undefined, ['GET']))
  t.same([n3.status, n3.body.error.code], [405, 'METHOD_NOT_ALLOWED'])
  const n4 = normalizeError(Boom.teapot())
  t.same([n4.status, n4.body.error.code], [418, 'BAD_REQUEST'], 'an unexpected 4xx keeps its status under a generic code')
})

t.test('isDatabaseUnavailable', async t => {
  for (const code of ['ECONNREFUSED', 'ECONNRESET', '57P01', '57P03', '08006', '53300']) {
    t.ok(isDatabaseUnavailable(Object.assign(new Error('x'), { code })), code)
  }
  t.ok(isDatabaseUnavailable(new Error('Connection terminated unexpectedly')))
  t.ok(isDatabaseUnavailable(Object.assign(new Error('x'), { name: 'KnexTimeoutError' })))
  t.ok(isDatabaseUnavailable(new Error('wrapped', { cause: Object.assign(new Error('x'), { code: 'ECONNREFUSED' }) })), 'through cause')
  t.notOk(isDatabaseUnavailable(Object.assign(new Error('duplicate key'), { code: '23505' })), 'unique violation is not an outage')
  t.notOk(isDatabaseUnavailable(new TypeError('x is undefined')))
  t.notOk(isDatabaseUnavailable(undefined))

  // A real client against a closed port.
  const db = createDb({ url: 'postgres://cc:cc@127.0.0.1:1/none', acquireTimeoutMs: 2000 })
  t.teardown(async () => { await db.destroy() })
  const err = await db.raw('select 1').then(() => undefined, (e: unknown) => e)
  t.ok(isDatabaseUnavailable(err), `refused connection recognised (${(err as Error).message})`)
})

/** Sends raw bytes to a listening app and returns what comes back before close. */
async function rawExchange (port: number, data: string | Buffer): Promise<string> {
  return await new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    socket.on('data', c => chunks.push(c))
    socket.on('error', reject)
    socket.on('close', () => resolve(Buffer.concat(chunks).toString()))
    socket.setTimeout(5000, () => socket.destroy())
    socket.end(data)
  })
}

function bodyOf (response: string): { error: { code: string } } {
  return JSON.parse(response.slice(response.indexOf('\r\n\r\n') + 4))
}

t.test('on a real socket: oversized headers and garbage HTTP', async t => {
  const h = await startApp(t, db, { env: { CC_API_HOST: '127.0.0.1', CC_API_PORT: '0' } })
  await h.app.start()
  const port = h.app.info.port as number

  const huge = await rawExchange(port, `GET /v1/user HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${'A'.repeat(64 * 1024)}\r\n\r\n`)
  t.match(huge, /^HTTP\/1\.1 431 /, 'a 64 KB header is refused by the HTTP parser (16 KiB limit)')
  t.equal(bodyOf(huge).error.code, 'REQUEST_HEADER_TOO_LARGE')

  const garbage = await rawExchange(port, 'NOT HTTP AT ALL\r\n\r\n')
  t.match(garbage, /^HTTP\/1\.1 400 /)
  t.equal(bodyOf(garbage).error.code, 'BAD_REQUEST')

  const ok = await fetch(`http://127.0.0.1:${port}/health`)
  t.equal(ok.status, 200, 'server still serving')
  const bad = await fetch(`http://127.0.0.1:${port}/v1/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{' })
  t.equal(bad.status, 400)
  t.same(Object.keys((await bad.json()).error).sort(), ['code', 'details', 'message'])
})

t.test('bad input never yields a 5xx (every route, hostile bodies)', async t => {
  const h = await startApp(t, db)
  const payloads: unknown[] = [
    [], [1, 2], 'text', 0, true, null, {},
    { __proto__: { admin: true } }, '{"__proto__": {"admin": true}}', '{"constructor": {"prototype": {"x": 1}}}',
    { email: ['a@example.com'] }, { email: { $ne: null } }, { email: 'a@example.com', password: { length: 1e9 } },
    { token: ['x'] }, { refresh_token: 42 }, { refresh_token: { alg: 'none' } }, { name: '\u0000\uffff\ud800' },
    { email: 'a@example.com\u0000.evil', password: 'x'.repeat(10_000) }, { name: 1e308 }, { a: { b: { c: { d: { e: {} } } } } },
    '[' .repeat(2000) + ']'.repeat(2000), '{"email": "' + 'a'.repeat(100_000) + '@example.com"}',
  ]
  const routes = h.app.table().filter(r => ['post', 'patch'].includes(r.method))
  t.ok(routes.length >= 8)
  let checked = 0
  for (const route of routes) {
    for (const payload of payloads) {
      for (const headers of [{}, { authorization: 'Bearer junk' }] as Array<Record<string, string>>) {
        const res = await h.request(route.method.toUpperCase(), route.path, typeof payload === 'string' ? payload : JSON.stringify(payload), { 'content-type': 'application/json', ...headers })
        if (res.status >= 500) t.fail(`${route.method} ${route.path} ${JSON.stringify(payload).slice(0, 60)} -> ${res.status} ${res.raw.slice(0, 200)}`)
        else if (!(res.status < 300 || res.body?.error?.code !== undefined)) t.fail(`${route.method} ${route.path}: error without the contract's shape: ${res.raw.slice(0, 200)}`)
        checked++
      }
    }
  }
  t.pass(`${checked} requests, none 5xx, every error in the contract's shape`)
})
