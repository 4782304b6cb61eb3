/**
 * The reverse proxy over real TLS to loopback origins: methods, forwarding and hop-by-hop headers,
 * error pages (404, 421, 502, 504, 503), idle-only timeouts, the per-instance cap, HTTP/2 clients,
 * the keep-alive pool and the access log.
 */
import t from 'tap'
import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import net from 'node:net'
import { createHash } from 'node:crypto'
import { startEdge, startOrigin, startDyingOrigin, readToEnd, route, request, delay, loopbackLookup, waitFor } from './helpers.ts'

interface Seen { method?: string, url?: string, headers: http.IncomingHttpHeaders, body: Buffer }

/** An origin that echoes what it saw as JSON, plus a few misbehaving paths. */
async function echoOrigin (t: Parameters<typeof startOrigin>[0]): Promise<{ port: number, seen: Seen[], connections: () => number, release: () => void }> {
  const seen: Seen[] = []
  let connections = 0
  let held: Array<() => void> = []
  const { server, port } = await startOrigin(t, (req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const body = Buffer.concat(chunks)
      seen.push({ method: req.method, url: req.url, headers: req.headers, body })
      const path = (req.url ?? '').split('?')[0]
      if (path === '/never') return // accept, never answer
      if (path === '/hold') { held.push(() => res.end('released')); return }
      if (path === '/hop') {
        res.writeHead(200, { connection: 'X-Hop-Response, keep-alive', 'x-hop-response': 'secret', 'keep-alive': 'timeout=5', 'x-kept': 'yes' })
        res.end('hop')
        return
      }
      if (path === '/status/201') {
        res.writeHead(201, { location: 'https://a.example.test/files/123', 'content-type': 'text/plain' })
        res.end()
        return
      }
      const json = JSON.stringify({ method: req.method, url: req.url, length: body.length, sha256: createHash('sha256').update(body).digest('hex') })
      res.writeHead(200, { 'content-type': 'application/json', 'x-origin': 'echo', 'content-length': Buffer.byteLength(json) })
      res.end(req.method === 'HEAD' ? undefined : json)
    })
  })
  server.on('connection', () => { connections++ })
  return { port, seen, connections: () => connections, release: () => { const h = held; held = []; h.forEach(f => f()) } }
}

t.test('methods pass through with bodies, paths and queries unchanged', async t => {
  const origin = await echoOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])])
  for (const method of ['GET', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
    const body = method === 'GET' || method === 'OPTIONS' || method === 'DELETE' ? undefined : `payload for ${method}`
    const r = await request(te, 'a.example.test', { method, path: '/x/y?z=1&w=%20', body, headers: body !== undefined ? { 'content-type': 'text/plain' } : {} })
    t.equal(r.status, 200, method)
    const echoed = JSON.parse(r.body.toString()) as { method: string, url: string, length: number, sha256: string }
    t.equal(echoed.method, method)
    t.equal(echoed.url, '/x/y?z=1&w=%20')
    t.equal(echoed.length, body?.length ?? 0)
    if (body !== undefined) t.equal(echoed.sha256, createHash('sha256').update(body).digest('hex'))
    t.equal(r.headers['x-origin'], 'echo')
  }
  const head = await request(te, 'a.example.test', { method: 'HEAD', path: '/x' })
  t.equal(head.status, 200)
  t.equal(head.body.length, 0, 'HEAD: no body')
  t.ok(Number(head.headers['content-length']) > 0, 'HEAD: origin content-length kept')
  const created = await request(te, 'a.example.test', { method: 'POST', path: '/status/201', body: 'x' })
  t.equal(created.status, 201)
  t.equal(created.headers.location, 'https://a.example.test/files/123', 'Location passed unchanged')
})

t.test('an Expect: 100-continue upload goes through', async t => {
  const origin = await echoOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])])
  const body = Buffer.alloc(100_000, 7)
  const r = await new Promise<number>((resolve, reject) => {
    const req = https.request({ host: 'a.example.test', port: te.port, method: 'PUT', path: '/up', ca: te.ca, lookup: loopbackLookup, agent: false,
      headers: { expect: '100-continue', 'content-length': body.length } }, res => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
    req.on('continue', () => req.end(body))
    req.on('error', reject)
  })
  t.equal(r, 200)
  t.equal(origin.seen.at(-1)?.body.length, body.length)
  t.equal(origin.seen.at(-1)?.headers.expect, undefined, 'answered at the edge, not forwarded')
})

