/**
 * The web server behind the agent in tests (Erugo's Caddy in miniature): hashes uploads, streams
 * deterministic downloads, and answers small requests with what it saw.
 *
 *   POST /upload            -> {"bytes":N,"sha256":"..."} of the request body
 *   GET  /download?bytes=N&seed=S  -> N bytes of keystream(S)
 *   GET  /download-close?bytes=N&seed=S -> the same as python's http.server sends a file: an
 *                           HTTP/1.0 response with Content-Length and Connection: close, the
 *                           body, then FIN right behind the last byte
 *   GET  /ws (Upgrade: websocket) -> a WebSocket that echoes every message
 *   anything else           -> "hello <method> <url> host=<host> proto=<x-forwarded-proto>"
 */
import type { Test } from 'tap'
import { createCipheriv, createHash } from 'node:crypto'
import http from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import { WebSocketServer } from 'ws'

const CHUNK = 1 << 20

/** Deterministic bytes: AES-128-CTR keystream keyed by the seed (fast, incompressible). */
export function keystream (seed: string, total: number): Readable {
  const cipher = createCipheriv('aes-128-ctr', createHash('sha256').update(seed).digest().subarray(0, 16), Buffer.alloc(16))
  const zeros = Buffer.alloc(CHUNK)
  let left = total
  return new Readable({
    highWaterMark: CHUNK,
    read () {
      if (left === 0) {
        this.push(null)
        return
      }
      const n = Math.min(CHUNK, left)
      left -= n
      this.push(cipher.update(n === CHUNK ? zeros : zeros.subarray(0, n)))
    },
  })
}

export async function sha256Of (stream: Readable): Promise<{ bytes: number, sha256: string }> {
  const hash = createHash('sha256')
  let bytes = 0
  for await (const chunk of stream) {
    hash.update(chunk as Buffer)
    bytes += (chunk as Buffer).length
  }
  return { bytes, sha256: hash.digest('hex') }
}

export interface Origin { port: number, requests: string[] }

export async function startOrigin (t: Test): Promise<Origin> {
  const requests: string[] = []
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://origin')
    requests.push(`${req.method ?? ''} ${url.pathname}`)
    if (req.method === 'POST' && url.pathname === '/upload') {
      sha256Of(req).then(r => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(r)) }, () => { res.destroy() })
      return
    }
    if (req.method === 'GET' && url.pathname === '/download-close') {
      // Written on the socket itself, as an HTTP/1.0 server would: end() sends the FIN at once.
      const bytes = Number(url.searchParams.get('bytes'))
      const socket = req.socket
      socket.on('error', () => {})
      socket.write(`HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: ${bytes}\r\nConnection: close\r\n\r\n`)
      keystream(url.searchParams.get('seed') ?? '', bytes).pipe(socket)
      return
    }
    if (req.method === 'GET' && url.pathname === '/download') {
      const bytes = Number(url.searchParams.get('bytes'))
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(bytes) })
      keystream(url.searchParams.get('seed') ?? '', bytes).pipe(res)
      return
    }
    req.resume()
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`hello ${req.method ?? ''} ${req.url ?? ''} host=${req.headers.host ?? ''} proto=${String(req.headers['x-forwarded-proto'])}\n`)
  })
  const wss = new WebSocketServer({ noServer: true })
  server.on('upgrade', (req, socket, head) => {
    requests.push(`UPGRADE ${req.url ?? ''}`)
    socket.on('error', () => {})
    wss.handleUpgrade(req, socket, head, ws => {
      ws.on('error', () => {})
      ws.on('message', (data, isBinary) => { ws.send(data, { binary: isBinary }) })
    })
  })
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  t.teardown(async () => {
    for (const ws of wss.clients) ws.terminate()
    wss.close()
    server.closeAllConnections()
    await new Promise(resolve => { server.close(resolve) })
  })
  return { port: (server.address() as AddressInfo).port, requests }
}

export interface EdgeTarget { port: number, hostname: string, ca: string }

/** One HTTPS request to the gateway's edge for `hostname`; the response body as a stream. */
export async function edgeRequest (edge: EdgeTarget, method: string, path: string, body?: Readable, headers: Record<string, string> = {}): Promise<http.IncomingMessage> {
  return await new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: edge.port, servername: edge.hostname, method, path, headers: { host: edge.hostname, ...headers }, ca: edge.ca, timeout: 60_000 }, resolve)
    req.on('timeout', () => { req.destroy(new Error('idle timeout')) })
    req.on('error', reject)
    if (body === undefined) req.end()
    else body.pipe(req)
  })
}

export async function edgeText (edge: EdgeTarget, path: string): Promise<{ status: number, body: string }> {
  const res = await edgeRequest(edge, 'GET', path)
  let body = ''
  res.setEncoding('utf8')
  for await (const chunk of res) body += chunk as string
  return { status: res.statusCode ?? 0, body }
}
