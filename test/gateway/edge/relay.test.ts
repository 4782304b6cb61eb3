/**
 * The fleet relay between two edges on loopback (gateway/edge/relay.ts): B holds no session for
 * the instance and relays to A, whose relay listener serves it into its "tunnel" (a loopback
 * origin here; test/gateway/fleet.test.ts runs the real tunnel). Mutual TLS by pinned
 * fingerprints, forwarding headers once, never relayed twice, WebSocket, HTTP/2 on the listener.
 */
import t from 'tap'
import type { Test } from 'tap'
import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import tls from 'node:tls'
import net from 'node:net'
import { Duplex } from 'node:stream'
import { once } from 'node:events'
import WebSocket, { WebSocketServer } from 'ws'
import type { FleetGateway } from '../../../proto/rpc/index.ts'
import { connectPinned, loadOrCreateRelayIdentity, RelayError, type RelayIdentity, type Route } from '../../../gateway/edge/index.ts'
import { PASSTHROUGH_ALPN, STREAM_ALPN, encodePreamble } from '../../../gateway/edge/passthrough.ts'
import { EDGE_DEFAULTS, type RelayMode } from '../../../gateway/edge/options.ts'
import { createHash, randomBytes } from 'node:crypto'
import { Metrics } from '../../../gateway/metrics.ts'
import { loopbackLookup, request, route, startEdge, startOrigin, tempDir, waitFor, type RequestOptions, type TestEdge } from './helpers.ts'

const HOST = 'files.example.test'
const LOOP = 'loop.example.test'

interface Seen { xff: Array<string | string[] | undefined>, forwarded: Array<string | string[] | undefined>, host: Array<string | undefined> }

async function origin (t: Parameters<typeof startOrigin>[0]): Promise<{ port: number, seen: Seen, server: http.Server }> {
  const seen: Seen = { xff: [], forwarded: [], host: [] }
  const { server, port } = await startOrigin(t, (req, res) => {
    seen.xff.push(req.headers['x-forwarded-for'])
    seen.forwarded.push(req.headers.forwarded)
    seen.host.push(req.headers.host)
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('end', () => { res.end(JSON.stringify({ path: req.url, bytes: n, rawHeaders: req.rawHeaders })) })
  })
  return { port, seen, server }
}

function fleetEntry (id: string, te: TestEdge, identity: RelayIdentity): FleetGateway {
  return { id, relayUrl: `https://127.0.0.1:${te.edge.relayAddress()!.port}`, relayFingerprint: identity.fingerprint }
}

interface Pair { a: TestEdge, b: TestEdge, idA: RelayIdentity, idB: RelayIdentity, fleet: FleetGateway[], live: { a: boolean, b: boolean }, metrics: { a: Metrics, b: Metrics } }

/**
 * A serves the instance (its origin at `port`); B has only the fleet route naming A. B relays per
 * request (TLS ends at B, `mode` 'request', the default here) or by connection ('passthrough': B
 * passes clients' TLS through to A; 'stream': B ends it and pipes the plaintext to A).
 */
async function pair (t: Parameters<typeof startEdge>[0], port: number, extra: { aRoutes?: Route[], bRoutes?: Route[], mode?: RelayMode, aHandshakeTimeoutMs?: number } = {}): Promise<Pair> {
  const idA = await loadOrCreateRelayIdentity(tempDir(t))
  const idB = await loadOrCreateRelayIdentity(tempDir(t))
  const live = { a: true, b: false }
  const metrics = { a: new Metrics(), b: new Metrics() }
  const a = await startEdge(t, [route('inst', port, [HOST], { relayVia: ['gw-a'] }), ...extra.aRoutes ?? []], {
    metrics: metrics.a,
    ...(extra.aHandshakeTimeoutMs === undefined ? {} : { limits: { tlsHandshakeTimeoutMs: extra.aHandshakeTimeoutMs } }),
    relay: { listen: { host: '127.0.0.1', port: 0 }, identity: idA, sessionLive: () => live.a },
  })
  const b = await startEdge(t, [{ instanceId: 'inst', tunnelIp: '', port: 0, hostnames: [HOST], relayVia: ['gw-a'], remote: true }, ...extra.bRoutes ?? []], {
    metrics: metrics.b,
    relay: { listen: { host: '127.0.0.1', port: 0 }, identity: idB, sessionLive: () => live.b, mode: extra.mode ?? 'request' },
  })
  const fleet = [fleetEntry('gw-a', a, idA), fleetEntry('gw-b', b, idB)]
  a.edge.updateFleet(fleet)
  b.edge.updateFleet(fleet)
  return { a, b, idA, idB, fleet, live, metrics }
}

/** A request straight to a relay listener, presenting `identity`'s certificate (or none). */
function relayRequest (te: TestEdge, identity: RelayIdentity | null, host: string): Promise<{ status: number, body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host: '127.0.0.1',
      port: te.edge.relayAddress()!.port,
      path: '/direct',
      headers: { host, 'x-forwarded-for': '198.51.100.7' },
      rejectUnauthorized: false,
      ...(identity === null ? {} : { key: identity.privateKeyPem, cert: identity.certificatePem }),
      agent: false,
    }, res => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
    })
    req.on('error', reject)
    req.end()
  })
}