t.test('forwarding headers are set by the edge and client copies replaced', async t => {
  const origin = await echoOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])])
  await request(te, 'a.example.test', {
    headers: {
      'x-forwarded-for': '6.6.6.6', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'evil.test', 'x-real-ip': '6.6.6.6',
      forwarded: 'for=6.6.6.6', 'x-request-id': 'mine',
    },
  })
  const h = origin.seen.at(-1)!.headers
  const hostWithPort = `a.example.test:${te.port}`
  t.equal(h.host, hostWithPort, 'Host unchanged')
  t.equal(h['x-forwarded-for'], '127.0.0.1')
  t.equal(h['x-real-ip'], '127.0.0.1')
  t.equal(h['x-forwarded-proto'], 'https')
  t.equal(h['x-forwarded-host'], hostWithPort)
  t.equal(h.forwarded, `for=127.0.0.1;host="${hostWithPort}";proto=https`)
  t.match(h['x-request-id'], /^[0-9a-f]{8}-[0-9a-z]+$/)
  t.not(h['x-request-id'], 'mine')
})

t.test('the origin gets the public authority: lower case, no trailing dot, no default port (HTTP/1.1 and HTTP/2)', async t => {
  const origin = await echoOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['myfiles.example.com'])])
  const seen = (): http.IncomingHttpHeaders => origin.seen.at(-1)!.headers
  const r = await request(te, 'myfiles.example.com', { headers: { host: 'MyFiles.Example.COM.:443' } })
  t.equal(r.status, 200)
  t.equal(seen().host, 'myfiles.example.com')
  t.equal(seen()['x-forwarded-host'], 'myfiles.example.com', 'what tusd builds its Location URLs from')
  t.equal(seen().forwarded, 'for=127.0.0.1;host=myfiles.example.com;proto=https')
  await request(te, 'myfiles.example.com', { headers: { host: 'MYFILES.example.com.:8443' } })
  t.equal(seen()['x-forwarded-host'], 'myfiles.example.com:8443', 'another port is part of the URL')
  const session = http2.connect(`https://myfiles.example.com:${te.port}`, { ca: te.ca, lookup: loopbackLookup } as http2.SecureClientSessionOptions)
  t.teardown(() => session.close())
  const status = await new Promise<number>((resolve, reject) => {
    const stream = session.request({ ':path': '/h2', ':authority': 'MyFiles.Example.COM.:443' })
    stream.on('response', h => resolve(Number(h[':status'])))
    stream.on('error', reject)
    stream.resume()
  })
  t.equal(status, 200)
  t.equal(seen().host, 'myfiles.example.com', ':authority canonicalised the same way')
  t.equal(seen()['x-forwarded-host'], 'myfiles.example.com')
})

t.test('hop-by-hop headers are removed in both directions', async t => {
  const origin = await echoOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])])
  const r = await request(te, 'a.example.test', {
    path: '/hop',
    headers: { connection: 'X-Hop-Request', 'x-hop-request': 'secret', te: 'trailers', 'proxy-authorization': 'Basic eA==', proxy: 'http://evil.test', 'keep-alive': 'timeout=1', 'x-kept': 'yes' },
  })
  const h = origin.seen.at(-1)!.headers
  for (const name of ['x-hop-request', 'te', 'proxy-authorization', 'proxy', 'keep-alive']) t.equal(h[name], undefined, `request ${name} removed`)
  t.equal(h['x-kept'], 'yes')
  t.equal(r.headers['x-hop-response'], undefined, 'response header named by Connection removed')
  t.not(r.headers['keep-alive'], 'timeout=5', "the origin's Keep-Alive is not relayed (the edge's own hop may have one)")
  t.equal(r.headers['x-kept'], 'yes')
})

t.test('unknown host: branded 404 page', async t => {
  const origin = await echoOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])])
  const r = await request(te, 'a.example.test', { headers: { host: 'nobody.example.test' } })
  t.equal(r.status, 404)
  t.match(r.headers['content-type'], /text\/html/)
  t.match(r.body.toString(), /No Erugo instance here/)
  t.match(r.body.toString(), /nobody\.example\.test/)
  t.equal(r.headers['cache-control'], 'no-store')
  t.equal(origin.seen.length, 0)
})

