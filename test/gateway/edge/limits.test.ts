/**
 * Fairness limits at the edge (gateway/edge/limits.ts), each attacked over real TLS and HTTP/2 on
 * loopback: one client address holding many stalled uploads cannot take an instance's slots from
 * another address; a stalled upload is ended only while slots are scarce; connections per address
 * are capped at accept; a TLS handshake that never completes is cut.
 */
import t from 'tap'
import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import net from 'node:net'
import tls from 'node:tls'
import { startEdge, startOrigin, route, delay, waitFor, type TestEdge, type Teardown } from './helpers.ts'
import { clientKey } from '../../../gateway/edge/limits.ts'

const HOST = 'a.example.test'

/** An origin that answers once the request body has ended; /hold waits for release(). */
async function waitingOrigin (t: Teardown): Promise<{ port: number, started: () => number, release: () => void }> {
  let started = 0
  let held: Array<() => void> = []
  const { port } = await startOrigin(t, (req, res) => {
    started++
    req.resume()
    req.on('end', () => {
      if (req.url === '/hold') { held.push(() => res.end('released')); return }
      res.end(`ok ${req.method ?? ''}`)
    })
  })
  return { port, started: () => started, release: () => { const h = held; held = []; h.forEach(f => f()) } }
}

/** A TCP connection to the edge's HTTPS port from `localAddress` (any of 127.0.0.0/8 is loopback). */
function tcpFrom (te: TestEdge, localAddress: string): net.Socket {
  return net.connect({ host: '127.0.0.1', port: te.port, localAddress })
}

/** An HTTP/2 session to the edge whose TCP connection comes from `localAddress`. */
function h2Session (t: Teardown, te: TestEdge, localAddress = '127.0.0.1'): http2.ClientHttp2Session {
  const session = http2.connect(`https://${HOST}:${te.port}`, {
    createConnection: () => tls.connect({ socket: tcpFrom(te, localAddress), servername: HOST, ca: te.ca, ALPNProtocols: ['h2'] }),
  })
  session.on('error', () => {})
  t.teardown(() => session.destroy())
  return session
}

/** A POST whose body sends one byte and then nothing; resolves with the status once answered. */
function stalledUpload (session: http2.ClientHttp2Session): Promise<number> {
  return new Promise(resolve => {
    const stream = session.request({ ':method': 'POST', ':path': '/upload', 'content-type': 'application/octet-stream' })
    stream.on('response', h => resolve(Number(h[':status'])))
    stream.on('error', () => resolve(-1))
    stream.resume()
    stream.write(Buffer.from([1]))
  })
}

function h2Get (session: http2.ClientHttp2Session, path = '/'): Promise<number> {
  return new Promise(resolve => {
    const stream = session.request({ ':path': path })
    stream.on('response', h => resolve(Number(h[':status'])))
    stream.on('error', () => resolve(-1))
    stream.resume()
  })
}

t.test('300 stalled uploads from one address take its share of the slots; another address still gets 200', async t => {
  const origin = await waitingOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, [HOST])]) // default limits: 256 slots, 1/4 per address, 32 streams
  const attacker = Array.from({ length: 10 }, () => h2Session(t, te))
  await Promise.all(attacker.map(s => new Promise(resolve => s.once('remoteSettings', resolve))))
  t.equal(attacker[0].remoteSettings.maxConcurrentStreams, 32, 'the edge allows 32 streams per connection')

  const statuses: number[] = []
  for (const session of attacker) {
    for (let i = 0; i < 30; i++) void stalledUpload(session).then(s => statuses.push(s))
  }
  const share = 256 / 4
  t.ok(await waitFor(() => statuses.length === 300 - share && te.edge.pool.activeConnections('a') === share, 10_000),
    `the address holds ${share} slots and the rest is refused (${statuses.length} answered, ${te.edge.pool.activeConnections('a')} slots)`)
  t.ok(statuses.every(s => s === 429), 'refused with 429')
  t.ok(await waitFor(() => origin.started() === share), `its share reached the origin (${origin.started()})`)

  const other = h2Session(t, te, '127.0.0.2')
  t.equal(await h2Get(other), 200, 'another client address is served')
  t.equal(await h2Get(attacker[0]), 429, 'the first address gets 429 for anything more')
  t.equal(te.edge.pool.activeConnections('a'), share, 'the stalled uploads are left alone while slots are plentiful')
})