const relayedLines = (te: TestEdge): Array<Record<string, unknown>> => te.lines.filter(l => l.msg === 'request' && l.relayed === true)

t.test('a gateway without a session relays to the fleet gateway that has one: forwarding headers exactly once', async t => {
  const o = await origin(t)
  const { a, b } = await pair(t, o.port)
  const res = await request(b, HOST, { path: '/hello', headers: { 'x-forwarded-for': '203.0.113.9', forwarded: 'for=203.0.113.9' }, method: 'POST', body: 'x'.repeat(1000) })
  t.equal(res.status, 200)
  t.same(JSON.parse(res.body.toString()).bytes, 1000)
  t.same(o.seen.xff, ['127.0.0.1'], 'X-Forwarded-For: the address B saw, once (the client\'s claim dropped)')
  t.same(o.seen.forwarded, [`for=127.0.0.1;host="${HOST}:${b.port}";proto=https`], 'Forwarded: once, as B set it')
  const raw = JSON.parse(res.body.toString()).rawHeaders as string[]
  t.equal(raw.filter((_, i) => i % 2 === 0 && raw[i].toLowerCase() === 'x-forwarded-for').length, 1, 'one X-Forwarded-For field')
  t.equal(o.seen.host[0], `${HOST}:${b.port}`, 'Host kept')
  const bLine = b.lines.find(l => l.msg === 'request')
  t.equal(bLine?.relay, 'gw-a', 'B logs the relay target')
  t.equal(relayedLines(a).length, 1, 'A served it from its relay listener')
  t.equal(relayedLines(a)[0].reqId, bLine?.reqId, 'one request id across both gateways')
})

t.test('relay listener: a known client certificate is served, an unknown one or none is refused', async t => {
  const o = await origin(t)
  const { a, idB } = await pair(t, o.port)
  const served = await relayRequest(a, idB, HOST)
  t.equal(served.status, 200, 'B\'s certificate (in the fleet) is served')
  t.same(o.seen.xff, ['198.51.100.7'], 'the relaying gateway\'s X-Forwarded-For passes through unchanged')

  const stranger = await loadOrCreateRelayIdentity(tempDir(t))
  await t.rejects(relayRequest(a, stranger, HOST), 'a certificate not in the fleet: the connection is closed')
  await t.rejects(relayRequest(a, null, HOST), 'no client certificate: closed')
  t.equal(o.seen.xff.length, 1, 'neither reached the origin')
  t.equal(a.edge.relayAddress() !== null, true)
})

t.test('relay listener speaks HTTP/2 by ALPN', async t => {
  const o = await origin(t)
  const { a, idB } = await pair(t, o.port)
  const session = http2.connect(`https://127.0.0.1:${a.edge.relayAddress()!.port}`, { key: idB.privateKeyPem, cert: idB.certificatePem, rejectUnauthorized: false })
  t.teardown(() => session.close())
  session.on('error', () => {})
  const stream = session.request({ ':path': '/h2', ':authority': HOST, 'x-forwarded-for': '198.51.100.8' })
  const [headers] = await once(stream, 'response') as [http2.IncomingHttpHeaders]
  let body = ''
  stream.on('data', (c: Buffer) => { body += c.toString() })
  await once(stream, 'end')
  t.equal(headers[':status'], 200)
  t.equal(JSON.parse(body).path, '/h2')
  t.same(o.seen.xff, ['198.51.100.8'])
  t.equal(o.seen.host[0], HOST, ':authority becomes Host')
  t.equal((session.socket as tls.TLSSocket).alpnProtocol, 'h2')
})

t.test('relay client: a server whose certificate is not the pinned one is refused before any request', async t => {
  const o = await origin(t)
  const { a, b, idA, fleet } = await pair(t, o.port)
  const wrong = { ...fleet[0], relayFingerprint: 'f'.repeat(64) }
  const err = await new Promise<Error | null>(resolve => { connectPinned(wrong, idA, 5_000, e => resolve(e)) })
  t.ok(err instanceof RelayError)
  t.equal((err as RelayError).code, 'RELAY_FINGERPRINT_MISMATCH')

  b.edge.updateFleet([wrong, fleet[1]])
  const res = await request(b, HOST)
  t.equal(res.status, 502, 'B answers the offline page')
  t.equal(o.seen.xff.length, 0, 'nothing reached the origin')
  t.equal(relayedLines(a).length, 0, 'A never saw a request')
  b.edge.updateFleet(fleet)
  t.equal((await request(b, HOST)).status, 200, 'the right pin again: served')
})

