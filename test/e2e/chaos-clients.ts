/**
 * The clients of the chaos test (chaos.test.ts): HTTPS requests to the edge over HTTP/1.1 and
 * HTTP/2 and WebSockets, each given a point at which it gives up (before the response headers,
 * after some body bytes, after stalling the edge under backpressure, part-way through an upload,
 * or never), and a seeded generator that makes the choices repeatable.
 *
 * Every operation settles: a stall (no byte for Clients.stallMs) cancels it, so a worker loop can
 * never hang on a peer that went away without a reset.
 */
import { createHash } from 'node:crypto'
import https from 'node:https'
import http2 from 'node:http2'
import type net from 'node:net'
import tls from 'node:tls'
import { Transform, type Readable } from 'node:stream'
import WebSocket from 'ws'
import { keystream, sha256Of, type EdgeTarget } from '../agent/origin.ts'


/** mulberry32: a seeded 32-bit generator, so that a seed replays the same choices. */
export class Prng {
  private state: number
  constructor (seed: number) { this.state = seed >>> 0 }

  next (): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0
    let x = this.state
    x = Math.imul(x ^ (x >>> 15), x | 1)
    x ^= x + Math.imul(x ^ (x >>> 7), x | 61)
    return ((x ^ (x >>> 14)) >>> 0) / 2 ** 32
  }

  /** An integer in [low, high]. */
  int (low: number, high: number): number { return low + Math.floor(this.next() * (high - low + 1)) }
  pick<T> (items: readonly T[]): T { return items[Math.floor(this.next() * items.length)] }
  chance (p: number): boolean { return this.next() < p }
}

export const loopbackLookup = ((_host: string, options: unknown, cb: (...args: unknown[]) => void): void => {
  if (typeof options === 'object' && options !== null && (options as { all?: boolean }).all === true) cb(null, [{ address: '127.0.0.1', family: 4 }])
  else cb(null, '127.0.0.1', 4)
}) as unknown as net.LookupFunction

/** Where the client gives up. `after` is a byte count, `pauseMs` how long it stops reading first. */
export type Cancel =
  | { at: 'none' }
  | { at: 'slow-reader' }
  | { at: 'before-headers' }
  | { at: 'mid-body', after: number }
  | { at: 'backpressure', after: number, pauseMs: number }
  | { at: 'mid-upload', after: number }

export type Protocol = 'h1' | 'h2'
export type DownloadPath = '/download' | '/download-close'

export interface Result {
  /** complete: verified byte-exact; cancelled: given up as planned; error: anything else. */
  outcome: 'complete' | 'cancelled' | 'error'
  /** For errors: a short kind (a node error code, `status 502`, `stalled`, `corrupt`, ...). */
  error?: string
  bytes: number
}

const expectedHashes = new Map<string, Promise<{ bytes: number, sha256: string }>>()

/** SHA-256 of keystream(seed, bytes), computed once per pair. */
export async function expected (seed: string, bytes: number): Promise<{ bytes: number, sha256: string }> {
  const key = `${seed}\u0000${bytes}`
  let p = expectedHashes.get(key)
  if (p === undefined) {
    p = sha256Of(keystream(seed, bytes))
    expectedHashes.set(key, p)
  }
  return await p
}

export function errorKind (err: unknown): string {
  const e = err as NodeJS.ErrnoException | undefined
  const message = e?.message ?? String(err)
  // The RST_STREAM code (RFC 9113 7) says who gave up and why.
  if (e?.code === 'ERR_HTTP2_STREAM_ERROR') return `${e.code} ${/NGHTTP2_\w+/.exec(message)?.[0] ?? ''}`
  if (e?.code !== undefined) return e.code
  return message.replace(/[0-9a-f]{8,}/g, 'x').slice(0, 60)
}

/** HTTP/2 sessions to the edge, shared by the workers and replaced once they close. */
export class SessionPool {
  private sessions: http2.ClientHttp2Session[] = []
  private next = 0
  constructor (readonly edge: EdgeTarget, readonly size: number) {}

