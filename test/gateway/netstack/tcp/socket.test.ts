/**
 * TcpSocket as a node Duplex, between two real TcpStacks (real timers) joined by an in-memory
 * link: piping, half-close, backpressure, resets, refusal, timeouts, and http over it.
 */
import t from 'tap'
import http from 'node:http'
import { once } from 'node:events'
import { pipeline } from 'node:stream/promises'
import { Readable, Writable } from 'node:stream'
import { createHash } from 'node:crypto'
import { StackPair, randomData, sha256 } from './harness.ts'
import type { TcpSocket } from '../../../../gateway/netstack/tcp/socket.ts'
import type { TcpOptions } from '../../../../gateway/netstack/tcp/options.ts'

const B = '10.100.0.2'

function pairWithServer (onConnection: (s: TcpSocket) => void, options: Partial<TcpOptions> = {}, loss = 0): StackPair {
  const pair = new StackPair({ timeWait: 100, ...options }, loss)
  pair.b.listen(80, s => {
    s.on('error', () => {}) // stack.close() at teardown errors the sockets still open (ENETDOWN)
    onConnection(s)
  })
  return pair
}

function collect (s: TcpSocket): Promise<Buffer> {
  const chunks: Buffer[] = []
  s.on('data', d => chunks.push(d))
  return once(s, 'end').then(() => Buffer.concat(chunks))
}

t.test('ESTABLISHED pipe a stream through (echo), addresses and byte counts', async t => {
  const pair = pairWithServer(s => { s.pipe(s) })
  t.teardown(() => pair.close())
  const client = pair.a.connect({ host: B, port: 80 })
  await once(client, 'connect')
  t.equal(client.remoteAddress, B)
  t.equal(client.remotePort, 80)
  t.equal(client.localAddress, '10.100.0.1')
  t.ok(client.localPort! >= 49152)
  t.same(client.address(), { address: '10.100.0.1', family: 'IPv4', port: client.localPort })
  const payload = randomData(3_000_000, 11)
  const closed = once(client, 'close')
  const received = collect(client)
  await pipeline(Readable.from([payload.subarray(0, 1_000_000), payload.subarray(1_000_000)]), new Writable({
    write (chunk, _enc, cb) {
      if (client.write(chunk)) cb()
      else client.once('drain', cb)
    },
    final (cb) { client.end(); cb() },
  }))
  const echoed = await received
  t.equal(sha256(echoed), sha256(payload), 'byte-exact round trip')
  t.equal(client.bytesRead, payload.length)
  t.equal(client.bytesWritten, payload.length)
  await closed
})

t.test('ESTABLISHED end: half-close delivers end, the other direction keeps flowing', async t => {
  const pair = new StackPair({ timeWait: 100 })
  t.teardown(() => pair.close())
  let serverSide: TcpSocket | undefined
  pair.b.listen(80, s => { serverSide = s }, { allowHalfOpen: true })
  const client = pair.a.connect({ host: B, port: 80, allowHalfOpen: true })
  const closed = once(client, 'close')
  await once(client, 'connect')
  client.end('request')
  while (serverSide === undefined) await new Promise(resolve => setImmediate(resolve))
  const request = await collect(serverSide)
  t.equal(request.toString(), 'request', "the server sees the client's end")
  t.equal(serverSide.writable, true, 'the server can still write')
  const response = collect(client)
  serverSide.end('response after half-close')
  t.equal((await response).toString(), 'response after half-close')
  await closed
})

t.test('ESTABLISHED backpressure: write() returns false, then drain', async t => {
  let server!: TcpSocket
  const pair = pairWithServer(s => { server = s; s.pause() }, { sendBuffer: 64 * 1024, receiveBuffer: 64 * 1024 })
  t.teardown(() => pair.close())
  const client = pair.a.connect({ host: B, port: 80 })
  await once(client, 'connect')
  const chunk = Buffer.alloc(16 * 1024, 1)
  // Write until write() says stop and no 'drain' comes: the reader's window and our send buffer are full.
  let blocked = false
  let written = 0
  for (let round = 0; round < 200 && !blocked; round++) {
    while (client.write(chunk)) written += chunk.length
    written += chunk.length
    const drained = await Promise.race([
      once(client, 'drain').then(() => true),
      new Promise<boolean>(resolve => setTimeout(() => resolve(false), 200)),
    ])
    if (!drained) blocked = true
  }
  t.ok(blocked, `write() returned false and no drain came while the reader was paused (${written} bytes written)`)
  t.ok(client.connection!.sendBuffered <= 64 * 1024, 'the send buffer stays within its limit')
  t.ok(server.readableLength <= 64 * 1024 + 16 * 1024, 'the receiver holds no more than its window')
  t.ok(client.writableLength > 0, 'the rest waits in the stream')
  const drained = once(client, 'drain')
  server.resume()
  await drained
  t.pass('drain after the reader resumed')
  client.destroy()
})

