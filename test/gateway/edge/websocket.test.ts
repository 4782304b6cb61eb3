/**
 * WebSocket through the edge: the Upgrade is relayed, the 101 comes back, then bytes flow raw both
 * ways; refusals (unknown host, origin says no, instance offline) come back as HTTP responses;
 * only idle time closes a tunnel.
 */
import t from 'tap'
import { once } from 'node:events'
import { randomBytes } from 'node:crypto'
import type http from 'node:http'
import WebSocket, { WebSocketServer } from 'ws'
import { startEdge, startOrigin, route, loopbackLookup, waitFor, delay, type TestEdge } from './helpers.ts'

async function wsOrigin (t: Parameters<typeof startOrigin>[0]): Promise<{ port: number, upgrades: http.IncomingHttpHeaders[] }> {
  const upgrades: http.IncomingHttpHeaders[] = []
  const { server, port } = await startOrigin(t, (_req, res) => { res.writeHead(404); res.end('no') })
  const wss = new WebSocketServer({ noServer: true })
  server.on('upgrade', (req, socket, head) => {
    upgrades.push(req.headers)
    if (req.url === '/refuse') { socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 6\r\nx-why: policy\r\n\r\nnope!\n'); return }
    wss.handleUpgrade(req, socket, head, ws => {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }))
    })
  })
  t.teardown(() => { for (const c of wss.clients) c.terminate(); wss.close() })
  return { port, upgrades }
}

function connect (te: TestEdge, host: string, path = '/ws'): WebSocket {
  const ws = new WebSocket(`wss://${host}:${te.port}${path}`, { ca: te.ca, lookup: loopbackLookup } as WebSocket.ClientOptions)
  ws.on('error', () => {})
  return ws
}

function rejection (ws: WebSocket): Promise<{ status: number, body: string, headers: http.IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    ws.on('unexpected-response', (_req, res) => {
      let body = ''
      res.on('data', (c: Buffer) => { body += c.toString() })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body, headers: res.headers }))
    })
    ws.on('open', () => reject(new Error('unexpectedly opened')))
  })
}

t.test('echo: text and a 1 MB binary message round-trip through the edge', async t => {
  const origin = await wsOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])])
  const ws = connect(te, 'a.example.test')
  await once(ws, 'open')
  ws.send('hello')
  const [text] = await once(ws, 'message') as [Buffer]
  t.equal(text.toString(), 'hello')
  const blob = randomBytes(1_000_000)
  ws.send(blob)
  const [echoed, isBinary] = await once(ws, 'message') as [Buffer, boolean]
  t.ok(isBinary)
  t.ok(Buffer.compare(echoed, blob) === 0, 'byte-exact')
  for (let i = 0; i < 100; i++) ws.send(`m${i}`)
  const got: string[] = []
  await new Promise<void>(resolve => ws.on('message', d => { got.push(d.toString()); if (got.length === 100) resolve() }))
  t.same(got, Array.from({ length: 100 }, (_, i) => `m${i}`), 'in order')
  const h = origin.upgrades[0]
  t.equal(h['x-forwarded-for'], '127.0.0.1')
  t.equal(h['x-forwarded-proto'], 'https')
  t.equal(h.upgrade, 'websocket')
  t.match(h.connection, /upgrade/i)
  ws.close()
  await once(ws, 'close')
  t.ok(await waitFor(() => te.edge.pool.activeConnections('a') === 0), 'slot released on close')
  t.ok(await waitFor(() => te.lines.some(l => l.upgrade === 'websocket')))
  const line = te.lines.find(l => l.upgrade === 'websocket')
  t.equal(line?.status, 101)
  t.ok((line?.bytesIn as number) > 1_000_000)
})

t.test('refusals come back as HTTP responses', async t => {
  const origin = await wsOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test']), route('dead', 1, ['dead.example.test'])])
  const unknown = await rejection(new WebSocket(`wss://a.example.test:${te.port}/ws`, { ca: te.ca, lookup: loopbackLookup, headers: { host: 'nobody.example.test' } } as WebSocket.ClientOptions))
  t.equal(unknown.status, 404)
  const refused = await rejection(connect(te, 'a.example.test', '/refuse'))
  t.equal(refused.status, 403, "the origin's refusal is relayed")
  t.equal(refused.headers['x-why'], 'policy')
  t.equal(refused.body, 'nope!\n')
  const offline = await rejection(connect(te, 'dead.example.test'))
  t.equal(offline.status, 502)
  t.match(offline.body, /offline/)
})

t.test('an idle WebSocket closes after idleTimeoutMs; one with traffic stays open', async t => {
  const origin = await wsOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])], { idleTimeoutMs: 500 })
  const busy = connect(te, 'a.example.test')
  const idle = connect(te, 'a.example.test')
  await Promise.all([once(busy, 'open'), once(idle, 'open')])
  let idleClosedAt = 0
  const opened = Date.now()
  idle.on('close', () => { idleClosedAt = Date.now() })
  let echoes = 0
  busy.on('message', () => { echoes++ })
  const timer = setInterval(() => busy.send('tick'), 150)
  await delay(1_500)
  clearInterval(timer)
  t.ok(idleClosedAt > 0, 'idle one closed')
  t.ok(idleClosedAt - opened >= 400, `not before the timeout (${idleClosedAt - opened} ms)`)
  t.equal(busy.readyState, WebSocket.OPEN, 'busy one open after 3x the idle timeout')
  t.ok(echoes >= 8)
  busy.close()
})

t.test('WebSocket over the per-instance cap gets 503', async t => {
  const origin = await wsOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'], { maxConnections: 1 })])
  const first = connect(te, 'a.example.test')
  await once(first, 'open')
  const second = await rejection(connect(te, 'a.example.test'))
  t.equal(second.status, 503)
  t.equal(second.headers['retry-after'], '5')
  first.close()
})