  get (): http2.ClientHttp2Session {
    this.sessions = this.sessions.filter(s => !s.closed && !s.destroyed)
    if (this.sessions.length < this.size) {
      const s = connectH2(this.edge)
      this.sessions.push(s)
      return s
    }
    return this.sessions[this.next++ % this.sessions.length]
  }

  close (): void {
    for (const s of this.sessions) s.destroy()
    this.sessions = []
  }
}

/** An HTTP/2 connection to the edge; `socket` is its TLS socket (destroy it to cut the connection without a GOAWAY). */
export function connectH2 (edge: EdgeTarget): http2.ClientHttp2Session & { tlsSocket: tls.TLSSocket } {
  const socket = tls.connect({ host: '127.0.0.1', port: edge.port, servername: edge.hostname, ca: edge.ca, ALPNProtocols: ['h2'] })
  socket.on('error', () => {})
  const session = http2.connect(`https://${edge.hostname}:${edge.port}`, { createConnection: () => socket })
  session.on('error', () => {})
  return Object.assign(session, { tlsSocket: socket })
}

/** The response side of one request, whichever protocol carried it. */
interface Exchange {
  headers: Promise<number>
  body: Readable
  /** The request's body goes here (undefined: no body, already ended). */
  requestBody?: NodeJS.WritableStream
  cancel: () => void
}

function h1Exchange (edge: EdgeTarget, agent: https.Agent, method: string, path: string, headers: Record<string, string>, hasBody: boolean): Exchange {
  const req = https.request({ host: edge.hostname, port: edge.port, servername: edge.hostname, ca: edge.ca, lookup: loopbackLookup, agent, method, path, headers })
  req.on('error', () => {})
  let body: Readable | undefined
  const headersPromise = new Promise<number>((resolve, reject) => {
    req.on('response', res => { body = res; resolve(res.statusCode ?? 0) })
    req.on('error', reject)
    req.on('close', () => { reject(new Error('closed before the response headers')) })
  })
  headersPromise.catch(() => {})
  if (!hasBody) req.end()
  const exchange: Exchange = {
    headers: headersPromise,
    get body () { return body! },
    cancel: () => { req.destroy() },
  }
  if (hasBody) exchange.requestBody = req
  return exchange
}

function h2Exchange (session: http2.ClientHttp2Session, edge: EdgeTarget, method: string, path: string, headers: Record<string, string>, hasBody: boolean): Exchange {
  const stream = session.request({ ':method': method, ':path': path, ':authority': edge.hostname, ...headers }, { endStream: !hasBody })
  stream.on('error', () => {})
  const headersPromise = new Promise<number>((resolve, reject) => {
    stream.on('response', h => { resolve(Number(h[':status'])) })
    stream.on('error', reject)
    stream.on('close', () => { reject(new Error(`stream closed before the response headers (${stream.rstCode ?? ''})`)) })
  })
  headersPromise.catch(() => {})
  const exchange: Exchange = {
    headers: headersPromise,
    body: stream,
    cancel: () => { if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL) },
  }
  if (hasBody) exchange.requestBody = stream
  return exchange
}

interface ReadPlan { stopAfter?: number, pauseAfter?: number, pauseMs?: number, cancelAfterPause?: boolean, slow?: Prng }

