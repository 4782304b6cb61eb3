/**
 * 200 MB up and down through an Edge running in its own process, byte-exact (SHA-256 on both
 * ends), while the edge's memory stays far below the body size: bodies stream with backpressure,
 * nothing buffers them whole. Downloads are checked over HTTP/1.1 and HTTP/2.
 */
import t from 'tap'
import fs from 'node:fs'
import https from 'node:https'
import http2 from 'node:http2'
import { fork, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { createHash, randomBytes } from 'node:crypto'
import { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { startOrigin, route, tempDir, loopbackLookup } from './helpers.ts'

const SIZE = 200 * 1024 * 1024
const CHUNK = 1024 * 1024
const MB = 1024 * 1024
/** Far below the 200 MB body: what buffering a body whole (or a large part of it) would blow. */
const GROWTH_LIMIT = 64 * MB

const block = randomBytes(CHUNK)

/** 200 MB of bytes, generated as they are read: every 1 MB chunk is the block with its index stamped in. */
function body (): Readable {
  let i = 0
  return new Readable({
    read () {
      if (i === SIZE / CHUNK) { this.push(null); return }
      const chunk = Buffer.from(block)
      chunk.writeUInt32BE(i++, 0)
      this.push(chunk)
    },
  })
}

function expectedSha (): string {
  const h = createHash('sha256')
  for (let i = 0; i < SIZE / CHUNK; i++) {
    const chunk = Buffer.from(block)
    chunk.writeUInt32BE(i, 0)
    h.update(chunk)
  }
  return h.digest('hex')
}

interface Peak { rss: number, heapUsed: number, external: number }

function ask<T> (child: ChildProcess, msg: string, key: string): Promise<T> {
  return new Promise(resolve => {
    const on = (m: Record<string, unknown>): void => {
      if (key in m) { child.off('message', on); resolve(m as T) }
    }
    child.on('message', on)
    child.send(msg)
  })
}

t.test('200 MB up and down, byte-exact, edge memory bounded', async t => {
  const expected = expectedSha()
  const uploads: string[] = []
  const { port: originPort } = await startOrigin(t, (req, res) => {
    if (req.method === 'PUT') {
      const h = createHash('sha256')
      let n = 0
      req.on('data', (c: Buffer) => { h.update(c); n += c.length })
      req.on('end', () => { uploads.push(h.digest('hex')); res.end(JSON.stringify({ bytes: n })) })
      return
    }
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': SIZE })
    body().pipe(res)
  })
  const dataDir = tempDir(t)
  const child = fork(fileURLToPath(new URL('./edge-process.ts', import.meta.url)),
    [JSON.stringify({ dataDir, routes: [route('a', originPort, ['a.example.test'])] })],
    { execArgv: ['--import', 'tsx', '--expose-gc'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  t.teardown(() => { child.kill() })
  const [ready] = await once(child, 'message') as [{ port: number, caPath: string }]
  const ca = fs.readFileSync(ready.caPath)

  const measure = async (label: string, transfer: () => Promise<void>): Promise<void> => {
    const { now } = await ask<{ now: NodeJS.MemoryUsage }>(child, 'reset', 'reset')
    const started = Date.now()
    await transfer()
    const seconds = (Date.now() - started) / 1000
    const { peak } = await ask<{ peak: Peak }>(child, 'memory', 'peak')
    const rssGrowth = peak.rss - now.rss
    const heapGrowth = peak.heapUsed - now.heapUsed
    t.comment(`${label}: ${(SIZE / MB / seconds).toFixed(0)} MB/s; edge rss ${(now.rss / MB).toFixed(0)} -> peak ${(peak.rss / MB).toFixed(0)} MB, heap +${(heapGrowth / MB).toFixed(1)} MB`)
    t.ok(rssGrowth < GROWTH_LIMIT, `${label}: rss growth ${(rssGrowth / MB).toFixed(1)} MB < ${GROWTH_LIMIT / MB} MB`)
    t.ok(heapGrowth < GROWTH_LIMIT, `${label}: heap growth ${(heapGrowth / MB).toFixed(1)} MB < ${GROWTH_LIMIT / MB} MB`)
  }

  await measure('upload (HTTP/1.1)', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = https.request({ host: 'a.example.test', port: ready.port, method: 'PUT', path: '/upload', ca, lookup: loopbackLookup, agent: false,
        headers: { 'content-length': SIZE } }, res => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) })
      req.on('error', reject)
      body().pipe(req)
    })
    t.equal(status, 200)
    t.equal(uploads.at(-1), expected, 'upload byte-exact at the origin')
  })

  await measure('download (HTTP/1.1)', async () => {
    const sha = await new Promise<string>((resolve, reject) => {
      https.request({ host: 'a.example.test', port: ready.port, path: '/download', ca, lookup: loopbackLookup, agent: false }, res => {
        const h = createHash('sha256')
        res.on('data', (c: Buffer) => h.update(c))
        res.on('end', () => resolve(h.digest('hex')))
        res.on('error', reject)
      }).on('error', reject).end()
    })
    t.equal(sha, expected, 'download byte-exact at the client')
  })

  await measure('download (HTTP/2)', async () => {
    const session = http2.connect(`https://a.example.test:${ready.port}`, { ca, lookup: loopbackLookup } as http2.SecureClientSessionOptions)
    const sha = await new Promise<string>((resolve, reject) => {
      const stream = session.request({ ':path': '/download' })
      const h = createHash('sha256')
      stream.on('data', (c: Buffer) => h.update(c))
      stream.on('end', () => resolve(h.digest('hex')))
      stream.on('error', reject)
    })
    session.close()
    t.equal(sha, expected, 'HTTP/2 download byte-exact')
  })

  await measure('upload (HTTP/2)', async () => {
    const session = http2.connect(`https://a.example.test:${ready.port}`, { ca, lookup: loopbackLookup } as http2.SecureClientSessionOptions)
    const status = await new Promise<number>((resolve, reject) => {
      const stream = session.request({ ':method': 'PUT', ':path': '/upload' })
      stream.on('response', h => resolve(Number(h[':status'])))
      stream.on('error', reject)
      stream.resume()
      body().pipe(stream)
    })
    await new Promise(resolve => setTimeout(resolve, 50))
    session.close()
    t.equal(status, 200)
    t.equal(uploads.at(-1), expected, 'HTTP/2 upload byte-exact (chunked to the origin)')
  })
  child.send('exit')
  await once(child, 'exit')
})
