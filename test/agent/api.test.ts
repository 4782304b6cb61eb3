import t, { type Test } from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { ApiClient, ApiError, MAX_ANSWER_BYTES } from '../../agent/api.ts'

type Handler = (req: http.IncomingMessage, body: string, res: http.ServerResponse) => void

async function api (t: Test, handler: Handler): Promise<string> {
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => { handler(req, body, res) })
  })
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`
}

function error (res: http.ServerResponse, status: number, code: string, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify({ error: { code, message: `the ${code} message`, details: {} } }))
}

t.test('requests carry the bearer token and the spec\'s bodies', async t => {
  const seen: string[] = []
  const base = await api(t, (req, body, res) => {
    seen.push(`${req.method ?? ''} ${req.url ?? ''} ${req.headers.authorization ?? ''} ${body}`)
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ status: 'ok', next_heartbeat_in: 60 }))
  })
  const client = new ApiClient({ baseUrl: `${base}/`, token: 'tok' })
  await client.register('PUB')
  const beat = await client.heartbeat(new Date('2025-11-29T14:30:00Z'))
  t.equal(beat.next_heartbeat_in, 60)
  await client.disconnect()
  await client.status()
  t.same(seen, [
    'POST /v1/tunnel/register Bearer tok {"public_key":"PUB"}',
    'POST /v1/tunnel/heartbeat Bearer tok {"timestamp":"2025-11-29T14:30:00.000Z"}',
    'POST /v1/tunnel/disconnect Bearer tok {}',
    'GET /v1/tunnel/status Bearer tok ',
  ])
  const regional = new ApiClient({ baseUrl: base, token: 'tok', region: 'eu-west' })
  await regional.register('PUB')
  t.equal(seen.at(-1), 'POST /v1/tunnel/register Bearer tok {"public_key":"PUB","region":"eu-west"}', 'the container\'s region with the registration')
})

t.test('failures are classified: what a retry can fix and what it cannot', async t => {
  let next: (res: http.ServerResponse) => void = () => {}
  const base = await api(t, (_req, _body, res) => { next(res) })
  const client = new ApiClient({ baseUrl: base, token: 'tok', timeoutMs: 500 })
  const cases: Array<[(res: http.ServerResponse) => void, string, boolean, number | null]> = [
    [res => { error(res, 401, 'UNAUTHORIZED') }, 'token_rejected', false, null],
    [res => { error(res, 402, 'SUBSCRIPTION_REQUIRED') }, 'subscription_required', false, null],
    [res => { error(res, 409, 'KEY_IN_USE') }, 'key_in_use', false, null],
    [res => { error(res, 429, 'RATE_LIMITED', { 'retry-after': '7' }) }, 'unavailable', true, 7000],
    [res => { error(res, 503, 'SERVICE_UNAVAILABLE') }, 'unavailable', true, null],
    [res => { res.writeHead(502).end('<html>bad gateway</html>') }, 'unavailable', true, null],
    [res => { error(res, 404, 'NOT_FOUND') }, 'refused', false, null],
    [res => { res.writeHead(200).end('<html>not an api</html>') }, 'refused', false, null],
    [res => { setTimeout(() => { res.writeHead(200).end('{}') }, 2_000) }, 'unreachable', true, null],
  ]
  for (const [respond, failure, transient, retryAfter] of cases) {
    next = respond
    const err = await client.register('PUB').then(() => null, (e: unknown) => e as ApiError)
    t.ok(err instanceof ApiError, failure)
    t.equal(err?.failure, failure)
    t.equal(err?.transient, transient, `${failure}: transient ${String(transient)}`)
    t.equal(err?.retryAfterMs, retryAfter)
  }
  const unauthorized = await (next = res => { error(res, 401, 'UNAUTHORIZED') }, client.heartbeat()).catch((e: ApiError) => e)
  t.match((unauthorized as ApiError).message, /rejected the instance token/)
  t.equal((unauthorized as ApiError).code, 'UNAUTHORIZED')
})

t.test('no server: unreachable, with the cause', async t => {
  const server = http.createServer()
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  const port = (server.address() as AddressInfo).port
  await new Promise(resolve => { server.close(resolve) })
  const client = new ApiClient({ baseUrl: `http://127.0.0.1:${port}/v1`, token: 'tok' })
  const err = await client.status().catch((e: ApiError) => e)
  t.equal((err as ApiError).failure, 'unreachable')
  t.equal((err as ApiError).message, `cannot reach the API at http://127.0.0.1:${port}/v1: ECONNREFUSED`)
})