/** Reads a response body as planned; resolves with what was read and how it ended. */
function readBody (body: Readable, plan: ReadPlan, stallMs: number, cancel: () => void): Promise<{ bytes: number, sha256: string, ended: 'end' | 'cancelled' | 'error' | 'stalled', error?: string }> {
  return new Promise(resolve => {
    const hash = createHash('sha256')
    let bytes = 0
    let done = false
    let paused = false
    let slowNext = plan.slow === undefined ? Infinity : plan.slow.int(256 * 1024, 4 << 20)
    const finish = (ended: 'end' | 'cancelled' | 'error' | 'stalled', error?: string): void => {
      if (done) return
      done = true
      clearTimeout(stall)
      if (ended !== 'end') cancel()
      resolve({ bytes, sha256: hash.digest('hex'), ended, error })
    }
    let stall = setTimeout(() => { finish('stalled') }, stallMs)
    const pauseFor = (ms: number, then: () => void): void => {
      paused = true
      body.pause()
      clearTimeout(stall)
      setTimeout(() => {
        if (done) return
        paused = false
        stall = setTimeout(() => { finish('stalled') }, stallMs)
        then()
      }, ms)
    }
    body.on('data', (chunk: Buffer) => {
      if (done) return
      hash.update(chunk)
      bytes += chunk.length
      stall.refresh()
      if (plan.stopAfter !== undefined && bytes >= plan.stopAfter) { finish('cancelled'); return }
      if (paused) return
      if (plan.pauseAfter !== undefined && bytes >= plan.pauseAfter) {
        const cancelAfterPause = plan.cancelAfterPause === true
        plan.pauseAfter = undefined
        pauseFor(plan.pauseMs ?? 0, () => { if (cancelAfterPause) finish('cancelled'); else body.resume() })
      } else if (bytes >= slowNext) {
        slowNext = bytes + plan.slow!.int(256 * 1024, 4 << 20)
        pauseFor(plan.slow!.int(5, 250), () => { body.resume() })
      }
    })
    body.on('end', () => { finish('end') })
    body.on('error', err => { finish('error', errorKind(err)) })
    body.on('close', () => { finish('error', 'closed before the end') })
  })
}

export interface Clients {
  edge: EdgeTarget
  agent: https.Agent
  sessions: SessionPool
  /** No byte either way for this long: the client gives up (an error, `stalled`). */
  stallMs: number
}

function exchangeFor (c: Clients, protocol: Protocol, method: string, path: string, headers: Record<string, string>, hasBody: boolean, session?: http2.ClientHttp2Session): Exchange {
  return protocol === 'h1'
    ? h1Exchange(c.edge, c.agent, method, path, { host: c.edge.hostname, ...headers }, hasBody)
    : h2Exchange(session ?? c.sessions.get(), c.edge, method, path, headers, hasBody)
}

async function statusOrError (exchange: Exchange, stallMs: number): Promise<number | Result> {
  let timer: NodeJS.Timeout | undefined
  const stalled = new Promise<Result>(resolve => { timer = setTimeout(() => { resolve({ outcome: 'error', error: 'stalled', bytes: 0 }) }, stallMs) })
  try {
    return await Promise.race([exchange.headers, stalled])
  } catch (err) {
    return { outcome: 'error', error: errorKind(err), bytes: 0 }
  } finally {
    clearTimeout(timer)
  }
}

/** GET path (a /download or /download-close of `bytes` of keystream(seed)), given up at `cancel`. */
export async function download (c: Clients, protocol: Protocol, path: DownloadPath, bytes: number, seed: string, cancel: Cancel, prng: Prng, session?: http2.ClientHttp2Session): Promise<Result> {
  const exchange = exchangeFor(c, protocol, 'GET', `${path}?bytes=${bytes}&seed=${seed}`, {}, false, session)
  if (cancel.at === 'before-headers') {
    setTimeout(exchange.cancel, prng.int(0, 20))
    const r = await statusOrError(exchange, c.stallMs)
    if (typeof r === 'number') exchange.cancel()
    return { outcome: 'cancelled', bytes: 0 }
  }
  const status = await statusOrError(exchange, c.stallMs)
  if (typeof status !== 'number') { exchange.cancel(); return status }
  if (status !== 200) {
    exchange.cancel()
    return { outcome: 'error', error: `status ${status}`, bytes: 0 }
  }
  const plan: ReadPlan = {}
  if (cancel.at === 'mid-body') plan.stopAfter = cancel.after
  if (cancel.at === 'backpressure') Object.assign(plan, { pauseAfter: cancel.after, pauseMs: cancel.pauseMs, cancelAfterPause: true })
  if (cancel.at === 'slow-reader') plan.slow = prng
  const read = await readBody(exchange.body, plan, c.stallMs, exchange.cancel)
  if (read.ended === 'cancelled') return { outcome: 'cancelled', bytes: read.bytes }
  if (read.ended !== 'end') return { outcome: 'error', error: read.ended === 'stalled' ? 'stalled' : read.error, bytes: read.bytes }
  const want = await expected(seed, bytes)
  if (read.bytes !== want.bytes) return { outcome: 'error', error: 'truncated (clean end)', bytes: read.bytes }
  if (read.sha256 !== want.sha256) return { outcome: 'error', error: 'corrupt', bytes: read.bytes }
  return { outcome: 'complete', bytes: read.bytes }
}

