/**
 * Bad input at the edge: malformed requests, oversized headers, slowloris trickles, garbage TLS
 * and HTTP/2 bytes. Each gets a clear 4xx or a closed connection, the process survives, and a
 * normal request made at the same time succeeds.
 */
import t, { type Test } from 'tap'
import tls from 'node:tls'
import net from 'node:net'
import http2 from 'node:http2'
import { randomBytes } from 'node:crypto'
import { startEdge, startOrigin, route, request, loopbackLookup, type TestEdge } from './helpers.ts'

/** Write raw bytes over TLS (SNI a.example.test) and collect what comes back until close or `ms`. */
function rawTls (te: TestEdge, chunks: Array<string | Buffer>, options: { gapMs?: number, ms?: number } = {}): Promise<{ text: string, closed: boolean, elapsed: number }> {
  return new Promise(resolve => {
    const started = Date.now()
    let text = ''
    let done = false
    const finish = (closed: boolean): void => {
      if (done) return
      done = true
      socket.destroy()
      resolve({ text, closed, elapsed: Date.now() - started })
    }
    const socket = tls.connect({ host: '127.0.0.1', port: te.port, servername: 'a.example.test', ca: te.ca, ALPNProtocols: ['http/1.1'] }, async () => {
      for (const c of chunks) {
        if (socket.destroyed) break
        socket.write(c)
        if (options.gapMs !== undefined) await new Promise(r => setTimeout(r, options.gapMs))
      }
    })
    socket.on('data', (d: Buffer) => { text += d.toString('latin1') })
    socket.on('close', () => finish(true))
    socket.on('error', () => finish(true))
    setTimeout(() => finish(false), options.ms ?? 5_000)
  })
}

async function setup (t: Parameters<typeof startOrigin>[0], extra = {}): Promise<TestEdge> {
  const { port } = await startOrigin(t, (_req, res) => { res.end('fine') })
  return startEdge(t, [route('a', port, ['a.example.test'])], { headersTimeoutMs: 600, ...extra })
}

async function normalRequestWorks (t: Test, te: TestEdge): Promise<void> {
  const r = await request(te, 'a.example.test')
  t.equal(r.status, 200, 'a normal request succeeds meanwhile')
  t.equal(r.body.toString(), 'fine')
}

t.test('a malformed request line gets 400 and a close', async t => {
  const te = await setup(t)
  const [bad] = await Promise.all([rawTls(te, ['GARBAGE\r\n\r\n']), normalRequestWorks(t, te)])
  t.match(bad.text, /^HTTP\/1\.1 400 /)
  t.ok(bad.closed)
})

t.test('a header with a control character gets 400', async t => {
  const te = await setup(t)
  const bad = await rawTls(te, ['GET / HTTP/1.1\r\nHost: a.example.test\r\nX-Bad: a\u0001b\r\n\r\n'])
  t.match(bad.text, /^HTTP\/1\.1 400 /)
  await normalRequestWorks(t, te)
})

t.test('oversized headers (> maxHeaderSize) get 431', async t => {
  const te = await setup(t)
  const big = `GET / HTTP/1.1\r\nHost: a.example.test\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`
  const [bad] = await Promise.all([rawTls(te, [big]), normalRequestWorks(t, te)])
  t.match(bad.text, /^HTTP\/1\.1 431 /)
  t.ok(bad.closed)
  const fits = await request(te, 'a.example.test', { headers: { 'x-fits': 'a'.repeat(8_000) } })
  t.equal(fits.status, 200, 'headers under the limit pass')
})

t.test('a slowloris trickle is cut at headersTimeout while others are served', async t => {
  const te = await setup(t)
  const trickle = 'GET / HTTP/1.1\r\nHost: a.example.test\r\nX-Slow: '.split('').concat(Array(100).fill('a'))
  const slow = rawTls(te, trickle, { gapMs: 50, ms: 8_000 })
  await normalRequestWorks(t, te)
  const result = await slow
  t.ok(result.closed, 'connection closed')
  t.ok(result.text === '' || /^HTTP\/1\.1 408 /.test(result.text), `408 or a plain close (${JSON.stringify(result.text.slice(0, 20))})`)
  t.ok(result.elapsed < 5_000, `within the header timeout plus a check interval (${result.elapsed} ms)`)
})