t.test('ESTABLISHED destroy: the other side gets ECONNRESET', async t => {
  let server!: TcpSocket
  const pair = pairWithServer(s => { server = s })
  t.teardown(() => pair.close())
  const client = pair.a.connect({ host: B, port: 80 })
  await once(client, 'connect')
  while (server === undefined) await new Promise(resolve => setImmediate(resolve))
  const [err] = await Promise.all([once(server, 'error').then(([e]) => e as NodeJS.ErrnoException), Promise.resolve(client.destroy())])
  t.equal(err.code, 'ECONNRESET')
  t.equal(err.syscall, 'read')
  t.equal(client.destroyed, true)
})

t.test('SYN-SENT rst: connecting to a closed port fails with ECONNREFUSED', async t => {
  const pair = new StackPair()
  t.teardown(() => pair.close())
  const client = pair.a.connect({ host: B, port: 81 })
  const [err] = await once(client, 'error') as [NodeJS.ErrnoException]
  t.equal(err.code, 'ECONNREFUSED')
  t.equal(err.syscall, 'connect')
  t.match(err.message, /ECONNREFUSED 10\.100\.0\.2:81/)
})

t.test('connect to a host that is not an IPv4 address: EINVAL', async t => {
  const pair = new StackPair()
  t.teardown(() => pair.close())
  const client = pair.a.connect({ host: 'example.com', port: 80 })
  const [err] = await once(client, 'error') as [NodeJS.ErrnoException]
  t.equal(err.code, 'EINVAL')
})

t.test('ESTABLISHED setTimeout: timeout fires on an idle socket, and activity postpones it', async t => {
  const pair = pairWithServer(() => {})
  t.teardown(() => pair.close())
  const client = pair.a.connect({ host: B, port: 80 })
  await once(client, 'connect')
  const start = Date.now()
  let fired = 0
  client.setTimeout(400, () => { fired++ })
  const keepBusy = setInterval(() => client.write('x'), 40)
  await new Promise(resolve => setTimeout(resolve, 600))
  clearInterval(keepBusy)
  t.equal(fired, 0, 'writes keep the socket active')
  await once(client, 'timeout')
  t.ok(Date.now() - start >= 600)
  t.equal(client.destroyed, false, 'a timeout does not close the socket')
  client.setTimeout(0)
  client.destroy()
})

t.test('ESTABLISHED setNoDelay / setKeepAlive / ref / unref are chainable', async t => {
  const pair = pairWithServer(() => {})
  t.teardown(() => pair.close())
  const client = pair.a.connect({ host: B, port: 80, keepAlive: true, noDelay: true })
  await once(client, 'connect')
  t.equal(client.setNoDelay(false), client)
  t.equal(client.connection!.noDelay, false)
  t.equal(client.setKeepAlive(true, 5000), client)
  t.equal(client.connection!.keepAlive, true)
  t.equal(client.connection!.keepAliveIdle, 5000)
  t.equal(client.unref().ref(), client)
  t.equal(client.readyState, 'open')
  client.destroy()
})