/**
 * POST /upload with `bytes` of keystream(seed). Given up after `after` bytes sent (mid-upload) or
 * right after the request headers (before-headers); otherwise the origin's hash of what it
 * received must be the hash of what was sent.
 */
export async function upload (c: Clients, protocol: Protocol, bytes: number, seed: string, cancel: Cancel): Promise<Result> {
  const exchange = exchangeFor(c, protocol, 'POST', '/upload', { 'content-type': 'application/octet-stream', 'content-length': String(bytes) }, true)
  const source = keystream(seed, bytes)
  const stopAfter = cancel.at === 'mid-upload' ? cancel.after : cancel.at === 'before-headers' ? 0 : undefined
  if (stopAfter === undefined) {
    source.pipe(exchange.requestBody as NodeJS.WritableStream)
    return await uploadAnswer(c, exchange, bytes, seed, () => { source.destroy() })
  }
  let sent = 0
  const counter = new Transform({
    transform (chunk: Buffer, _encoding, callback) {
      const room = stopAfter - sent
      if (room <= 0) { callback(); return }
      sent += Math.min(room, chunk.length)
      callback(null, chunk.length > room ? chunk.subarray(0, room) : chunk)
      if (sent >= stopAfter) setImmediate(() => { exchange.cancel(); source.destroy() })
    },
  })
  source.pipe(counter).pipe(exchange.requestBody as NodeJS.WritableStream)
  if (stopAfter === 0) setImmediate(() => { exchange.cancel(); source.destroy() })
  await statusOrError(exchange, c.stallMs)
  source.destroy()
  exchange.cancel()
  return { outcome: 'cancelled', bytes: sent }
}

/** Reads the origin's {"bytes","sha256"} answer to an upload and compares it with what was sent. */
async function uploadAnswer (c: Clients, exchange: Exchange, bytes: number, seed: string, stopSending: () => void): Promise<Result> {
  const status = await statusOrError(exchange, c.stallMs)
  if (typeof status !== 'number') { stopSending(); exchange.cancel(); return status }
  let text = ''
  const ended = await new Promise<string | null>(resolve => {
    const stall = setTimeout(() => { resolve('stalled') }, c.stallMs)
    const settle = (why: string | null): void => { clearTimeout(stall); resolve(why) }
    exchange.body.on('data', (chunk: Buffer) => { text += chunk.toString() })
    exchange.body.on('end', () => { settle(null) })
    exchange.body.on('error', err => { settle(errorKind(err)) })
    exchange.body.on('close', () => { settle('closed before the end') })
  })
  if (ended !== null) { stopSending(); exchange.cancel(); return { outcome: 'error', error: ended, bytes } }
  if (status !== 200) { stopSending(); return { outcome: 'error', error: `status ${status}`, bytes } }
  const want = await expected(seed, bytes)
  let got: { bytes?: number, sha256?: string } = {}
  try { got = JSON.parse(text) } catch { /* compared below */ }
  if (got.bytes !== want.bytes || got.sha256 !== want.sha256) return { outcome: 'error', error: 'upload corrupt', bytes }
  return { outcome: 'complete', bytes }
}