t.test('absolute-form targets and a missing Host are refused with 400', async t => {
  const te = await setup(t)
  const absolute = await rawTls(te, ['GET https://a.example.test/ HTTP/1.1\r\nHost: a.example.test\r\n\r\n'], { ms: 1_000 })
  t.match(absolute.text, /^HTTP\/1\.1 400 /)
  const noHost = await rawTls(te, ['GET / HTTP/1.1\r\n\r\n'], { ms: 1_000 })
  t.match(noHost.text, /^HTTP\/1\.1 (400|404) /)
})

t.test('garbage instead of a TLS handshake, and garbage HTTP/2 frames, do not hurt the edge', async t => {
  const te = await setup(t)
  const sockets = await Promise.all(Array.from({ length: 20 }, () => new Promise<void>(resolve => {
    const s = net.connect(te.port, '127.0.0.1', () => s.write(randomBytes(600)))
    s.on('error', () => resolve())
    s.on('close', () => resolve())
    setTimeout(() => { s.destroy(); resolve() }, 2_000)
  })))
  t.equal(sockets.length, 20)
  // A valid TLS + h2 connection, then random bytes after the preface.
  await new Promise<void>(resolve => {
    const s = tls.connect({ host: '127.0.0.1', port: te.port, servername: 'a.example.test', ca: te.ca, ALPNProtocols: ['h2'] }, () => {
      s.write('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')
      s.write(randomBytes(2_000))
    })
    s.on('error', () => resolve())
    s.on('close', () => resolve())
    setTimeout(() => { s.destroy(); resolve() }, 2_000)
  })
  await normalRequestWorks(t, te)
  // And a well-behaved HTTP/2 client still works.
  const session = http2.connect(`https://a.example.test:${te.port}`, { ca: te.ca, lookup: loopbackLookup } as http2.SecureClientSessionOptions)
  const status = await new Promise<number>((resolve, reject) => {
    const st = session.request({ ':path': '/' })
    st.on('response', h => resolve(Number(h[':status'])))
    st.on('error', reject)
    st.resume()
  })
  session.close()
  t.equal(status, 200)
})

t.test('an HTTP/2 header block over the limit is refused for that stream only', async t => {
  const te = await setup(t)
  const session = http2.connect(`https://a.example.test:${te.port}`, { ca: te.ca, lookup: loopbackLookup } as http2.SecureClientSessionOptions)
  t.teardown(() => session.close())
  const outcome = await new Promise<string>(resolve => {
    const st = session.request({ ':path': '/', 'x-big': 'a'.repeat(40_000) })
    st.on('response', h => resolve(`status ${h[':status']}`))
    st.on('error', () => resolve('reset'))
    st.on('close', () => resolve('reset'))
    st.resume()
  })
  t.ok(outcome === 'reset' || outcome === 'status 431', outcome)
  await normalRequestWorks(t, te)
})

t.test('HTTP/2 headers get the HTTP/1.1 limit: 20 KiB refused, just under 16 KiB passed on', async t => {
  const seen: number[] = []
  const { port } = await startOrigin(t, (req, res) => { seen.push(String(req.headers['x-big'] ?? '').length); res.end('fine') })
  const te = await startEdge(t, [route('a', port, ['a.example.test'])])
  const session = http2.connect(`https://a.example.test:${te.port}`, { ca: te.ca, lookup: loopbackLookup } as http2.SecureClientSessionOptions)
  t.teardown(() => session.close())
  await new Promise(resolve => session.once('remoteSettings', resolve))
  t.equal(session.remoteSettings.maxHeaderListSize, 16_384, 'the limit is announced in SETTINGS')
  const send = (size: number): Promise<string> => new Promise(resolve => {
    const st = session.request({ ':path': '/', 'x-big': 'a'.repeat(size) })
    st.on('response', h => resolve(`status ${h[':status']}`))
    st.on('error', () => resolve('reset'))
    st.on('close', () => resolve('reset'))
    st.resume()
  })
  const over = await send(20 * 1024)
  t.ok(over === 'reset' || over === 'status 431', `20 KiB: ${over}`)
  // RFC 9113 6.5.2: each field counts name + value + 32; the pseudo-headers take a little too.
  t.equal(await send(16 * 1024 - 300), 'status 200', 'just under 16 KiB: served')
  t.same(seen, [16 * 1024 - 300], 'only the request within the limit reached the origin')
  t.equal(await send(10), 'status 200', 'the session is still usable')
})
