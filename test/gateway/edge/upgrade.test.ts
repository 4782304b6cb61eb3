/**
 * Upgrades through the edge on the wire (raw TLS client, raw origin sockets): the origin's 101 head
 * as it sent it and the bytes sent with either head, the route's pooled connection reused for an
 * upgrade, a client over its share of an instance's slots (429), an origin that never answers (504
 * page), one that answers without switching (relayed, then the connection closes), and control's
 * HSTS on an upgrade's answers.
 */
import t, { type Test } from 'tap'
import net from 'node:net'
import tls from 'node:tls'
import type { Duplex } from 'node:stream'
import { controlRoute } from '../../../gateway/edge/index.ts'
import { request, route, startEdge, startOrigin, waitFor, type TestEdge } from './helpers.ts'

/** A raw TLS connection to the edge for `host`, everything it receives kept in `received`. */
async function rawClient (t: Test, te: TestEdge, host: string, localAddress = '127.0.0.1'): Promise<{ socket: tls.TLSSocket, received: () => string, closed: () => boolean }> {
  const tcp = net.connect({ host: '127.0.0.1', port: te.port, localAddress })
  tcp.on('error', () => {})
  const socket = tls.connect({ socket: tcp, servername: host, ca: te.ca })
  let received = ''
  let closed = false
  socket.on('data', (c: Buffer) => { received += c.toString('latin1') })
  socket.on('error', () => {})
  socket.on('close', () => { closed = true })
  t.teardown(() => { socket.destroy() })
  await new Promise<void>((resolve, reject) => { socket.once('secureConnect', resolve); socket.once('error', reject) })
  return { socket, received: () => received, closed: () => closed }
}