t.test('a stop signal abandons the request', async t => {
  const base = await api(t, () => {})
  const client = new ApiClient({ baseUrl: base, token: 'tok', timeoutMs: 30_000 })
  const stop = new AbortController()
  const started = Date.now()
  setTimeout(() => { stop.abort() }, 100)
  const err = await client.register('PUB', stop.signal).catch((e: ApiError) => e)
  t.equal((err as ApiError).failure, 'unreachable')
  t.ok(Date.now() - started < 5_000)
})

t.test('answers over 64 KiB: a 2xx is refused without being read to the end, an error status is still classified', async t => {
  let next: (res: http.ServerResponse) => void = () => {}
  const base = await api(t, (_req, _body, res) => { next(res) })
  const client = new ApiClient({ baseUrl: base, token: 'tok', timeoutMs: 10_000 })
  const registered = { status: 'registered', tunnel_config: {}, domains: { subdomain: 'a.example', custom_domains: [] } }

  // Exactly the limit is fine.
  const exact = JSON.stringify({ ...registered, padding: '' })
  const atLimit = JSON.stringify({ ...registered, padding: 'p'.repeat(MAX_ANSWER_BYTES - exact.length) })
  t.equal(Buffer.byteLength(atLimit), MAX_ANSWER_BYTES)
  next = res => { res.writeHead(200, { 'content-type': 'application/json' }).end(atLimit) }
  t.match(await client.register('PUB'), { status: 'registered' })

  // One byte more is not.
  next = res => { res.writeHead(200, { 'content-type': 'application/json' }).end(`${atLimit} `) }
  const over = await client.register('PUB').catch((e: unknown) => e as ApiError)
  t.ok(over instanceof ApiError)
  t.match(over, { failure: 'refused', status: 200, message: `POST /tunnel/register: the answer is larger than ${MAX_ANSWER_BYTES} bytes: is ${base} a Cloud Connect API?` })

  // A declared length over the limit: refused at once, the body never waited for.
  next = res => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(100 * 1024 * 1024) })
    res.write('{"status":')
  }
  const started = Date.now()
  t.match(await client.register('PUB').catch((e: unknown) => e), { failure: 'refused', message: /larger than 65536 bytes/ })
  t.ok(Date.now() - started < 5_000, 'not held until the timeout')

  // An error page over the limit still means "try again later".
  next = res => { res.writeHead(503, { 'content-type': 'text/html' }).end(`<html>${'x'.repeat(200 * 1024)}</html>`) }
  t.match(await client.register('PUB').catch((e: unknown) => e), { failure: 'unavailable', status: 503 })
})

t.test('an endless 2xx answer: reading stops at the limit and the connection is dropped', async t => {
  const chunk = Buffer.alloc(64 * 1024, 0x20)
  const CAP = 1024 // chunks: 64 MiB, far more than socket buffers hold
  let written = 0
  let finished: () => void = () => {}
  const done = new Promise<void>(resolve => { finished = resolve })
  const base = await api(t, (_req, _body, res) => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.write('{"status":"registered","padding":"')
    let closed = false
    res.on('close', () => { closed = true })
    const pump = (): void => {
      while (!closed && written < CAP) {
        written++
        if (!res.write(chunk)) {
          res.once('drain', pump)
          return
        }
      }
      finished()
    }
    res.on('close', () => { finished() })
    pump()
  })
  const client = new ApiClient({ baseUrl: base, token: 'tok', timeoutMs: 20_000 })
  const err = await client.register('PUB').catch((e: unknown) => e)
  t.match(err, { failure: 'refused', message: /larger than 65536 bytes/ })
  await done
  t.ok(written < CAP, `the server stopped after ${written} of ${CAP} chunks: the client closed the connection`)
})
