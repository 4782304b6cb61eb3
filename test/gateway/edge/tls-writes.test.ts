/**
 * Writes to the client's TLS socket stay below 16 KiB each (node keeps an output block the size of
 * the largest write for the connection's life), and bodies of several MiB still pass byte-exact
 * both ways, over HTTP/1.1 and HTTP/2; with tlsWriteMax 0 node's own writes are untouched.
 */
import t from 'tap'
import https from 'node:https'
import http2 from 'node:http2'
import type tls from 'node:tls'
import { createHash, randomBytes } from 'node:crypto'
import { startEdge, startOrigin, route, loopbackLookup, type TestEdge, type Teardown } from './helpers.ts'
import { TLS_WRITE_MAX } from '../../../gateway/edge/tls-writes.ts'

const SIZE = 6 * 1024 * 1024
const body = randomBytes(SIZE)
const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex')

/** Bytes of each call into the TLS layer (TLSWrap's write methods) on the edge's accepted sockets. */
function recordTlsWrites (te: TestEdge): number[] {
  const sizes: number[] = []
  const server = (te.edge as unknown as { httpsServer: tls.Server }).httpsServer
  server.on('secureConnection', (socket: tls.TLSSocket) => {
    const handle = (socket as unknown as { _handle: Record<string, (...args: unknown[]) => unknown> })._handle
    for (const name of ['writeBuffer', 'writeLatin1String', 'writeUtf8String', 'writeAsciiString', 'writeUcs2String']) {
      const original = handle[name]
      handle[name] = function (this: unknown, ...args: unknown[]) {
        const data = args[1] as string | Buffer
        sizes.push(typeof data === 'string' ? Buffer.byteLength(data, name === 'writeUtf8String' ? 'utf8' : 'latin1') : data.length)
        return original.apply(this, args)
      }
    }
    const writev = handle.writev
    handle.writev = function (this: unknown, ...args: unknown[]) {
      const [, chunks, allBuffers] = args as [unknown, Array<Buffer | string>, boolean]
      let total = 0
      if (allBuffers) for (const c of chunks) total += (c as Buffer).length
      else for (let i = 0; i < chunks.length; i += 2) total += typeof chunks[i] === 'string' ? Buffer.byteLength(chunks[i] as string, chunks[i + 1] as BufferEncoding) : (chunks[i] as Buffer).length
      sizes.push(total)
      return writev.apply(this, args)
    }
  })
  return sizes
}

/** GET returns the body in 1 MiB writes; POST answers the SHA-256 of what arrived and its length. */
async function bodyOrigin (t: Teardown): Promise<number> {
  const { port } = await startOrigin(t, (req, res) => {
    if (req.method === 'POST') {
      const h = createHash('sha256')
      let n = 0
      req.on('data', (c: Buffer) => { h.update(c); n += c.length })
      req.on('end', () => { res.end(JSON.stringify({ sha: h.digest('hex'), n })) })
      return
    }
    res.writeHead(200, { 'content-length': SIZE })
    for (let at = 0; at < SIZE; at += 1024 * 1024) res.write(body.subarray(at, at + 1024 * 1024))
    res.end()
  })
  return port
}

function http1 (te: TestEdge, method: string, pauseMs = 0): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const req = https.request({ host: 'a.example.test', port: te.port, method, path: '/', ca: te.ca, lookup: loopbackLookup, agent: false }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => {
        chunks.push(c)
        // A reader that stops for a while: the edge's writes queue up behind it and go as one batch.
        if (pauseMs > 0 && chunks.length === 1) { res.pause(); setTimeout(() => res.resume(), pauseMs) }
      })
      res.on('end', () => resolve(Buffer.concat(chunks)))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(method === 'POST' ? body : undefined)
  })
}

async function h2 (te: TestEdge, method: string): Promise<Buffer> {
  const session = http2.connect(`https://a.example.test:${te.port}`, { ca: te.ca, lookup: loopbackLookup } as http2.SecureClientSessionOptions)
  try {
    return await new Promise<Buffer>((resolve, reject) => {
      session.on('error', reject)
      const stream = session.request({ ':method': method, ':path': '/' })
      const chunks: Buffer[] = []
      stream.on('data', (c: Buffer) => chunks.push(c))
      stream.on('end', () => resolve(Buffer.concat(chunks)))
      stream.on('error', reject)
      stream.end(method === 'POST' ? body : undefined)
    })
  } finally {
    session.close()
  }
}

t.test('an edge hands a download of several MiB to TLS in writes below 16 KiB, byte-exact', async t => {
  const te = await startEdge(t, [route('i-a', await bodyOrigin(t), ['a.example.test'])])
  const sizes = recordTlsWrites(te)
  for (const pauseMs of [0, 300]) {
    sizes.length = 0
    const got = await http1(te, 'GET', pauseMs)
    t.equal(got.length, SIZE, `whole body (reader paused ${pauseMs} ms)`)
    t.equal(sha(got), sha(body), `byte-exact (reader paused ${pauseMs} ms)`)
    t.ok(sizes.reduce((a, b) => a + b, 0) >= SIZE, 'every byte of the body passed through the recorded writes')
    t.ok(Math.max(...sizes) <= TLS_WRITE_MAX, `largest TLS write ${Math.max(...sizes)} B, at most ${TLS_WRITE_MAX}`)
  }
  // The origin writes 1 MiB at a time: split, not passed on whole.
  t.ok(sizes.filter(n => n === TLS_WRITE_MAX).length > SIZE / TLS_WRITE_MAX / 2, 'most writes are full pieces')
})

t.test('an edge receives an upload of several MiB byte-exact and sends its small answer in one TLS write', async t => {
  const te = await startEdge(t, [route('i-a', await bodyOrigin(t), ['a.example.test'])])
  const sizes = recordTlsWrites(te)
  const answer = JSON.parse((await http1(te, 'POST')).toString()) as { sha: string, n: number }
  t.same(answer, { sha: sha(body), n: SIZE }, 'the origin received the body byte-exact')
  // Head and body of a small answer still leave as one write (one TLS record, one packet).
  t.equal(sizes.length, 1, 'one TLS write for the answer')
  t.ok(sizes[0]! < TLS_WRITE_MAX, 'a small answer')
})

t.test('an edge passes several MiB down and up over HTTP/2 byte-exact', async t => {
  const te = await startEdge(t, [route('i-a', await bodyOrigin(t), ['a.example.test'])])
  const got = await h2(te, 'GET')
  t.equal(got.length, SIZE, 'whole body down')
  t.equal(sha(got), sha(body), 'byte-exact down')
  const answer = JSON.parse((await h2(te, 'POST')).toString()) as { sha: string, n: number }
  t.same(answer, { sha: sha(body), n: SIZE }, 'byte-exact up')
})

t.test('an edge with tlsWriteMax 0 hands the proxy\'s pieces to TLS whole', async t => {
  const te = await startEdge(t, [route('i-a', await bodyOrigin(t), ['a.example.test'])], { tlsWriteMax: 0 })
  const sizes = recordTlsWrites(te)
  const got = await http1(te, 'GET')
  t.equal(sha(got), sha(body), 'byte-exact')
  t.ok(Math.max(...sizes) > 16_384, `largest TLS write ${Math.max(...sizes)} B: node's own writes`)
})

t.test('an edge with tlsWriteMax of 16 KiB or more refuses to start', async t => {
  for (const tlsWriteMax of [16_384, 65_536, -1, 1.5]) {
    await t.rejects(startEdge(t, [], { tlsWriteMax }), /tlsWriteMax must be an integer from 0 to 16383/, `tlsWriteMax ${tlsWriteMax}`)
  }
})