t.test('a relayed request is never relayed again: A without the instance answers the direct-path error', async t => {
  const o = await origin(t)
  const closed = await startOrigin(t, () => {})
  const closedPort = closed.port
  await new Promise<void>(resolve => { closed.server.close(() => resolve()) })
  const { a, b, live } = await pair(t, o.port, {
    // A: a peer with no live session (its port refuses), and a route known only from the fleet.
    aRoutes: [route('dead', closedPort, ['dead.example.test'], { relayVia: ['gw-b'] }), { instanceId: 'loop', tunnelIp: '', port: 0, hostnames: [LOOP], relayVia: ['gw-b'], remote: true }],
    bRoutes: [{ instanceId: 'dead', tunnelIp: '', port: 0, hostnames: ['dead.example.test'], relayVia: ['gw-a'], remote: true }, { instanceId: 'loop', tunnelIp: '', port: 0, hostnames: [LOOP], relayVia: ['gw-a'], remote: true }],
  })
  live.a = false
  const loop = await request(b, LOOP)
  t.equal(loop.status, 502, 'no peer anywhere: the offline page')
  t.equal(relayedLines(a).length, 1, 'A got it once')
  t.equal(relayedLines(b).length, 0, 'and did not send it back to B')

  const dead = await request(b, 'dead.example.test')
  t.equal(dead.status, 502, 'A\'s peer without a session: the direct path\'s error, not a relay back')
  t.equal(relayedLines(b).length, 0)
  t.equal(relayedLines(a).length, 2)
})

t.test('edge routing: a live local session goes direct, a lapsed one is relayed, no fleet gateway means direct', async t => {
  const o = await origin(t)
  const local = await origin(t)
  const { a, b, live } = await pair(t, o.port)
  // B gets its own peer for the instance (the same hostname, a different origin).
  b.edge.updateRoutes([route('inst', local.port, [HOST], { relayVia: ['gw-b', 'gw-a'] })])
  live.b = true
  t.equal((await request(b, HOST)).status, 200)
  t.equal(local.seen.xff.length, 1, 'live session: direct')
  t.equal(o.seen.xff.length, 0)
  live.b = false
  t.equal((await request(b, HOST)).status, 200)
  t.equal(o.seen.xff.length, 1, 'no session: relayed to gw-a (gw-b is this gateway)')
  b.edge.updateRoutes([route('inst', local.port, [HOST], { relayVia: ['gw-b', 'gw-gone'] })])
  t.equal((await request(b, HOST)).status, 200)
  t.equal(local.seen.xff.length, 2, 'no other fleet gateway holds it: direct, as before the fleet')
  t.equal(relayedLines(a).length, 1)
})

t.test('a session holder that stopped answering is passed over: the next request goes to another holder', async t => {
  const o = await origin(t)
  const closed = await startOrigin(t, () => {})
  const closedPort = closed.port
  await new Promise<void>(resolve => { closed.server.close(() => resolve()) })
  const { a, b, fleet } = await pair(t, o.port)
  // gw-dead (killed: its relay port refuses) is listed first, as a gateway that died would be
  // until control's sweep drops it.
  const idDead = await loadOrCreateRelayIdentity(tempDir(t))
  const dead: FleetGateway = { id: 'gw-dead', relayUrl: `https://127.0.0.1:${closedPort}`, relayFingerprint: idDead.fingerprint }
  b.edge.updateFleet([dead, ...fleet])
  b.edge.updateRoutes([{ instanceId: 'inst', tunnelIp: '', port: 0, hostnames: [HOST], relayVia: ['gw-dead', 'gw-a'], remote: true }])
  const first = await request(b, HOST)
  t.equal(first.status, 502, 'the request that met the dead gateway: the offline page')
  t.equal((await request(b, HOST)).status, 200, 'the next one: relayed to gw-a')
  t.equal((await request(b, HOST)).status, 200, 'and the one after')
  t.equal(relayedLines(a).length, 2, 'gw-a served both')
})