t.test('421 when Host names another instance than the SNI; aliases of one instance are fine', async t => {
  const origin = await echoOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test', 'alias.example.test']), route('b', origin.port, ['b.example.test'])])
  // A connection opened (and verified) for a.example.test, carrying a request for b.example.test.
  const r = await request(te, 'a.example.test', { headers: { host: 'b.example.test' } })
  t.equal(r.status, 421)
  t.match(r.body.toString(), /Misdirected request/)
  t.equal(origin.seen.length, 0, 'instance b never saw it')
  const alias = await request(te, 'a.example.test', { headers: { host: 'alias.example.test' } })
  t.equal(alias.status, 200, 'same instance under another of its names')
})

t.test('502 page when the instance refuses; the edge keeps serving', async t => {
  const closed = net.createServer()
  await new Promise<void>(resolve => closed.listen(0, '127.0.0.1', resolve))
  const deadPort = (closed.address() as net.AddressInfo).port
  await new Promise<void>(resolve => closed.close(() => resolve()))
  const origin = await echoOrigin(t)
  const te = await startEdge(t, [route('dead', deadPort, ['dead.example.test']), route('a', origin.port, ['a.example.test'])])
  const r = await request(te, 'dead.example.test')
  t.equal(r.status, 502)
  t.match(r.body.toString(), /This Erugo instance is offline/)
  const post = await request(te, 'dead.example.test', { method: 'POST', body: Buffer.alloc(1_000_000) })
  t.equal(post.status, 502, 'also with a request body')
  t.equal((await request(te, 'a.example.test')).status, 200, 'others unaffected')
  t.ok(await waitFor(() => te.lines.some(l => l.host === `dead.example.test:${te.port}`)), 'logged')
  const line = te.lines.find(l => l.host === `dead.example.test:${te.port}`)
  t.match(line?.error, /ECONNREFUSED/)
})

t.test('502 when the connector throws (peer without a session)', async t => {
  const te = await startEdge(t, [route('a', 1, ['a.example.test'])], {
    connector: { createConnection: () => { throw new Error('no session with peer') } },
  })
  const r = await request(te, 'a.example.test')
  t.equal(r.status, 502)
})

t.test('504 when the origin sends no response headers within upstreamTimeoutMs', async t => {
  const origin = await echoOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])], { upstreamTimeoutMs: 300 })
  const started = Date.now()
  const r = await request(te, 'a.example.test', { path: '/never' })
  t.equal(r.status, 504)
  t.match(r.body.toString(), /did not answer/)
  t.ok(Date.now() - started < 5_000)
})

t.test('only idle time ends a transfer: a slow drip longer than every timeout completes', async t => {
  const { port } = await startOrigin(t, (req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    let n = 0
    const timer = setInterval(() => {
      res.write(Buffer.from([n]))
      if (++n === 8) { clearInterval(timer); res.end() }
    }, 250) // 2 s in all, each gap well under the idle timeout
    res.on('close', () => clearInterval(timer))
  })
  const te = await startEdge(t, [route('a', port, ['a.example.test'])], { idleTimeoutMs: 800, upstreamTimeoutMs: 800, headersTimeoutMs: 800, keepAliveTimeoutMs: 800 })
  const r = await request(te, 'a.example.test')
  t.equal(r.status, 200)
  t.same([...r.body], [0, 1, 2, 3, 4, 5, 6, 7], 'every byte, in order')
})

t.test('a slow upload (a byte every 250 ms for 2 s) completes with an 800 ms idle timeout', async t => {
  const origin = await echoOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])], { idleTimeoutMs: 800, upstreamTimeoutMs: 800, headersTimeoutMs: 800 })
  const status = await new Promise<number>((resolve, reject) => {
    const req = https.request({ host: 'a.example.test', port: te.port, method: 'POST', path: '/slow', ca: te.ca, lookup: loopbackLookup, agent: false },
      res => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
    req.on('error', reject)
    let n = 0
    const timer = setInterval(() => {
      req.write('x')
      if (++n === 8) { clearInterval(timer); req.end() }
    }, 250)
  })
  t.equal(status, 200)
  t.equal(origin.seen.at(-1)?.body.toString(), 'xxxxxxxx')
})