/** A WebSocket to /ws: `messages` echoed (random sizes up to 256 KiB), given up at `cancel`. */
export async function websocket (c: Clients, messages: number, cancel: Cancel, prng: Prng): Promise<Result> {
  const ws = new WebSocket(`wss://${c.edge.hostname}:${c.edge.port}/ws`, { ca: c.edge.ca, lookup: loopbackLookup } as WebSocket.ClientOptions)
  const sizes = Array.from({ length: messages }, () => prng.int(1, 256 * 1024))
  const seed = prng.int(0, 2 ** 31)
  const payloads = sizes.map((n, i) => { const b = Buffer.allocUnsafe(n); for (let j = 0; j < n; j += 4096) b[j] = (seed + i + j) & 0xff; return b })
  return await new Promise<Result>(resolve => {
    let done = false
    let bytes = 0
    let received = 0
    const finish = (r: Result): void => {
      if (done) return
      done = true
      clearTimeout(stall)
      if (r.outcome !== 'complete') ws.terminate()
      resolve(r)
    }
    const stall = setTimeout(() => { finish({ outcome: 'error', error: 'stalled', bytes }) }, c.stallMs)
    ws.on('error', err => { finish({ outcome: 'error', error: errorKind(err), bytes }) })
    ws.on('unexpected-response', (_req, res) => { finish({ outcome: 'error', error: `status ${res.statusCode ?? 0}`, bytes }) })
    ws.on('close', () => { finish({ outcome: 'error', error: 'closed before the end', bytes }) })
    if (cancel.at === 'before-headers') { setImmediate(() => { finish({ outcome: 'cancelled', bytes: 0 }) }); return }
    const stopAfter = cancel.at === 'mid-body' ? cancel.after % (messages + 1) : Infinity
    ws.on('open', () => {
      if (cancel.at === 'backpressure') {
        // Stop reading while the echoes pile up; then give up.
        ws.pause()
        for (const p of payloads) ws.send(p)
        setTimeout(() => { finish({ outcome: 'cancelled', bytes }) }, cancel.pauseMs)
        return
      }
      for (const p of payloads) ws.send(p)
    })
    ws.on('message', (data: Buffer) => {
      stall.refresh()
      if (!data.equals(payloads[received])) { finish({ outcome: 'error', error: 'ws corrupt', bytes }); return }
      bytes += data.length
      received++
      if (received >= stopAfter) { finish({ outcome: 'cancelled', bytes }); return }
      if (received === messages) {
        ws.removeAllListeners('close')
        ws.on('close', () => { finish({ outcome: 'complete', bytes }) })
        ws.close()
      }
    })
  })
}

/** A small GET answered by the origin's hello handler. */
export async function smallGet (c: Clients, protocol: Protocol, tag: string): Promise<Result> {
  const path = `/hello?${tag}`
  const exchange = exchangeFor(c, protocol, 'GET', path, {}, false)
  const status = await statusOrError(exchange, c.stallMs)
  if (typeof status !== 'number') { exchange.cancel(); return status }
  let text = ''
  const ended = await new Promise<string | null>(resolve => {
    exchange.body.on('data', (chunk: Buffer) => { text += chunk.toString() })
    exchange.body.on('end', () => { resolve(null) })
    exchange.body.on('error', err => { resolve(errorKind(err)) })
    exchange.body.on('close', () => { resolve('closed before the end') })
  })
  if (ended !== null) return { outcome: 'error', error: ended, bytes: 0 }
  if (status !== 200) return { outcome: 'error', error: `status ${status}`, bytes: 0 }
  if (!text.startsWith(`hello GET ${path} host=${c.edge.hostname} proto=https`)) return { outcome: 'error', error: 'unexpected body', bytes: 0 }
  return { outcome: 'complete', bytes: text.length }
}