t.test('WebSocket through the relay', async t => {
  const { server, port } = await startOrigin(t, (_req, res) => { res.end() })
  const wss = new WebSocketServer({ server })
  let xff: string | string[] | undefined
  wss.on('connection', (ws, req) => {
    xff = req.headers['x-forwarded-for']
    ws.on('message', (data: Buffer) => ws.send(Buffer.concat([Buffer.from('echo:'), data])))
  })
  t.teardown(() => { wss.close() })
  const { a, b } = await pair(t, port)
  const ws = new WebSocket(`wss://${HOST}:${b.port}/socket`, { ca: b.ca, lookup: loopbackLookup } as WebSocket.ClientOptions)
  await once(ws, 'open')
  const messages: string[] = []
  ws.on('message', (d: Buffer) => messages.push(d.toString()))
  for (let i = 0; i < 5; i++) ws.send(`m${i}`)
  const deadline = Date.now() + 5_000
  while (messages.length < 5 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
  t.same(messages, ['echo:m0', 'echo:m1', 'echo:m2', 'echo:m3', 'echo:m4'])
  t.equal(xff, '127.0.0.1', 'X-Forwarded-For once on the upgrade')
  ws.close()
  await once(ws, 'close')
  const deadline2 = Date.now() + 5_000
  while (relayedLines(a).length < 1 && Date.now() < deadline2) await new Promise(resolve => setTimeout(resolve, 10))
  t.equal(relayedLines(a)[0]?.status, 101, 'A served the upgrade from its relay listener')
})

t.test('a relayed upgrade: B logs its relay target, one request id on both gateways, the origin\'s refusal relayed', async t => {
  const { server, port } = await startOrigin(t, (_req, res) => { res.end() })
  server.on('upgrade', (req: http.IncomingMessage, socket: Duplex) => {
    socket.on('error', () => {})
    if (req.url === '/refuse') { socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 5\r\n\r\nnope\n'); return }
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ' +
      createHash('sha1').update(`${req.headers['sec-websocket-key'] as string}258EAFA5-E914-47DA-95CA-C5AB0DC85B11`).digest('base64') + '\r\n\r\n')
    t.teardown(() => { socket.destroy() })
  })
  const { a, b } = await pair(t, port)
  const ws = new WebSocket(`wss://${HOST}:${b.port}/socket`, { ca: b.ca, lookup: loopbackLookup } as WebSocket.ClientOptions)
  ws.on('error', () => {})
  await once(ws, 'open')
  ws.terminate()
  t.ok(await waitFor(() => b.lines.some(l => l.msg === 'request') && relayedLines(a).length === 1))
  const bLine = b.lines.find(l => l.msg === 'request')
  t.equal(bLine?.status, 101)
  t.equal(bLine?.upgrade, 'websocket')
  t.equal(bLine?.relay, 'gw-a', 'B logs the relay target')
  t.equal(relayedLines(a)[0].reqId, bLine?.reqId, 'one request id across both gateways')
  const refused = new WebSocket(`wss://${HOST}:${b.port}/refuse`, { ca: b.ca, lookup: loopbackLookup } as WebSocket.ClientOptions)
  refused.on('error', () => {})
  const [, res] = await once(refused, 'unexpected-response') as [unknown, http.IncomingMessage]
  let body = ''
  res.on('data', (c: Buffer) => { body += c.toString() })
  await once(res, 'end')
  t.equal(res.statusCode, 403, 'the origin\'s refusal, through both gateways')
  t.equal(body, 'nope\n')
})

t.test('a relayed request is the instance\'s traffic once: on the gateway the client reached, not on the one it was relayed to', async t => {
  const o = await origin(t)
  const { a, b } = await pair(t, o.port)
  const res = await request(b, HOST, { method: 'PUT', path: '/file?sig=abc', body: 'z'.repeat(300) })
  t.equal(res.status, 200)
  t.equal(relayedLines(a).length, 1, 'A served it')
  const atB = b.edge.traffic.take()
  t.same(atB.accessLog.map(e => [e.instanceId, e.method, e.path, e.status, e.bytesIn, e.bytesOut]), [['inst', 'PUT', '/file', 200, 300, res.body.length]])
  t.same(atB.usage.map(u => u.requests), [1])
  t.same(a.edge.traffic.take(), { usage: [], accessLog: [], accessLogDropped: 0 }, 'A records nothing for the relayed request')
})

// TLS passthrough (gateway/edge/passthrough.ts): B does not terminate the client's TLS; A does,
// with its own certificate (the client trusts both gateways' CAs, as it trusts a fleet's shared
// certificates).

const CLIENT = '127.0.0.9'
const passthroughCount = (m: Metrics, what: string): number => m.family('relay_passthrough', '').get(what)
const requestLines = (te: TestEdge): Array<Record<string, unknown>> => te.lines.filter(l => l.msg === 'request')

/** A request to B trusting both CAs, from CLIENT. */
function viaB (p: Pair, host: string, options: RequestOptions = {}): ReturnType<typeof request> {
  return request({ ...p.b, ca: Buffer.concat([p.a.ca, p.b.ca]) }, host, { localAddress: CLIENT, ...options })
}

/** A POST through B carrying forged forwarding headers: A serves it with the client's address, once. */
async function postThroughB (t: Test, p: Pair, o: Awaited<ReturnType<typeof origin>>, bLoggedNothing: string): Promise<void> {
  const res = await viaB(p, HOST, { path: '/hello', method: 'POST', body: 'x'.repeat(1000), headers: { 'x-forwarded-for': '203.0.113.9', forwarded: 'for=203.0.113.9' } })
  t.equal(res.status, 200)
  t.equal(JSON.parse(res.body.toString()).bytes, 1000)
  t.same(o.seen.xff, [CLIENT], 'X-Forwarded-For: the client\'s address (from B\'s preamble), once; the client\'s claim dropped')
  t.same(o.seen.forwarded, [`for=${CLIENT};host="${HOST}:${p.b.port}";proto=https`], 'Forwarded once')
  t.equal(requestLines(p.b).length, 0, bLoggedNothing)
  t.equal(requestLines(p.a)[0]?.client, CLIENT, 'A logs the client\'s address')
}

t.test('passthrough: B hands the client\'s TLS to A, which serves it with the client\'s address; B terminates nothing', async t => {
  const o = await origin(t)
  const p = await pair(t, o.port, { mode: 'passthrough' })
  await postThroughB(t, p, o, 'B saw no request: TLS never ended there')
  t.equal(passthroughCount(p.metrics.b, 'out'), 1)
  t.equal(passthroughCount(p.metrics.a, 'in'), 1)

  // HTTP/2 by the client's ALPN with A.
  const session = http2.connect(`https://${HOST}:${p.b.port}`, { ca: [p.a.ca, p.b.ca], localAddress: CLIENT, lookup: loopbackLookup } as http2.SecureClientSessionOptions)
  t.teardown(() => session.close())
  const stream = session.request({ ':path': '/h2' })
  const [headers] = await once(stream, 'response') as [http2.IncomingHttpHeaders]
  stream.resume()
  await once(stream, 'end')
  t.equal(headers[':status'], 200)
  t.equal(o.seen.xff.at(-1), CLIENT, 'HTTP/2: the client\'s address')
  // The relay hop lengthens the round trip: A advertises the larger relayed windows here too
  // (in a SETTINGS frame after its first).
  const deadline = Date.now() + 5_000
  while (session.remoteSettings.initialWindowSize !== EDGE_DEFAULTS.relayedH2StreamWindow && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
  t.equal(session.remoteSettings.initialWindowSize, EDGE_DEFAULTS.relayedH2StreamWindow, 'the relayed stream window')
  const direct = http2.connect(`https://${HOST}:${p.a.port}`, { ca: [p.a.ca], localAddress: CLIENT, lookup: loopbackLookup } as http2.SecureClientSessionOptions)
  t.teardown(() => direct.close())
  const directStream = direct.request({ ':path': '/direct-h2' })
  directStream.resume()
  await once(directStream, 'end')
  t.equal(direct.remoteSettings.initialWindowSize, EDGE_DEFAULTS.h2StreamWindow, 'a client connected to A itself keeps the listener\'s window')
  t.same(p.b.edge.traffic.take().accessLog, [], 'B records no traffic for what it passed through')
  const atA = p.a.edge.traffic.take().accessLog
  t.same(atA.map(e => [e.path, e.status]), [['/hello', 200], ['/h2', 200], ['/direct-h2', 200]], 'A records it once')
})

t.test('passthrough: a ClientHello that comes a byte at a time is still read and passed through', async t => {
  const o = await origin(t)
  const p = await pair(t, o.port, { mode: 'passthrough' })
  const raw = net.connect({ host: '127.0.0.1', port: p.b.port, localAddress: CLIENT })
  t.teardown(() => raw.destroy())
  await once(raw, 'connect')
  const trickle = new Duplex({
    write (chunk: Buffer, _encoding, callback) {
      let i = 0
      const step = (): void => {
        if (i >= chunk.length) { callback(); return }
        raw.write(chunk.subarray(i, i + 1))
        i++
        setImmediate(step)
      }
      step()
    },
    read () {},
  })
  raw.on('data', (d: Buffer) => trickle.push(d))
  raw.on('end', () => trickle.push(null))
  const res = await new Promise<number>((resolve, reject) => {
    const req = https.request({ host: HOST, port: p.b.port, path: '/slow', createConnection: () => tls.connect({ socket: trickle, servername: HOST, ca: [p.a.ca, p.b.ca] }) }, r => { r.resume(); r.on('end', () => resolve(r.statusCode ?? 0)) })
    req.on('error', reject)
    req.end()
  })
  t.equal(res, 200)
  t.equal(passthroughCount(p.metrics.b, 'out'), 1, 'passed through')
  t.same(o.seen.xff, [CLIENT])
})

t.test('passthrough: a name B does not relay, or no TLS at all, is served by B itself', async t => {
  const o = await origin(t)
  const local = await origin(t)
  const p = await pair(t, o.port, { mode: 'passthrough', bRoutes: [route('mine', local.port, ['mine.example.test'])] })
  t.equal((await request(p.b, 'mine.example.test')).status, 200, 'B\'s own instance: TLS ends at B')
  t.equal(local.seen.xff.length, 1)
  const plain = net.connect({ host: '127.0.0.1', port: p.b.port })
  plain.on('error', () => {})
  plain.end('GET / HTTP/1.1\r\nhost: files.example.test\r\n\r\n')
  await once(plain, 'close')
  t.equal(passthroughCount(p.metrics.b, 'out'), 0, 'nothing passed through')
  t.equal(passthroughCount(p.metrics.a, 'in'), 0)
  t.equal(o.seen.xff.length, 0)
})

t.test('relay listener: a passthrough connection with a malformed preamble is refused and counted', async t => {
  const o = await origin(t)
  const p = await pair(t, o.port, { mode: 'passthrough' })
  const socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
    connectPinned(p.fleet[0], p.idB, 5_000, (err, s) => { if (err !== null) reject(err); else resolve(s!) }, PASSTHROUGH_ALPN)
  })
  t.equal(socket.alpnProtocol, PASSTHROUGH_ALPN)
  socket.on('error', () => {})
  socket.write(Buffer.from([0xff, 0xff, 0x00]))
  await once(socket, 'close')
  t.ok(await waitFor(() => p.metrics.a.family('relay_refused', '').get('passthrough_preamble') === 1), 'counted')
  t.equal(passthroughCount(p.metrics.a, 'in'), 0)
  t.equal(o.seen.xff.length, 0)
})