t.test('clients are counted by IPv4 address and by IPv6 /64', async t => {
  t.equal(clientKey('127.0.0.2'), '127.0.0.2')
  t.equal(clientKey('::ffff:198.51.100.7'), '198.51.100.7')
  t.equal(clientKey('2001:db8:1:2:aaaa::1'), '2001:db8:1:2::/64')
  t.equal(clientKey('2001:0db8:0001:0002:ffff:ffff:ffff:ffff'), '2001:db8:1:2::/64', 'same /64')
  t.equal(clientKey('2001:db8::1'), '2001:db8:0:0::/64')
  t.not(clientKey('2001:db8:1:3::1'), clientKey('2001:db8:1:2::1'), 'another /64')
})

t.test('stalled uploads are ended with 408 while slots are scarce; held downloads are not', async t => {
  const origin = await waitingOrigin(t)
  // 4 slots, scarce above 2 in use: two held GETs and two stalled uploads make 4.
  const te = await startEdge(t, [route('a', origin.port, [HOST], { maxConnections: 4 })], {
    limits: { scarceSlotShare: 0.5, minUploadBytesPerSecond: 1_000, uploadProgressWindowMs: 400 },
  })
  const session = h2Session(t, te)
  const held = [h2Get(session, '/hold'), h2Get(session, '/hold')]
  t.ok(await waitFor(() => origin.started() === 2), 'two downloads waiting at the origin')
  const started = Date.now()
  const h2Upload = stalledUpload(session)
  // The same attack over HTTP/1.1.
  const h1Upload = new Promise<number>(resolve => {
    const req = https.request({ host: '127.0.0.1', servername: HOST, port: te.port, method: 'PUT', path: '/upload', ca: te.ca, agent: false, headers: { host: HOST, 'transfer-encoding': 'chunked' } },
      res => { res.resume(); resolve(res.statusCode ?? 0) })
    req.on('error', () => resolve(-1))
    req.write('x')
  })
  t.ok(await waitFor(() => te.edge.pool.activeConnections('a') === 4), 'all four slots in use')
  t.same(await Promise.all([h2Upload, h1Upload]), [408, 408], 'both stalled uploads get 408')
  const elapsed = Date.now() - started
  t.ok(elapsed >= 350 && elapsed < 5_000, `after about one progress window (${elapsed} ms)`)
  t.ok(await waitFor(() => te.edge.pool.activeConnections('a') === 2), `their slots are free again (${te.edge.pool.activeConnections('a')})`)
  t.equal(await h2Get(h2Session(t, te, '127.0.0.2'), '/'), 200, 'a new request is served')
  t.ok(te.lines.some(l => l.status === 408 && typeof l.error === 'string' && l.error.includes('slow upload')), 'logged as a slow upload')
  origin.release()
  t.same(await Promise.all(held), [200, 200], 'the held downloads were untouched')
})

t.test('a slow upload proceeds when slots are plentiful', async t => {
  const origin = await waitingOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, [HOST])], {
    limits: { minUploadBytesPerSecond: 1_000, uploadProgressWindowMs: 300 },
  })
  const session = h2Session(t, te)
  // 10 bytes/s for 1.5 s: far under the minimum rate, over five progress windows.
  const result = await new Promise<{ status: number, body: string }>(resolve => {
    const stream = session.request({ ':method': 'POST', ':path': '/slow' })
    let status = 0
    let body = ''
    stream.on('response', h => { status = Number(h[':status']) })
    stream.on('data', (c: Buffer) => { body += c.toString() })
    stream.on('end', () => resolve({ status, body }))
    stream.on('error', () => resolve({ status: -1, body }))
    let n = 0
    const timer = setInterval(() => {
      stream.write('x')
      if (++n === 15) { clearInterval(timer); stream.end() }
    }, 100)
  })
  t.same(result, { status: 200, body: 'ok POST' })
})