t.test('a transfer idle for longer than idleTimeoutMs is closed', async t => {
  const { port } = await startOrigin(t, (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 100 })
    res.write('first') // then nothing: stalled
  })
  const te = await startEdge(t, [route('a', port, ['a.example.test'])], { idleTimeoutMs: 400 })
  const started = Date.now()
  const outcome = await new Promise<string>(resolve => {
    const req = https.request({ host: 'a.example.test', port: te.port, ca: te.ca, lookup: loopbackLookup, agent: false }, res => {
      let got = ''
      res.on('data', (c: Buffer) => { got += c.toString() })
      res.on('end', () => resolve(`end:${got}`))
      res.on('error', () => resolve(`cut:${got}`))
      res.on('aborted', () => resolve(`cut:${got}`))
    })
    req.on('error', () => resolve('error'))
    req.end()
  })
  t.equal(outcome, 'cut:first', 'response cut after the stall')
  const elapsed = Date.now() - started
  t.ok(elapsed >= 350 && elapsed < 5_000, `closed after the idle timeout (${elapsed} ms)`)
  t.ok(await waitFor(() => te.lines.some(l => l.error === 'IDLE_TIMEOUT: idle timeout')), 'logged as idle timeout')
})

t.test('per-instance cap: 503 with Retry-After beyond it, others unaffected', async t => {
  const origin = await echoOrigin(t)
  const other = await echoOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'], { maxConnections: 2 }), route('b', other.port, ['b.example.test'])])
  const held = [request(te, 'a.example.test', { path: '/hold' }), request(te, 'a.example.test', { path: '/hold' })]
  t.ok(await waitFor(() => origin.seen.length === 2), 'two requests in flight')
  const over = await request(te, 'a.example.test')
  t.equal(over.status, 503)
  t.equal(over.headers['retry-after'], '5')
  t.match(over.body.toString(), /busy/)
  t.equal((await request(te, 'b.example.test')).status, 200, 'another instance is not capped by a')
  origin.release()
  t.same((await Promise.all(held)).map(r => r.status), [200, 200])
  t.equal((await request(te, 'a.example.test')).status, 200, 'slots come back')
  t.equal(te.edge.pool.activeConnections('a'), 0)
})

t.test('keep-alive pool: sequential requests reuse one upstream connection', async t => {
  const origin = await echoOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])])
  for (let i = 0; i < 10; i++) t.equal((await request(te, 'a.example.test', { path: `/n${i}` })).status, 200)
  t.equal(origin.connections(), 1)
})

/**
 * A raw origin that answers the first request on each connection (keep-alive) and resets the
 * connection when a second one arrives on it: the race of a pooled connection the origin is
 * closing just as it is reused, made certain.
 */
async function oneShotOrigin (t: Parameters<typeof startOrigin>[0]): Promise<{ port: number, connections: () => number }> {
  let connections = 0
  const server = net.createServer(socket => {
    connections++
    let requests = 0
    let buffered = ''
    socket.on('error', () => {})
    socket.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('latin1')
      while (buffered.includes('\r\n\r\n')) {
        buffered = buffered.slice(buffered.indexOf('\r\n\r\n') + 4)
        if (++requests > 1) { socket.resetAndDestroy(); return }
        socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: keep-alive\r\n\r\nok')
      }
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => server.close(() => resolve())))
  return { port: (server.address() as net.AddressInfo).port, connections: () => connections }
}

t.test('a pooled connection reset on reuse: an idempotent request goes once more on a new one, others get 502', async t => {
  const origin = await oneShotOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])])
  t.equal((await request(te, 'a.example.test', { path: '/first' })).status, 200)
  const post = await request(te, 'a.example.test', { method: 'POST', path: '/second' })
  t.equal(post.status, 502, 'a POST on the reset connection is not retried')
  t.equal(origin.connections(), 1)
  t.equal((await request(te, 'a.example.test', { path: '/third' })).status, 200, 'a new connection')
  t.equal(origin.connections(), 2)
  const again = await request(te, 'a.example.test', { path: '/fourth' })
  t.equal(again.status, 200, 'a GET on the reset connection is retried')
  t.equal(again.body.toString(), 'ok')
  t.equal(origin.connections(), 3, 'the retry opened a third connection')
})