// Stream relaying (the default mode): B ends the client's TLS with the fleet's certificates and
// pipes the plaintext to A inside the relay connection; A's edge serves it as its own client's.

const streamCount = (m: Metrics, what: string): number => m.family('relay_stream', '').get(what)

t.test('stream: B ends the client\'s TLS and pipes the plaintext to A, which serves it with the client\'s address', async t => {
  const o = await origin(t)
  const p = await pair(t, o.port, { mode: 'stream' })
  await postThroughB(t, p, o, 'B logged no request: it only piped bytes')
  t.equal(relayedLines(p.a).length, 0, 'not a per-request relay')
  t.equal(streamCount(p.metrics.b, 'out'), 1)
  t.equal(streamCount(p.metrics.a, 'in'), 1)
  t.equal(passthroughCount(p.metrics.b, 'out'), 0, 'nothing passed through raw')

  // HTTP/2 by the client's ALPN with B, spoken to A's edge.
  const session = http2.connect(`https://${HOST}:${p.b.port}`, { ca: [p.b.ca], localAddress: CLIENT, lookup: loopbackLookup } as http2.SecureClientSessionOptions)
  t.teardown(() => session.close())
  const stream = session.request({ ':path': '/h2', ':method': 'POST' })
  stream.end('y'.repeat(70_000))
  const [headers] = await once(stream, 'response') as [http2.IncomingHttpHeaders]
  let body = ''
  stream.on('data', (c: Buffer) => { body += c.toString() })
  await once(stream, 'end')
  t.equal(headers[':status'], 200)
  t.equal(JSON.parse(body).bytes, 70_000)
  t.equal((session.socket as tls.TLSSocket).alpnProtocol, 'h2')
  t.equal(o.seen.xff.at(-1), CLIENT, 'HTTP/2: the client\'s address')
  t.equal(streamCount(p.metrics.a, 'in'), 2)
  // The relay hop lengthens the round trip: A's HTTP/2 advertises the larger relayed windows.
  t.equal(session.remoteSettings.initialWindowSize, EDGE_DEFAULTS.relayedH2StreamWindow, 'the relayed stream window')
  t.ok(EDGE_DEFAULTS.relayedH2StreamWindow > EDGE_DEFAULTS.h2StreamWindow)
  t.same(p.b.edge.traffic.take().accessLog, [], 'B records no traffic for what it piped')
  const atA = p.a.edge.traffic.take().accessLog
  t.same(atA.map(e => [e.path, e.status]), [['/hello', 200], ['/h2', 200]], 'A records it once')
})