/** A TLS connection from `localAddress`: 'open' once the handshake completes, else how it failed. */
function tlsConnect (te: TestEdge, localAddress = '127.0.0.1'): Promise<{ outcome: string, socket: tls.TLSSocket }> {
  return new Promise(resolve => {
    const socket = tls.connect({ socket: tcpFrom(te, localAddress), servername: HOST, ca: te.ca }, () => resolve({ outcome: 'open', socket }))
    socket.on('error', err => resolve({ outcome: (err as NodeJS.ErrnoException).code ?? err.message, socket }))
    socket.on('close', () => resolve({ outcome: 'closed', socket }))
  })
}

t.test('connections over the per-address cap are closed at accept; other addresses are accepted', async t => {
  const { port } = await startOrigin(t, (_req, res) => { res.end('fine') })
  const te = await startEdge(t, [route('a', port, [HOST])], { limits: { maxConnectionsPerClient: 3 } })
  const open = await Promise.all([tlsConnect(te), tlsConnect(te), tlsConnect(te)])
  t.same(open.map(c => c.outcome), ['open', 'open', 'open'])
  t.teardown(() => { for (const c of open) c.socket.destroy() })
  t.equal(te.edge.connections.openConnections('127.0.0.1'), 3)
  const fourth = await tlsConnect(te)
  t.not(fourth.outcome, 'open', `a fourth is refused (${fourth.outcome})`)
  // The plain HTTP listener counts towards the same cap.
  const plain = await new Promise<string>(resolve => {
    const req = http.request({ host: '127.0.0.1', port: te.httpPort, headers: { host: HOST }, agent: false }, res => { res.resume(); resolve(`status ${res.statusCode}`) })
    req.on('error', err => resolve((err as NodeJS.ErrnoException).code ?? 'error'))
    req.end()
  })
  t.match(plain, /^E/, `refused on the HTTP listener too (${plain})`)
  const other = await tlsConnect(te, '127.0.0.2')
  t.equal(other.outcome, 'open', 'another address is accepted')
  other.socket.destroy()
  open[0].socket.destroy()
  t.ok(await waitFor(() => te.edge.connections.openConnections('127.0.0.1') === 2), 'a closed connection is uncounted')
  const again = await tlsConnect(te)
  t.equal(again.outcome, 'open', 'and its place can be taken again')
  again.socket.destroy()
})

t.test('a TCP connection that never completes the TLS handshake is closed after the handshake timeout', async t => {
  const te = await startEdge(t, [route('a', 9, [HOST])], { http: false, limits: { tlsHandshakeTimeoutMs: 500 } })
  const started = Date.now()
  const silent = await new Promise<{ elapsed: number, closed: boolean }>(resolve => {
    const socket = net.connect(te.port, '127.0.0.1')
    socket.on('error', () => {})
    socket.on('close', () => resolve({ elapsed: Date.now() - started, closed: true }))
    setTimeout(() => { socket.destroy(); resolve({ elapsed: Date.now() - started, closed: false }) }, 5_000)
  })
  t.ok(silent.closed, 'closed by the edge')
  t.ok(silent.elapsed >= 450 && silent.elapsed < 3_000, `after the timeout (${silent.elapsed} ms)`)
  t.ok(await waitFor(() => te.edge.connections.openConnections('127.0.0.1') === 0), 'and no longer counted')
  const ok = await tlsConnect(te)
  t.equal(ok.outcome, 'open', 'a client that completes the handshake in time is served')
  await delay(700)
  t.notOk(ok.socket.destroyed, 'the timeout ends only handshakes, not connections')
  ok.socket.destroy()
})

