/**
 * Control's route at the edge: app.<base> and api.<base> are proxied over kernel TCP to control's
 * API listener (a loopback HTTP server stands in), with certificates from the local CA, HSTS and
 * the edge's forwarding headers; the HTTP listener redirects them; instance hostnames still reach
 * their own upstreams; without an origin the names answer a 503 page and one warning is logged.
 */
import t, { type Test } from 'tap'
import http from 'node:http'
import net from 'node:net'
import { controlRoute, netConnector, type UpstreamConnector } from '../../../gateway/edge/index.ts'
import { delay, request, route, startEdge, startOrigin, waitFor, type TestEdge } from './helpers.ts'

const BASE = 'erugo.test'

interface Seen { host?: string, forwardedFor?: string, forwardedHost?: string, forwardedProto?: string, realIp?: string, url?: string }

/** Control's stand-in: records the headers of every request, answers JSON. */
async function startControl (t: Test): Promise<{ port: number, seen: Seen[] }> {
  const seen: Seen[] = []
  const { port } = await startOrigin(t, (req, res) => {
    seen.push({
      host: req.headers.host,
      forwardedFor: req.headers['x-forwarded-for'] as string | undefined,
      forwardedHost: req.headers['x-forwarded-host'] as string | undefined,
      forwardedProto: req.headers['x-forwarded-proto'] as string | undefined,
      realIp: req.headers['x-real-ip'] as string | undefined,
      url: req.url,
    })
    res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"ok"}')
  })
  return { port, seen }
}

/** The instances' connector: kernel TCP too, but every use is counted. */
function countingConnector (): UpstreamConnector & { uses: number } {
  const c = {
    uses: 0,
    createConnection: (r: Parameters<UpstreamConnector['createConnection']>[0], o: Parameters<UpstreamConnector['createConnection']>[1]) => {
      c.uses++
      return netConnector.createConnection(r, o)
    },
  }
  return c
}

function plain (te: TestEdge, host: string, path: string): Promise<{ status: number, headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port: te.httpPort, path, headers: { host }, agent: false }, res => {
      res.resume()
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }))
    })
    req.on('error', reject)
    req.end()
  })
}

t.test('app and api names reach control over TLS with the local CA, HSTS and the edge\'s forwarding headers', async t => {
  const control = await startControl(t)
  const tunnel = countingConnector()
  const te = await startEdge(t, [controlRoute(BASE, { host: '127.0.0.1', port: control.port })], { connector: tunnel })
  const names = te.edge.certificateStates().filter(c => c.status === 'active').map(c => [c.hostname, c.certificateName]).sort()
  t.same(names, [[`*.${BASE}`, `*.${BASE}`], [`api.${BASE}`, `*.${BASE}`], [`app.${BASE}`, `*.${BASE}`]], 'both names served by the local CA\'s one wildcard certificate of the base domain')

  const app = await request(te, `app.${BASE}`, { path: '/health', headers: { 'x-forwarded-for': '203.0.113.9', 'x-forwarded-host': 'evil.test' } })
  t.equal(app.status, 200)
  t.equal(app.body.toString(), '{"status":"ok"}')
  t.equal(app.headers['strict-transport-security'], 'max-age=31536000')
  const api = await request(te, `api.${BASE}`, { path: '/v1/openapi.json' })
  t.equal(api.status, 200)
  t.equal(api.headers['strict-transport-security'], 'max-age=31536000')

  t.equal(control.seen.length, 2)
  const port = te.port
  t.same(control.seen[0], {
    host: `app.${BASE}:${port}`,
    forwardedFor: '127.0.0.1',
    forwardedHost: `app.${BASE}:${port}`,
    forwardedProto: 'https',
    realIp: '127.0.0.1',
    url: '/health',
  }, 'Host kept, X-Forwarded-* set by the edge (the client\'s own claims dropped)')
  t.equal(control.seen[1].host, `api.${BASE}:${port}`)
  t.equal(control.seen[1].url, '/v1/openapi.json')
  t.equal(tunnel.uses, 0, 'control is not reached through the instances\' connector')
})

t.test('the HTTP listener redirects control\'s names to HTTPS, without HSTS', async t => {
  const control = await startControl(t)
  const te = await startEdge(t, [controlRoute(BASE, { host: '127.0.0.1', port: control.port })], { publicHttpsPort: 8443 })
  for (const label of ['app', 'api']) {
    const r = await plain(te, `${label}.${BASE}`, '/v1/user?x=1')
    t.equal(r.status, 301, label)
    t.equal(r.headers.location, `https://${label}.${BASE}:8443/v1/user?x=1`)
    // RFC 6797 7.2: never over plain HTTP.
    t.equal(r.headers['strict-transport-security'], undefined)
  }
  t.equal(control.seen.length, 0)
})