t.test('stream: 20 MB each way byte-exact, keep-alive requests on one connection', async t => {
  const size = 20 * 1024 * 1024
  const blob = randomBytes(size)
  const digest = (b: Buffer): string => createHash('sha256').update(b).digest('hex')
  const { port } = await startOrigin(t, (req, res) => {
    if (req.method === 'GET') { res.end(blob); return }
    const hash = createHash('sha256')
    let n = 0
    req.on('data', (c: Buffer) => { hash.update(c); n += c.length })
    req.on('end', () => { res.end(JSON.stringify({ bytes: n, sha256: hash.digest('hex') })) })
  })
  const p = await pair(t, port, { mode: 'stream' })
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 })
  t.teardown(() => agent.destroy())
  const down = await viaB(p, HOST, { path: '/blob', agent })
  t.equal(down.status, 200)
  t.equal(down.body.length, size)
  t.equal(digest(down.body), digest(blob), 'download byte-exact')
  const up = await viaB(p, HOST, { path: '/sink', method: 'PUT', body: blob, agent })
  t.same(JSON.parse(up.body.toString()), { bytes: size, sha256: digest(blob) }, 'upload byte-exact')
  t.equal(streamCount(p.metrics.b, 'out'), 1, 'both on one relayed connection')
})

t.test('stream: a request for another name than the connection\'s server name gets 421 at A', async t => {
  const o = await origin(t)
  const other = await origin(t)
  const p = await pair(t, o.port, { mode: 'stream', aRoutes: [route('other', other.port, ['other.example.test'])] })
  const res = await viaB(p, HOST, { headers: { host: 'other.example.test' } })
  t.equal(res.status, 421, 'the client\'s SNI (from the preamble) names another instance')
  t.equal(streamCount(p.metrics.a, 'in'), 1)
  t.equal(other.seen.xff.length + o.seen.xff.length, 0, 'no origin reached')
})

