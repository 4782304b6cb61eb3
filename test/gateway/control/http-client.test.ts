/** HttpControlPlane against a scripted HTTP server: requests it sends, and how answers and failures map to RpcError. */
import t, { type Test } from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { HttpControlPlane } from '../../../gateway/control/http-client.ts'
import { freePort } from '../../helpers/ports.ts'
import { RPC_PROTOCOL_VERSION, RpcError, type ConfigSnapshot } from '../../../proto/rpc/index.ts'

const SECRET = 's'.repeat(43)
const SNAPSHOT: ConfigSnapshot = { version: 5, gateway: { address: '10.100.0.1', listenPort: 51820 }, peers: [] }

interface Seen { method: string, url: string, auth: string | undefined, type: string | undefined, body: string }

async function serve (t: Test, answer: (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void): Promise<{ url: string, seen: Seen[] }> {
  const seen: Seen[] = []
  const server = http.createServer((req, res) => {
    let body = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => { body += c })
    req.on('end', () => {
      seen.push({ method: req.method ?? '', url: req.url ?? '', auth: req.headers.authorization, type: req.headers['content-type'], body })
      answer(req, res, body)
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/`, seen }
}

const reply = (res: http.ServerResponse, status: number, body?: unknown): void => {
  res.writeHead(status, body === undefined ? {} : { 'content-type': 'application/json' }).end(body === undefined ? undefined : JSON.stringify(body))
}

async function failure (p: Promise<unknown>): Promise<RpcError> {
  try {
    await p
  } catch (err) {
    if (err instanceof RpcError) return err
    throw err
  }
  throw new Error('resolved')
}

t.test('watch: sends the secret and since; 200 -> snapshot, 204 -> null', async t => {
  let next = 200
  const { url, seen } = await serve(t, (_req, res) => { if (next === 200) reply(res, 200, SNAPSHOT); else reply(res, 204) })
  const plane = new HttpControlPlane({ url, secret: SECRET })
  t.same(await plane.watch(null), SNAPSHOT)
  next = 204
  t.equal(await plane.watch(5), null)
  t.same(seen.map(s => [s.method, s.url, s.auth]), [['GET', '/internal/v1/config', `Bearer ${SECRET}`], ['GET', '/internal/v1/config?since=5', `Bearer ${SECRET}`]], 'trailing slash of the base URL handled')
})

t.test('hello and report: JSON bodies, validated replies', async t => {
  const { url, seen } = await serve(t, (req, res, body) => {
    const parsed = JSON.parse(body)
    if (req.url === '/internal/v1/hello') reply(res, 200, { protocol: RPC_PROTOCOL_VERSION, gatewayId: parsed.gatewayId, reportIntervalMs: 1000, configVersion: 9 })
    else reply(res, 200, { peers: parsed.peers.length, certificates: 0 })
  })
  const plane = new HttpControlPlane({ url, secret: SECRET })
  const hello = { protocol: RPC_PROTOCOL_VERSION, gatewayId: 'gw', publicKey: '1y8JgBgNarojHK12KYbAAy+7HqZq2HGsE0Qw24toBXo=', endpoint: null, listenPort: 1 }
  t.same(await plane.hello(hello), { protocol: RPC_PROTOCOL_VERSION, gatewayId: 'gw', reportIntervalMs: 1000, configVersion: 9 })
  t.same(await plane.report({ protocol: RPC_PROTOCOL_VERSION, gatewayId: 'gw', sentAt: new Date().toISOString(), full: true, peers: [], certificates: [] }), { peers: 0, certificates: 0 })
  t.same(JSON.parse(seen[0].body), hello)
  t.equal(seen[0].type, 'application/json')
  t.equal(seen[1].url, '/internal/v1/reports')
})

t.test('failures: control\'s code, else by status; bad bodies; network; timeouts; abort', async t => {
  let mode = ''
  const { url } = await serve(t, (_req, res) => {
    switch (mode) {
      case 'unauthorized': reply(res, 401, { error: { code: 'UNAUTHORIZED', message: 'a valid gateway secret is required', details: {} } }); break
      case 'mismatch': reply(res, 409, { error: { code: 'PROTOCOL_MISMATCH', message: 'x', details: {} } }); break
      case 'proxy': res.writeHead(502, { 'content-type': 'text/html' }).end('<h1>Bad gateway</h1>'); break
      case 'bad-snapshot': reply(res, 200, { version: 'x' }); break
      case 'not-json': res.writeHead(200, { 'content-type': 'application/json' }).end('{'); break
      case 'slow': setTimeout(() => { reply(res, 204) }, 2_000); break
      default: reply(res, 500, { error: { code: 'INTERNAL_ERROR', message: 'boom', details: {} } })
    }
  })
  const plane = new HttpControlPlane({ url, secret: SECRET, requestTimeoutMs: 300, watchTimeoutMs: 300 })
  mode = 'unauthorized'
  const unauthorized = await failure(plane.watch(null))
  t.equal(unauthorized.code, 'UNAUTHORIZED')
  t.equal(unauthorized.retryable, false, 'a refused secret is not retryable')
  t.match(unauthorized.message, /gateway secret/)
  mode = 'mismatch'
  t.equal((await failure(plane.hello({ protocol: 1, gatewayId: 'g', publicKey: '1y8JgBgNarojHK12KYbAAy+7HqZq2HGsE0Qw24toBXo=', endpoint: null, listenPort: 1 }))).code, 'PROTOCOL_MISMATCH')
  mode = 'proxy'
  const proxy = await failure(plane.watch(1))
  t.equal(proxy.code, 'SERVICE_UNAVAILABLE', 'a 502 from a proxy: by status')
  t.equal(proxy.retryable, true)
  mode = 'internal'
  t.equal((await failure(plane.watch(1))).code, 'INTERNAL_ERROR')
  mode = 'bad-snapshot'
  t.equal((await failure(plane.watch(1))).code, 'VALIDATION_ERROR', 'a malformed snapshot is refused')
  mode = 'not-json'
  t.equal((await failure(plane.watch(1))).code, 'SERVICE_UNAVAILABLE')
  mode = 'slow'
  const slow = await failure(plane.watch(1))
  t.equal(slow.code, 'SERVICE_UNAVAILABLE')
  t.match(slow.message, /did not answer/)
  const abort = new AbortController()
  const pending = new HttpControlPlane({ url, secret: SECRET }).watch(1, abort.signal)
  setTimeout(() => { abort.abort() }, 50)
  t.equal(await pending, null, 'the caller\'s abort: null, not an error')

  const closedPort = await freePort()
  const refused = await failure(new HttpControlPlane({ url: `http://127.0.0.1:${closedPort}`, secret: SECRET }).watch(null))
  t.equal(refused.code, 'SERVICE_UNAVAILABLE')
  t.match(refused.message, /unreachable: ECONNREFUSED/)
  t.throws(() => new HttpControlPlane({ url: 'ftp://control.example', secret: SECRET }), TypeError)
})

t.test('control replicas: a comma-separated list is tried in turn, the one that answered stays current; gateway=ID on the long-poll', async t => {
  const down = `http://127.0.0.1:${await freePort()}`
  let unavailable = false
  const first = await serve(t, (_req, res) => { if (unavailable) reply(res, 503, { error: { code: 'SERVICE_UNAVAILABLE', message: 'draining' } }); else reply(res, 200, SNAPSHOT) })
  const second = await serve(t, (_req, res) => { reply(res, 200, SNAPSHOT) })
  const plane = new HttpControlPlane({ url: `${down},${first.url},${second.url}`, secret: SECRET, gatewayId: 'gw-1' })
  t.same(await plane.watch(3), SNAPSHOT, 'the unreachable replica is skipped')
  t.same(first.seen.map(s => s.url), ['/internal/v1/config?since=3&gateway=gw-1'])
  await plane.watch(null)
  t.equal(first.seen.length, 2, 'the replica that answered is asked first next time')
  t.equal(first.seen[1].url, '/internal/v1/config?gateway=gw-1')
  unavailable = true
  t.same(await plane.watch(4), SNAPSHOT, 'a 503 moves on to the next replica')
  t.equal(second.seen.length, 1)
  unavailable = false
  await plane.watch(4)
  t.equal(second.seen.length, 2, 'and that one stays current')

  const refused = await serve(t, (_req, res) => { reply(res, 401, { error: { code: 'UNAUTHORIZED', message: 'bad secret' } }) })
  const strict = new HttpControlPlane({ url: `${refused.url},${second.url}`, secret: SECRET })
  t.equal((await failure(strict.watch(null))).code, 'UNAUTHORIZED', 'a refusal is an answer: not retried elsewhere')
  t.equal(second.seen.length, 2)

  const none = new HttpControlPlane({ url: `${down},http://127.0.0.1:${await freePort()}`, secret: SECRET })
  t.equal((await failure(none.watch(null))).code, 'SERVICE_UNAVAILABLE', 'none answers: retryable (the gateway keeps serving its snapshot)')
})