t.test('http.request through an Agent, to an http.Server fed from our listen side', async t => {
  const body = randomData(3_000_000, 21)
  const server = http.createServer((req, res) => {
    if (req.method === 'GET') {
      res.setHeader('content-type', 'application/octet-stream')
      res.end(body)
      return
    }
    const hash = createHash('sha256')
    let n = 0
    req.on('data', d => { hash.update(d); n += d.length })
    req.on('end', () => res.end(JSON.stringify({ n, sha256: hash.digest('hex'), remote: req.socket.remoteAddress })))
  })
  const pair = new StackPair({ timeWait: 100 }, 0.005)
  pair.b.listen(80, s => server.emit('connection', s))
  const agent = new http.Agent({ keepAlive: true, maxSockets: 2 })
  ;(agent as unknown as { createConnection: typeof pair.a.createConnection }).createConnection = pair.a.createConnection
  t.teardown(() => {
    agent.destroy()
    server.close()
    pair.close()
  })

  const download = await new Promise<{ status: number, data: Buffer }>((resolve, reject) => {
    http.get({ host: B, port: 80, path: '/file', agent }, res => {
      const chunks: Buffer[] = []
      res.on('data', d => chunks.push(d))
      res.on('end', () => resolve({ status: res.statusCode!, data: Buffer.concat(chunks) }))
    }).on('error', reject)
  })
  t.equal(download.status, 200)
  t.equal(sha256(download.data), sha256(body), 'download byte-exact')

  const upload = await new Promise<{ n: number, sha256: string, remote: string }>((resolve, reject) => {
    const req = http.request({ host: B, port: 80, path: '/upload', method: 'POST', agent }, res => {
      let text = ''
      res.on('data', d => { text += d })
      res.on('end', () => resolve(JSON.parse(text)))
    })
    req.on('error', reject)
    req.end(body)
  })
  t.equal(upload.n, body.length)
  t.equal(upload.sha256, sha256(body), 'upload byte-exact')
  t.equal(upload.remote, '10.100.0.1', 'the server sees our tunnel address')
  t.ok(pair.metricsA.snapshot().tcp_connections_opened.active <= 2, 'keep-alive reused the connection')
})

t.test('CLOSE-WAIT end: a reader that stops after the last bytes sees end only when it reads again', async t => {
  const pair = pairWithServer(s => { s.end('last bytes') })
  t.teardown(() => pair.close())
  const client = pair.a.connect({ host: B, port: 80 })
  let ended = false
  client.on('end', () => { ended = true })
  // Wait until the data and the FIN are both in, unread.
  await once(client, 'readable')
  for (let i = 0; i < 50 && client.readableLength < 10; i++) await new Promise(resolve => setTimeout(resolve, 10))
  const chunk = client.read() as Buffer | null
  t.equal(chunk?.toString(), 'last bytes', 'the reader takes the last bytes')
  // The reader now stops, as a paused HTTP parser does: several turns pass without 'end'.
  for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve))
  await new Promise(resolve => setTimeout(resolve, 50))
  t.equal(ended, false, "no 'end' while the reader is not reading")
  t.equal(client.read(), null, 'reading past the last byte')
  await once(client, 'end')
  t.pass("'end' once the reader reads again")
})

t.test('CLOSE-WAIT end: an undici HTTP/1 response paused on its last chunk completes when resumed (no assertion)', async t => {
  const body = randomData(256 * 1024, 5)
  // HTTP/1.0-style: no keep-alive, the body followed at once by the FIN.
  const pair = pairWithServer(s => {
    s.once('data', () => { s.end(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`), body])) })
  })
  t.teardown(() => pair.close())
  const { Client } = await import('undici')
  const client = new Client('http://10.100.0.2', { connect: (_opts, cb) => { const s = pair.a.connect({ host: B, port: 80 }); s.once('connect', () => cb(null, s as unknown as import('node:net').Socket)); s.once('error', err => cb(err, null)); return s } })
  t.teardown(() => client.destroy())
  const received: Buffer[] = []
  const done = new Promise<void>((resolve, reject) => {
    client.dispatch({ method: 'GET', path: '/', headers: {} }, {
      onRequestStart () {},
      onResponseStart () {},
      // Pause on every chunk (a client that reads slower than the origin sends), resume a little later.
      onResponseData (controller, chunk) {
        received.push(chunk)
        controller.pause()
        setTimeout(() => { controller.resume() }, 5)
      },
      onResponseEnd () { resolve() },
      onResponseError (_controller, err) { reject(err) },
    })
  })
  await done
  t.equal(sha256(Buffer.concat(received)), sha256(body), 'the whole body, byte-exact')
})