t.test('stream: WebSocket through B to A, with the client\'s address', async t => {
  const { server, port } = await startOrigin(t, (_req, res) => { res.end() })
  const wss = new WebSocketServer({ server })
  let xff: string | string[] | undefined
  wss.on('connection', (ws, req) => {
    xff = req.headers['x-forwarded-for']
    ws.on('message', (data: Buffer) => ws.send(Buffer.concat([Buffer.from('echo:'), data])))
  })
  t.teardown(() => { wss.close() })
  const p = await pair(t, port, { mode: 'stream' })
  const ws = new WebSocket(`wss://${HOST}:${p.b.port}/socket`, { ca: p.b.ca, lookup: loopbackLookup, localAddress: CLIENT } as WebSocket.ClientOptions)
  await once(ws, 'open')
  const messages: string[] = []
  ws.on('message', (d: Buffer) => messages.push(d.toString()))
  for (let i = 0; i < 5; i++) ws.send(`m${i}`)
  t.ok(await waitFor(() => messages.length === 5), 'five echoes')
  t.same(messages, ['echo:m0', 'echo:m1', 'echo:m2', 'echo:m3', 'echo:m4'])
  t.equal(xff, CLIENT, 'X-Forwarded-For once on the upgrade: the client\'s address')
  t.equal(streamCount(p.metrics.a, 'in'), 1)
  ws.close()
  await once(ws, 'close')
  t.ok(await waitFor(() => requestLines(p.a).some(l => l.status === 101)), 'A served the upgrade with its own proxy')
})

t.test('stream: a client whose TLS handshake with B fails takes its relay connection to A down with it, not counted as refused at A', async t => {
  const o = await origin(t)
  // A's preamble timeout is 1 s: a relay connection A kept open until then would be counted.
  const p = await pair(t, o.port, { mode: 'stream', aHandshakeTimeoutMs: 1_000 })
  // A real ClientHello for HOST (so B opens the relay connection), then bytes that are no TLS record.
  const hello = await new Promise<Buffer>(resolve => {
    const capture = net.createServer(s => { s.once('data', (d: Buffer) => { resolve(d); s.destroy() }) })
    capture.listen(0, '127.0.0.1', () => {
      const c = tls.connect({ port: (capture.address() as net.AddressInfo).port, host: '127.0.0.1', servername: HOST })
      c.on('error', () => { capture.close() })
    })
  })
  const raw = net.connect({ host: '127.0.0.1', port: p.b.port, localAddress: CLIENT })
  raw.on('error', () => {})
  raw.resume()
  const closed = once(raw, 'close')
  t.teardown(() => raw.destroy())
  await once(raw, 'connect')
  raw.write(hello)
  // B reads the server name, opens the relay connection to A, then answers the ClientHello.
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(p.metrics.a.family('relay_refused', '').get('stream_preamble'), 0, 'nothing refused at A yet')
  const startedAt = Date.now()
  raw.write(Buffer.from('not a TLS record at all\r\n\r\n'))
  await Promise.race([closed, new Promise(resolve => setTimeout(resolve, 5_000))])
  t.ok(await waitFor(() => p.metrics.b.family('edge_client_errors', '').get('tls_handshake') === 1, 3_000), 'B counted the failed handshake')
  t.ok(Date.now() - startedAt < 5_000, 'B closed the client at once')
  // Past A's preamble timeout: a connection A still held would be counted as a late preamble now.
  await new Promise(resolve => setTimeout(resolve, 1_500))
  t.equal(p.metrics.a.family('relay_refused', '').get('stream_preamble'), 0, 'A closed the relay connection without counting a refusal')
  t.equal(streamCount(p.metrics.a, 'in'), 0)
  t.equal(o.seen.xff.length, 0)
})

/** A relay connection to A's listener as B, negotiating `alpn`. */
async function relayConnection (p: Pair, alpn: string): Promise<tls.TLSSocket> {
  const socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
    connectPinned(p.fleet[0], p.idB, 5_000, (err, s) => { if (err !== null) reject(err); else resolve(s!) }, alpn)
  })
  socket.on('error', () => {})
  return socket
}

t.test('relay listener: a stream whose preamble and first request come in one write is served', async t => {
  const o = await origin(t)
  const p = await pair(t, o.port, { mode: 'stream' })
  const socket = await relayConnection(p, STREAM_ALPN)
  t.teardown(() => socket.destroy())
  t.equal(socket.alpnProtocol, STREAM_ALPN)
  let answer = ''
  socket.on('data', (d: Buffer) => { answer += d.toString('latin1') })
  const body = 'b'.repeat(40_000)
  socket.write(Buffer.concat([
    encodePreamble({ client: '198.51.100.20', port: 40000, alpn: 'http/1.1', servername: HOST }),
    Buffer.from(`POST /one HTTP/1.1\r\nhost: ${HOST}\r\ncontent-length: ${body.length}\r\n\r\n${body}GET /two HTTP/1.1\r\nhost: ${HOST}\r\nconnection: close\r\n\r\n`),
  ]))
  await once(socket, 'close')
  t.equal(answer.match(/HTTP\/1\.1 200 /g)?.length, 2, 'both pipelined requests answered')
  t.match(answer, /"bytes":40000/)
  t.same(o.seen.xff, ['198.51.100.20', '198.51.100.20'], 'the preamble\'s client address, once per request')
})

