/**
 * The edge over the gateway's own userspace TCP (gateway/netstack/tcp): the production connector
 * shape, `(route, o) => tcp.createConnection({ host: o.host, port: o.port })`, between two
 * TcpStacks joined by an in-memory link. The origin is a node http.Server fed the far stack's
 * sockets. Checks plain requests, 20 MB each way byte-exact, WebSocket, refusal (RST -> 502) and
 * a dead link (connect timeout -> 502).
 */
import t from 'tap'
import http from 'node:http'
import https from 'node:https'
import { once } from 'node:events'
import { createHash, randomBytes } from 'node:crypto'
import WebSocket, { WebSocketServer } from 'ws'
import { StackPair } from '../netstack/tcp/harness.ts'
import type { UpstreamConnector } from '../../../gateway/edge/index.ts'
import { startEdge, route, request, loopbackLookup, waitFor } from './helpers.ts'

const PEER = '10.100.0.2'

function tunnel (t: Parameters<typeof startEdge>[0], handler: http.RequestListener): { pair: StackPair, connector: UpstreamConnector, server: http.Server } {
  const pair = new StackPair({ timeWait: 100 })
  const server = http.createServer(handler)
  pair.b.listen(80, socket => {
    socket.on('error', () => {})
    server.emit('connection', socket)
  })
  t.teardown(() => { server.closeAllConnections(); pair.close() })
  const connector: UpstreamConnector = { createConnection: (_route, o) => pair.a.createConnection({ host: o.host, port: o.port }) }
  return { pair, connector, server }
}

t.test('requests and 20 MB each way over the userspace TCP stack', async t => {
  const block = randomBytes(20 * 1024 * 1024)
  const sha = createHash('sha256').update(block).digest('hex')
  let uploaded = ''
  const { connector } = tunnel(t, (req, res) => {
    if (req.method === 'PUT') {
      const h = createHash('sha256')
      req.on('data', (c: Buffer) => h.update(c))
      req.on('end', () => { uploaded = h.digest('hex'); res.end('ok') })
      return
    }
    if (req.url === '/big') { res.writeHead(200, { 'content-length': block.length }); res.end(block); return }
    res.end(JSON.stringify({ xff: req.headers['x-forwarded-for'], proto: req.headers['x-forwarded-proto'], remote: req.socket.remoteAddress }))
  })
  const te = await startEdge(t, [route('a', 80, ['a.example.test'], { tunnelIp: PEER })], { connector })
  const small = await request(te, 'a.example.test')
  t.equal(small.status, 200)
  const seen = JSON.parse(small.body.toString()) as { xff: string, proto: string, remote: string }
  t.equal(seen.xff, '127.0.0.1')
  t.equal(seen.proto, 'https')
  t.equal(seen.remote, '10.100.0.1', 'the origin sees the gateway tunnel address')
  const down = await request(te, 'a.example.test', { path: '/big' })
  t.equal(createHash('sha256').update(down.body).digest('hex'), sha, 'download byte-exact')
  const put = await request(te, 'a.example.test', { method: 'PUT', path: '/up', body: block })
  t.equal(put.status, 200)
  t.equal(uploaded, sha, 'upload byte-exact')
})

t.test('WebSocket echo over the userspace TCP stack', async t => {
  const { server, connector } = tunnel(t, (_req, res) => { res.end() })
  const wss = new WebSocketServer({ server })
  wss.on('connection', ws => ws.on('message', (d, bin) => ws.send(d, { binary: bin })))
  t.teardown(() => { for (const c of wss.clients) c.terminate(); wss.close() })
  const te = await startEdge(t, [route('a', 80, ['a.example.test'], { tunnelIp: PEER })], { connector })
  const ws = new WebSocket(`wss://a.example.test:${te.port}/`, { ca: te.ca, lookup: loopbackLookup } as WebSocket.ClientOptions)
  await once(ws, 'open')
  const payload = randomBytes(200_000)
  ws.send(payload)
  const [echo] = await once(ws, 'message') as [Buffer]
  t.ok(Buffer.compare(echo, payload) === 0)
  ws.close()
})

t.test('a closed port on the peer (RST) and a dead link both give 502', async t => {
  const { pair, connector } = tunnel(t, (_req, res) => { res.end() })
  const te = await startEdge(t, [
    route('closed', 81, ['closed.example.test'], { tunnelIp: PEER }),
    route('a', 80, ['a.example.test'], { tunnelIp: PEER }),
  ], { connector, connectTimeoutMs: 500 })
  const refused = await request(te, 'closed.example.test')
  t.equal(refused.status, 502)
  // The access-log line is written when the response closes, which may trail the client's read.
  t.ok(await waitFor(() => te.lines.some(l => l.host === `closed.example.test:${te.port}`)))
  t.match(te.lines.find(l => l.host === `closed.example.test:${te.port}`)?.error, /ECONNREFUSED/)
  pair.up = false
  const started = Date.now()
  const dead = await request(te, 'a.example.test', { agent: new https.Agent({ keepAlive: false }) })
  t.equal(dead.status, 502, 'connect timeout while the link is down')
  t.ok(Date.now() - started < 5_000)
  pair.up = true
  t.equal((await request(te, 'a.example.test')).status, 200, 'back once the link is')
})