/** An HTTP/1.1 connection over TLS from `localAddress`, read one Content-Length-framed response at a time. */
function h1Connection (t: Teardown, te: TestEdge, localAddress: string): { socket: tls.TLSSocket, response: () => Promise<{ head: string, body: string } | null> } {
  const socket = tls.connect({ socket: tcpFrom(te, localAddress), servername: HOST, ca: te.ca, ALPNProtocols: ['http/1.1'] })
  socket.on('error', () => {})
  t.teardown(() => socket.destroy())
  let buffered = ''
  socket.on('data', (d: Buffer) => { buffered += d.toString('latin1') })
  const response = async (): Promise<{ head: string, body: string } | null> => {
    const deadline = Date.now() + 5_000
    while (Date.now() < deadline) {
      const end = buffered.indexOf('\r\n\r\n')
      if (end !== -1) {
        const head = buffered.slice(0, end)
        const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
        if (buffered.length >= end + 4 + length) {
          const body = buffered.slice(end + 4, end + 4 + length)
          buffered = buffered.slice(end + 4 + length)
          return { head, body }
        }
      }
      await delay(10)
    }
    return null
  }
  return { socket, response }
}

/** An instance of 32 slots (8 per client address) whose 8 slots of 127.0.0.3 are held by /hold requests. */
async function heldShare (t: Teardown): Promise<{ te: TestEdge, origin: Awaited<ReturnType<typeof waitingOrigin>>, held: () => number, holding: boolean }> {
  const origin = await waitingOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, [HOST], { maxConnections: 32 })])
  const holder = h2Session(t, te, '127.0.0.3')
  for (let i = 0; i < 8; i++) void h2Get(holder, '/hold')
  const held = (): number => te.edge.pool.clientConnections('a', clientKey('127.0.0.3'))
  const holding = await waitFor(() => held() === 8 && origin.started() === 8)
  return { te, origin, held, holding }
}

t.test('HTTP/1.1 client at its slot share sends a request without a body: 429, and the connection stays for the next request', async t => {
  const { te, origin, held, holding } = await heldShare(t)
  t.ok(holding, 'the address holds its 8 slots')
  const { socket, response } = h1Connection(t, te, '127.0.0.3')
  socket.write(`GET /one HTTP/1.1\r\nhost: ${HOST}\r\n\r\n`)
  const refused = await response()
  t.match(refused?.head, /^HTTP\/1\.1 429 /, 'refused with 429')
  t.match(refused?.head, /\r\nretry-after: /i)
  t.notMatch(refused?.head, /\r\nconnection: *close/i, 'no Connection: close')
  t.equal(held(), 8, 'the refused request took no slot')
  origin.release()
  t.ok(await waitFor(() => held() === 0), 'the held slots are released')
  socket.write(`GET /two HTTP/1.1\r\nhost: ${HOST}\r\n\r\n`)
  const next = await response()
  t.match(next?.head, /^HTTP\/1\.1 200 /, 'the next request on the same connection is answered')
  t.equal(next?.body, 'ok GET')
  t.equal(socket.destroyed, false, 'one connection throughout')
  t.equal(held(), 0, 'and its slot went back')
})

t.test('HTTP/1.1 client at its slot share sends a request with an unread body: 429 and the connection closes', async t => {
  const { te, origin, held, holding } = await heldShare(t)
  t.ok(holding, 'the address holds its 8 slots')
  const { socket, response } = h1Connection(t, te, '127.0.0.3')
  const closed = new Promise<boolean>(resolve => {
    socket.once('close', () => resolve(true))
    setTimeout(() => resolve(false), 5_000).unref()
  })
  socket.write(`POST /upload HTTP/1.1\r\nhost: ${HOST}\r\ncontent-length: 100000\r\n\r\n${'x'.repeat(1_000)}`)
  const refused = await response()
  t.match(refused?.head, /^HTTP\/1\.1 429 /, 'refused with 429')
  t.match(refused?.head, /\r\nconnection: *close/i, 'Connection: close')
  t.equal(await closed, true, 'the edge closed the connection')
  t.equal(held(), 8, 'the refused request took no slot')
  t.equal(origin.started(), 8, 'nothing more reached the origin')
})