t.test('HTTP/2 clients: GET, POST, forwarding headers, 421 for another instance on the session', async t => {
  const origin = await echoOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test']), route('b', origin.port, ['b.example.test'])])
  const session = http2.connect(`https://a.example.test:${te.port}`, { ca: te.ca, lookup: loopbackLookup } as http2.SecureClientSessionOptions)
  t.teardown(() => session.close())
  const h2 = (headers: http2.OutgoingHttpHeaders, body?: string): Promise<{ status: number, body: string, headers: http2.IncomingHttpHeaders }> =>
    new Promise((resolve, reject) => {
      const stream = session.request(headers)
      let text = ''
      let responseHeaders: http2.IncomingHttpHeaders = {}
      stream.on('response', h => { responseHeaders = h })
      stream.on('data', (c: Buffer) => { text += c.toString() })
      stream.on('end', () => resolve({ status: Number(responseHeaders[':status']), body: text, headers: responseHeaders }))
      stream.on('error', reject)
      stream.end(body)
    })
  const get = await h2({ ':path': '/h2?q=1' })
  t.equal(get.status, 200)
  t.equal(JSON.parse(get.body).url, '/h2?q=1')
  t.equal(get.headers['x-origin'], 'echo')
  const post = await h2({ ':method': 'POST', ':path': '/h2', 'content-type': 'text/plain' }, 'hello over h2')
  t.equal(JSON.parse(post.body).length, 13)
  const seen = origin.seen.at(-1)!.headers
  t.equal(seen.host, `a.example.test:${te.port}`, ':authority becomes Host')
  t.equal(seen['x-forwarded-proto'], 'https')
  t.notOk(Object.keys(seen).some(k => k.startsWith(':')))
  const misdirected = await h2({ ':path': '/', ':authority': 'b.example.test' })
  t.equal(misdirected.status, 421)
  t.ok(await waitFor(() => te.lines.some(l => l.proto === 'h2' && l.method === 'POST')))
  const log = te.lines.find(l => l.proto === 'h2' && l.method === 'POST')
  t.equal(log?.bytesIn, 13)
})

t.test('one access-log line per request with method, host, path, status, bytes and duration', async t => {
  const origin = await echoOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])])
  await request(te, 'a.example.test', { method: 'POST', path: '/logged?secret=1', body: 'abcdef' })
  t.ok(await waitFor(() => te.lines.some(l => l.msg === 'request')))
  const lines = te.lines.filter(l => l.msg === 'request')
  t.equal(lines.length, 1)
  const line = lines[0]
  t.equal(line.method, 'POST')
  t.equal(line.host, `a.example.test:${te.port}`)
  t.equal(line.path, '/logged', 'query not logged')
  t.equal(line.status, 200)
  t.equal(line.bytesIn, 6)
  t.ok((line.bytesOut as number) > 0)
  t.type(line.durationMs, 'number')
  t.equal(line.instanceId, 'a')
  t.match(line.reqId, /^[0-9a-f]{8}-/)
})

t.test('a client that disconnects mid-download frees the instance slot and the upstream', async t => {
  let upstreamClosed = false
  const { port } = await startOrigin(t, (_req, res) => {
    res.writeHead(200)
    const timer = setInterval(() => res.write(Buffer.alloc(16_384)), 5)
    res.on('close', () => { clearInterval(timer); upstreamClosed = true })
  })
  const te = await startEdge(t, [route('a', port, ['a.example.test'])])
  await new Promise<void>(resolve => {
    const req = https.request({ host: 'a.example.test', port: te.port, ca: te.ca, lookup: loopbackLookup, agent: false }, res => {
      res.once('data', () => { req.destroy(); resolve() })
    })
    req.on('error', () => {})
    req.end()
  })
  t.ok(await waitFor(() => upstreamClosed), 'upstream connection closed')
  t.ok(await waitFor(() => te.edge.pool.activeConnections('a') === 0), 'slot released')
})

t.test('the upstream vanishing mid-response cuts the client response promptly', async t => {
  const { port } = await startDyingOrigin(t, 1_000_000)
  const te = await startEdge(t, [route('a', port, ['a.example.test'])])
  const started = Date.now()
  const outcome = await readToEnd(te)
  t.equal(outcome, 'cut')
  t.ok(Date.now() - started < 3_000)
  await delay(10)
})