function upgradeRequest (host: string, path = '/ws', protocol = 'echo'): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: Upgrade\r\nUpgrade: ${protocol}\r\n\r\n`
}

/** An origin whose upgrade handler is `onUpgrade`; plain requests answer 200 with the client's port. */
async function upgradeOrigin (t: Test, onUpgrade: (socket: Duplex, head: Buffer, url: string, remotePort: number) => void): Promise<number> {
  const { server, port } = await startOrigin(t, (req, res) => { res.end(String(req.socket.remotePort)) })
  server.on('upgrade', (req, socket: Duplex, head: Buffer) => {
    socket.on('error', () => {})
    t.teardown(() => { socket.destroy() })
    onUpgrade(socket, head, req.url ?? '', req.socket.remotePort ?? 0)
  })
  return port
}

t.test('upgrade switched: the origin\'s 101 head as it sent it, and bytes sent with either head cross', async t => {
  let fromClient = ''
  const port = await upgradeOrigin(t, (socket, head) => {
    fromClient += head.toString('latin1')
    socket.on('data', (c: Buffer) => {
      fromClient += c.toString('latin1')
      if (fromClient.includes('ping')) socket.write('pong')
    })
    // The head and the first bytes after it in one write; one field value with an obs-text byte.
    socket.write(Buffer.from('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\nX-Origin-Case: Kept\r\nX-Latin: caf\u00e9\r\n\r\nearly-from-origin', 'latin1'))
  })
  const te = await startEdge(t, [route('a', port, ['a.example.test'])])
  const client = await rawClient(t, te, 'a.example.test')
  client.socket.write(upgradeRequest('a.example.test') + 'early-from-client')
  t.ok(await waitFor(() => client.received().includes('early-from-origin')), 'the origin\'s bytes after its 101 arrive')
  const [head, rest] = client.received().split('\r\n\r\n', 2)
  t.match(head, /^HTTP\/1\.1 101 /)
  t.match(head, /\r\nX-Origin-Case: Kept(\r\n|$)/, 'the origin\'s fields as it wrote them')
  t.match(head, /\r\nX-Latin: caf\u00e9(\r\n|$)/, 'byte for byte')
  t.equal(rest, 'early-from-origin')
  t.ok(await waitFor(() => fromClient.includes('early-from-client')), 'the client\'s bytes sent with its request reach the origin')
  client.socket.write('ping')
  t.ok(await waitFor(() => client.received().endsWith('pong')), 'then bytes flow both ways')
  client.socket.end()
  t.ok(await waitFor(() => te.edge.pool.activeConnections('a') === 0), 'slot released on close')
  t.ok(await waitFor(() => te.lines.some(l => l.msg === 'request' && l.status === 101)))
  const line = te.lines.find(l => l.msg === 'request' && l.status === 101)
  t.equal(line?.upgrade, 'echo')
  t.equal(line?.instanceId, 'a')
  t.equal(line?.bytesIn, 'early-from-client'.length + 'ping'.length)
  t.equal(line?.bytesOut, 'early-from-origin'.length + 'pong'.length)
  t.equal(line?.cancelled, undefined)
})

t.test('upgrade after a request: it goes over the route\'s pooled keep-alive connection', async t => {
  let upgradedFrom = 0
  const port = await upgradeOrigin(t, (socket, _head, _url, remotePort) => {
    upgradedFrom = remotePort
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n')
  })
  const te = await startEdge(t, [route('a', port, ['a.example.test'])])
  const first = await request(te, 'a.example.test')
  t.equal(first.status, 200)
  const client = await rawClient(t, te, 'a.example.test')
  client.socket.write(upgradeRequest('a.example.test'))
  t.ok(await waitFor(() => client.received().startsWith('HTTP/1.1 101 ')))
  t.equal(String(upgradedFrom), first.body.toString(), 'the upgrade used the connection the request left idle in the pool')
})

t.test('upgrades from one client over its share of the instance\'s slots: 429, while another client is granted', async t => {
  const port = await upgradeOrigin(t, socket => {
    socket.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n')
  })
  // 16 slots, a quarter each: a client may still hold MIN_CLIENT_SLOTS (8).
  const te = await startEdge(t, [route('a', port, ['a.example.test'], { maxConnections: 16 })])
  const held = await Promise.all(Array.from({ length: 8 }, async () => await rawClient(t, te, 'a.example.test')))
  for (const c of held) c.socket.write(upgradeRequest('a.example.test'))
  t.ok(await waitFor(() => held.every(c => c.received().startsWith('HTTP/1.1 101 '))), 'eight upgrades switched')
  t.equal(te.edge.pool.clientConnections('a', '127.0.0.1'), 8)
  const ninth = await rawClient(t, te, 'a.example.test')
  ninth.socket.write(upgradeRequest('a.example.test'))
  t.ok(await waitFor(() => ninth.closed()))
  t.match(ninth.received(), /^HTTP\/1\.1 429 /)
  t.match(ninth.received(), /\r\nretry-after: 5\r\n/i)
  const other = await rawClient(t, te, 'a.example.test', '127.0.0.2')
  other.socket.write(upgradeRequest('a.example.test'))
  t.ok(await waitFor(() => other.received().startsWith('HTTP/1.1 101 ')), 'another address still gets a slot')
  for (const c of [...held, other]) c.socket.destroy()
  t.ok(await waitFor(() => te.edge.pool.activeConnections('a') === 0), 'every slot released')
})

t.test('upgrade the origin never answers: the timeout page after upstreamTimeoutMs, the slot released', async t => {
  let asked = 0
  const port = await upgradeOrigin(t, () => { asked++ })
  const te = await startEdge(t, [route('a', port, ['a.example.test'])], { upstreamTimeoutMs: 300 })
  const client = await rawClient(t, te, 'a.example.test')
  const sent = Date.now()
  client.socket.write(upgradeRequest('a.example.test'))
  t.ok(await waitFor(() => client.closed()), 'the edge closes the connection after its answer')
  const waited = Date.now() - sent
  t.ok(waited >= 250, `not before the deadline (${waited} ms)`)
  t.equal(asked, 1)
  t.match(client.received(), /^HTTP\/1\.1 504 /)
  t.match(client.received(), /\r\nconnection: close\r\n/i)
  t.match(client.received(), /\r\nx-request-id: /i)
  t.ok(await waitFor(() => te.edge.pool.activeConnections('a') === 0), 'slot released')
  const line = te.lines.find(l => l.msg === 'request' && l.upgrade === 'echo')
  t.equal(line?.status, 504)
  t.match(String(line?.error), /UPSTREAM_TIMEOUT/)
})

t.test('upgrade answered without switching: the response relayed whole, then the connection closes', async t => {
  const port = await upgradeOrigin(t, socket => {
    socket.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Plain: yes\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n')
  })
  const te = await startEdge(t, [route('a', port, ['a.example.test'])])
  const client = await rawClient(t, te, 'a.example.test')
  client.socket.write(upgradeRequest('a.example.test') + 'never-forwarded')
  t.ok(await waitFor(() => client.closed()), 'the edge closes the connection after the response')
  const [head, body] = client.received().split('\r\n\r\n', 2)
  t.match(head, /^HTTP\/1\.1 200 /)
  t.match(head, /\r\nx-plain: yes(\r\n|$)/i)
  t.match(head, /\r\nconnection: close(\r\n|$)/i)
  t.notMatch(head, /transfer-encoding/i, 'hop-by-hop fields dropped: the body ends with the connection')
  t.equal(body, 'hello world')
  const line = te.lines.find(l => l.msg === 'request' && l.upgrade === 'echo')
  t.equal(line?.status, 200)
  t.equal(line?.bytesOut, 11)
})

t.test('upgrade on control\'s names: HSTS on the edge\'s pages and on an answer without switching', async t => {
  const port = await upgradeOrigin(t, socket => {
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno')
  })
  const te = await startEdge(t, [controlRoute('erugo.test', { host: '127.0.0.1', port })])
  const refused = await rawClient(t, te, 'app.erugo.test')
  refused.socket.write(upgradeRequest('app.erugo.test'))
  t.ok(await waitFor(() => refused.closed()))
  t.match(refused.received(), /^HTTP\/1\.1 403 /)
  t.match(refused.received(), /\r\nstrict-transport-security: max-age=31536000\r\n/i)
  const misdirected = await rawClient(t, te, 'app.erugo.test')
  misdirected.socket.write(upgradeRequest('api.erugo.test:443', 'http://api.erugo.test/ws'))
  t.ok(await waitFor(() => misdirected.closed()))
  t.match(misdirected.received(), /^HTTP\/1\.1 400 /, 'an absolute-form target is refused by the edge')
  t.match(misdirected.received(), /\r\nstrict-transport-security: max-age=31536000\r\n/i)
})