t.test('an instance hostname still goes to its tunnel route, and no peer can take control\'s names', async t => {
  const control = await startControl(t)
  const instanceHosts: string[] = []
  const instance = await startOrigin(t, (req, res) => {
    instanceHosts.push(req.headers.host ?? '')
    res.writeHead(200).end('instance')
  })
  const tunnel = countingConnector()
  const te = await startEdge(t, [
    controlRoute(BASE, { host: '127.0.0.1', port: control.port }),
    route('inst-1', instance.port, [`files.${BASE}`, `app.${BASE}`]),
  ], { connector: tunnel })
  const files = await request(te, `files.${BASE}`)
  t.equal(files.status, 200)
  t.equal(files.body.toString(), 'instance')
  t.equal(files.headers['strict-transport-security'], undefined, 'HSTS only on control\'s names')
  t.equal(tunnel.uses, 1)

  const app = await request(te, `app.${BASE}`)
  t.equal(app.status, 200)
  t.equal(app.body.toString(), '{"status":"ok"}', 'app.<base> stays control\'s')
  t.same(instanceHosts, [`files.${BASE}:${te.port}`])

  // A connection opened for an instance's name cannot carry a request for control (421).
  const crossed = await request(te, `app.${BASE}`, { servername: `files.${BASE}` })
  t.equal(crossed.status, 421)
  t.equal(control.seen.length, 1)
})

t.test('without control\'s origin the names answer a 503 page, and one warning names the setting', async t => {
  const te = await startEdge(t, [controlRoute(BASE, null)])
  const first = await request(te, `app.${BASE}`, { path: '/sign-in' })
  t.equal(first.status, 503)
  t.match(first.headers['content-type'], /^text\/html/)
  t.match(first.body.toString(), /Cloud Connect is not available here/)
  t.equal(first.headers['strict-transport-security'], 'max-age=31536000')
  const second = await request(te, `api.${BASE}`, { path: '/v1/openapi.json' })
  t.equal(second.status, 503)
  const warnings = te.lines.filter(l => l.level === 40 && /CC_CONTROL_PUBLIC_ORIGIN/.test(String(l.msg)))
  t.equal(warnings.length, 1, 'warned once, not per request')
})

t.test('control down: a 502 page in control\'s words', async t => {
  const control = await startControl(t)
  const te = await startEdge(t, [controlRoute(BASE, { host: '127.0.0.1', port: control.port })])
  t.equal((await request(te, `api.${BASE}`)).status, 200)
  te.edge.updateRoutes([controlRoute(BASE, { host: '127.0.0.1', port: 1 })])
  const r = await request(te, `api.${BASE}`)
  t.equal(r.status, 502)
  t.match(r.body.toString(), /Cloud Connect is unavailable/)
  t.equal(r.headers['strict-transport-security'], 'max-age=31536000')
})

t.test('instance slot caps do not apply to control, the per-client connection cap does', async t => {
  let release: (() => void) | undefined
  let arrived = 0
  const { port } = await startOrigin(t, (req, res) => {
    arrived++
    if (req.url === '/hold') { release = () => { res.writeHead(200).end('held') }; return }
    res.writeHead(200).end('ok')
  })
  const te = await startEdge(t, [controlRoute(BASE, { host: '127.0.0.1', port })], {
    defaultMaxConnections: 1,
    upstreamTimeoutMs: 10_000,
    limits: { maxConnectionsPerClient: 2 },
  })
  const held = request(te, `app.${BASE}`, { path: '/hold' })
  t.ok(await waitFor(() => release !== undefined), 'first request at control')
  const second = await request(te, `app.${BASE}`, { path: '/quick' })
  t.equal(second.status, 200, 'a second request while the only "slot" is taken')
  t.equal(te.edge.pool.activeConnections('#control'), 1)

  // Two connections open from this address (one held, one idle here): a third is refused at accept.
  const open = await request(te, `app.${BASE}`, { agent: false, path: '/quick' }).then(() => 'answered', () => 'refused')
  t.equal(open, 'answered', 'a new connection is accepted while only one is open')
  const sockets: net.Socket[] = []
  for (let i = 0; i < 2; i++) {
    const s = net.connect({ host: '127.0.0.1', port: te.port })
    s.on('error', () => {})
    sockets.push(s)
  }
  t.teardown(() => { for (const s of sockets) s.destroy() })
  await delay(100)
  const refused = await request(te, `app.${BASE}`, { path: '/quick' }).then(() => 'answered', () => 'refused')
  t.equal(refused, 'refused', 'connections beyond the per-client cap are closed, for control\'s names too')
  release!()
  t.equal((await held).status, 200)
  t.equal(arrived, 3)
})