t.test('relay listener: a stream closed by its gateway before any byte is not refused; one closed mid-preamble is', async t => {
  const o = await origin(t)
  const p = await pair(t, o.port, { mode: 'stream', aHandshakeTimeoutMs: 1_000 })
  const refused = (): number => p.metrics.a.family('relay_refused', '').get('stream_preamble')
  const empty = await relayConnection(p, STREAM_ALPN)
  const emptyClosed = once(empty, 'close')
  empty.end()
  await emptyClosed
  // Past the preamble timeout: a connection A still held would be counted by now.
  await new Promise(resolve => setTimeout(resolve, 1_500))
  t.equal(refused(), 0, 'no byte, then closed: not a refusal')
  const partial = await relayConnection(p, STREAM_ALPN)
  const partialClosed = once(partial, 'close')
  partial.end(encodePreamble({ client: '198.51.100.20', port: 1, alpn: 'http/1.1', servername: HOST }).subarray(0, 5))
  await partialClosed
  t.ok(await waitFor(() => refused() === 1, 3_000), 'part of a preamble, then closed: refused and counted')
  t.equal(streamCount(p.metrics.a, 'in'), 0)
  t.equal(o.seen.xff.length, 0, 'nothing reached the origin')
})

t.test('relay listener: a stream with a malformed, incomplete or late preamble is refused and counted', async t => {
  const o = await origin(t)
  const p = await pair(t, o.port, { mode: 'stream', aHandshakeTimeoutMs: 1_000 })
  const refused = (): number => p.metrics.a.family('relay_refused', '').get('stream_preamble')
  const cases: Array<[string, Buffer | null]> = [
    ['a length past the limit', Buffer.from([0xff, 0xff, 0x00])],
    ['no ALPN protocol nor server name (a passthrough preamble)', encodePreamble({ client: '198.51.100.20', port: 1 })],
    ['an ALPN protocol but no server name', Buffer.concat([Buffer.from([0, 42]), Buffer.from(JSON.stringify({ client: '198.51.100.20', port: 1, alpn: 'h2' }).padEnd(42))])],
    ['nothing within the handshake timeout', null],
  ]
  for (const [i, [name, bytes]] of cases.entries()) {
    const socket = await relayConnection(p, STREAM_ALPN)
    if (bytes !== null) socket.write(bytes)
    await once(socket, 'close')
    t.ok(await waitFor(() => refused() === i + 1), name)
  }
  t.equal(streamCount(p.metrics.a, 'in'), 0)
  t.equal(o.seen.xff.length, 0, 'nothing reached the origin')
})

// What both modes do alike.

const relayCount = (mode: 'passthrough' | 'stream', m: Metrics, what: string): number => m.family(`relay_${mode}`, '').get(what)

for (const mode of ['passthrough', 'stream'] as const) {
  t.test(`${mode}: a holder that cannot be reached: B serves the connection itself and relays the request to the next holder`, async t => {
    const o = await origin(t)
    const closed = await startOrigin(t, () => {})
    const closedPort = closed.port
    await new Promise<void>(resolve => { closed.server.close(() => resolve()) })
    const p = await pair(t, o.port, { mode })
    const idDead = await loadOrCreateRelayIdentity(tempDir(t))
    p.b.edge.updateFleet([{ id: 'gw-dead', relayUrl: `https://127.0.0.1:${closedPort}`, relayFingerprint: idDead.fingerprint }, ...p.fleet])
    p.b.edge.updateRoutes([{ instanceId: 'inst', tunnelIp: '', port: 0, hostnames: [HOST], relayVia: ['gw-dead', 'gw-a'], remote: true }])
    const first = await viaB(p, HOST)
    t.equal(first.status, 200, 'the connection that met the dead holder is served by B, its request relayed to gw-a')
    t.equal(relayCount(mode, p.metrics.b, 'fallback'), 1)
    t.equal(relayedLines(p.a).length, 1, 'relayed per request')
    t.equal((await viaB(p, HOST)).status, 200, 'the next connection goes straight to gw-a')
    t.equal(relayCount(mode, p.metrics.b, 'out'), 1)
    t.same(o.seen.xff, [CLIENT, CLIENT], 'the client\'s address both ways')
  })

  const handed = mode === 'passthrough' ? 'passed through' : 'piped to A'
  t.test(`${mode}: a connection ${handed} is never passed on or relayed again`, async t => {
    const o = await origin(t)
    // A believes B holds the instance, B believes A does: a loop, were anything sent twice.
    const p = await pair(t, o.port, {
      mode,
      aRoutes: [{ instanceId: 'loop', tunnelIp: '', port: 0, hostnames: [LOOP], relayVia: ['gw-b'], remote: true }],
      bRoutes: [{ instanceId: 'loop', tunnelIp: '', port: 0, hostnames: [LOOP], relayVia: ['gw-a'], remote: true }],
    })
    const res = await viaB(p, LOOP)
    t.equal(res.status, 502, 'A has no session: the offline page')
    t.equal(relayCount(mode, p.metrics.a, 'in'), 1, 'A got it once')
    t.equal(relayCount(mode, p.metrics.a, 'out'), 0, 'and did not pass it back')
    t.equal(relayedLines(p.b).length, 0, 'nor relayed the request to B')
    t.equal(relayCount(mode, p.metrics.b, 'in'), 0)
  })
}
