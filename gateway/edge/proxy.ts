/**
 * The reverse proxy: Host -> route -> upstream over the instance's keep-alive pool, bodies
 * streamed both ways with backpressure (Readable.pipe; nothing buffers a whole body, nothing caps
 * its size). Timers, by phase:
 *   connect       connectTimeoutMs until the upstream connection is up (the pool) -> 502
 *   first byte    upstreamTimeoutMs from the end of the request body to the
 *                 response headers (time-to-first-byte only)                      -> 504
 *   everything    idleTimeoutMs without a byte in either direction on the upstream
 *                 connection ends the exchange; total time never does
 * Upgrade requests (WebSocket) are relayed as raw byte pipes after the origin's 101.
 */
import http from 'node:http'
import type http2 from 'node:http2'
import type tls from 'node:tls'
import type { Duplex, Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { Metrics, CounterFamily } from '../metrics.ts'
import type { Route, RouteTable } from './routes.ts'
import { EdgeTimeout, type UpstreamPool } from './upstream.ts'
import { downstreamResponseHeaders, plainIp, upstreamRequestHeaders, withoutHopByHop } from './headers.ts'
import { pageHeaders, pageStatus, renderPage, type EdgePage } from './pages.ts'

export type EdgeRequest = http.IncomingMessage | http2.Http2ServerRequest
export type EdgeResponse = http.ServerResponse | http2.Http2ServerResponse

export interface ReverseProxyOptions {
  routes: RouteTable
  pool: UpstreamPool
  logger: Logger
  metrics?: Metrics
  idleTimeoutMs: number
  upstreamTimeoutMs: number
  /** Retry-After on 503 when an instance is at its connection cap (seconds). */
  retryAfterSeconds?: number
}

/** Request IDs: a per-process random prefix and a counter (unique, cheap, sortable per process). */
const ID_PREFIX = randomBytes(4).toString('hex')
let idCounter = 0
export function nextRequestId (): string {
  idCounter++
  return `${ID_PREFIX}-${idCounter.toString(36)}`
}

/** Methods whose request has a body only when framing headers say so (HTTP/1) or DATA follows (HTTP/2). */
function hasBody (req: EdgeRequest): boolean {
  if (req.httpVersionMajor >= 2) return !(req as http2.Http2ServerRequest).stream.endAfterHeaders
  const h = req.headers
  if (h['transfer-encoding'] !== undefined) return true
  const len = h['content-length']
  return len !== undefined && len !== '0'
}

/** The SNI name of the TLS connection a request arrived on ('' when none). */
export function connectionServername (req: EdgeRequest): string {
  const socket = req.socket as tls.TLSSocket
  const name = socket.servername
  return typeof name === 'string' ? name : ''
}

export class ReverseProxy {
  private readonly routes: RouteTable
  private readonly pool: UpstreamPool
  private readonly logger: Logger
  private readonly idleTimeoutMs: number
  private readonly upstreamTimeoutMs: number
  private readonly retryAfter: string
  private readonly requests: CounterFamily | undefined
  private readonly errors: CounterFamily | undefined

  constructor (options: ReverseProxyOptions) {
    this.routes = options.routes
    this.pool = options.pool
    this.logger = options.logger
    this.idleTimeoutMs = options.idleTimeoutMs
    this.upstreamTimeoutMs = options.upstreamTimeoutMs
    this.retryAfter = String(options.retryAfterSeconds ?? 5)
    this.requests = options.metrics?.family('edge_requests', 'Requests answered by the edge, by status class')
    this.errors = options.metrics?.family('edge_errors', 'Edge requests that did not reach the origin or were cut, by reason')
  }

  /**
   * Check the request against the route table and the connection's SNI. Returns the route, or the
   * page to answer with.
   */
  private admit (req: EdgeRequest, hostHeader: string | undefined): { route: Route } | { page: EdgePage } {
    const route = this.routes.lookup(hostHeader ?? '')
    if (route === undefined) return { page: 'unknown-host' }
    // RFC 9110 7.4 / RFC 9113 9.1.2: a request for an authority this connection's certificate was
    // not chosen for gets 421. Here: the SNI must name the same instance as the Host header, so a
    // connection opened for instance A can never carry requests to instance B.
    const sniRoute = this.routes.lookup(connectionServername(req))
    if (sniRoute === undefined || sniRoute.instanceId !== route.instanceId) return { page: 'misdirected' }
    const target = req.url ?? ''
    // RFC 9112 3.2: origin-form (or '*' for OPTIONS). Absolute-form is for forward proxies.
    if (!target.startsWith('/') && !(target === '*' && req.method === 'OPTIONS')) return { page: 'bad-request' }
    return { route }
  }

  /** The 'request' handler of the HTTPS server (HTTP/1.1 and HTTP/2 compat objects alike). */
  readonly handleRequest = (req: EdgeRequest, res: EdgeResponse): void => {
    const started = performance.now()
    const requestId = nextRequestId()
    const hostHeader = req.headers[':authority'] as string | undefined ?? req.headers.host
    const clientIp = plainIp(req.socket?.remoteAddress)
    let status = 0
    let bytesIn = 0
    let bytesOut = 0
    let failure: string | undefined
    let route: Route | undefined = undefined
    let slot = false

    req.on('error', () => {}) // an aborted upload closes `res`, handled there
    res.on('error', () => {})
    res.once('close', () => {
      if (slot && route !== undefined) this.pool.release(route)
      slot = false
      this.requests?.inc(`${Math.floor(status / 100)}xx`)
      if (!this.logger.isLevelEnabled('info')) return
      this.logger.info({
        reqId: requestId,
        method: req.method,
        host: hostHeader,
        path: (req.url ?? '').split('?', 1)[0],
        status,
        bytesIn,
        bytesOut,
        durationMs: Math.round(performance.now() - started),
        instanceId: route?.instanceId,
        client: clientIp,
        proto: req.httpVersionMajor >= 2 ? 'h2' : 'http/1.1',
        ...(failure !== undefined ? { error: failure } : {}),
        ...(!res.writableFinished ? { aborted: true } : {}),
      }, 'request')
    })

    const answer = (page: EdgePage, extra: Record<string, string> = {}): void => {
      failure ??= page
      this.errors?.inc(page)
      if (res.headersSent) { status = status || 502; res.destroy(); return }
      status = pageStatus(page)
      const body = renderPage(page, { host: hostHeader, requestId })
      // HTTP/1: a body we will not read makes the connection unusable for the next request.
      if (req.httpVersionMajor < 2 && !req.complete) extra = { ...extra, connection: 'close' }
      try {
        res.writeHead(status, { ...pageHeaders(body, requestId), ...extra })
        if (req.method === 'HEAD') res.end()
        else res.end(body)
      } catch {
        res.destroy()
      }
      // Unread request bodies are discarded (HTTP/1 keeps the connection only if it can drain).
      if (!req.readableEnded) req.resume()
    }

    const admitted = this.admit(req, hostHeader)
    if ('page' in admitted) { answer(admitted.page); return }
    route = admitted.route
    if (!this.pool.tryAcquire(route)) { answer('busy', { 'retry-after': this.retryAfter }); return }
    slot = true

    // `OPTIONS *` asks about the server as a whole (RFC 9110 9.3.7), and the HTTP client cannot
    // send a target that is not a path: the edge answers it.
    if (req.url === '*') {
      status = 204
      res.writeHead(204, { allow: 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS', 'x-request-id': requestId })
      res.end()
      return
    }
    const headers = upstreamRequestHeaders(req.headers, { clientIp, host: hostHeader!, proto: 'https', requestId })
    const withBody = hasBody(req)
    const method = req.method ?? 'GET'
    const activeRoute = route

    const send = (attempt: number): void => {
      let controller: Dispatcher.DispatchController | undefined
      let pendingAbort: Error | undefined
      let responded = false
      let upstreamComplete = false
      let answered = false // we answered the client ourselves: later upstream errors are moot
      let waitingForDrain = false
      // One timer per phase: idle while the request body goes up, first byte (504) once it is
      // all sent, idle again while the response comes down.
      let timer: NodeJS.Timeout | undefined
      const abort = (err: Error): void => {
        if (controller !== undefined) controller.abort(err)
        else pendingAbort = err
      }
      const arm = (code: EdgeTimeout['code'], ms: number): void => {
        clearTimeout(timer)
        timer = setTimeout(() => { abort(new EdgeTimeout(code)) }, ms)
      }
      const touch = (): void => { timer?.refresh() }
      const disarm = (): void => { clearTimeout(timer); timer = undefined }
      const armFirstByte = (): void => { if (!responded) arm('UPSTREAM_TIMEOUT', this.upstreamTimeoutMs) }
      const resume = (): void => { waitingForDrain = false; controller?.resume() }

      const handler: Dispatcher.DispatchHandler = {
        onRequestStart: c => {
          controller = c
          if (pendingAbort !== undefined) c.abort(pendingAbort)
        },
        onResponseStart: (c, statusCode, upstreamHeaders, statusMessage) => {
          if (statusCode < 200) return // 1xx informational: nothing to relay
          responded = true
          arm('IDLE_TIMEOUT', this.idleTimeoutMs)
          status = statusCode
          const responseHeaders = downstreamResponseHeaders(upstreamHeaders)
          try {
            if (req.httpVersionMajor >= 2) (res as http2.Http2ServerResponse).writeHead(status, responseHeaders)
            else (res as http.ServerResponse).writeHead(status, statusMessage ?? '', responseHeaders)
          } catch (err) {
            // A header the client side refuses (e.g. invalid in HTTP/2): the origin's fault.
            failure = errorText(err)
            status = 0
            answer('offline')
            answered = true
            c.abort(err instanceof Error ? err : new Error(String(err)))
          }
        },
        onResponseData: (c, chunk) => {
          bytesOut += chunk.length
          touch()
          if (!(res as NodeJS.WritableStream).write(chunk) && !waitingForDrain) {
            waitingForDrain = true
            c.pause()
            res.once('drain', resume)
          }
        },
        onResponseEnd: () => {
          upstreamComplete = true
          disarm()
          res.end()
        },
        onResponseError: (_c, err) => {
          disarm()
          if (answered) return
          // The origin's side failed mid-body: cut the client's response, never end it as complete.
          if (responded) { failure ??= errorText(err); res.destroy(); return }
          if (res.destroyed) return
          // A pooled connection the origin closed just as we reused it: an idempotent request
          // without a body may go once more (RFC 9110 9.2.2; nothing was taken from the client).
          if (!withBody && attempt === 0 && idempotent(method) && isConnectionReset(err)) {
            send(1)
            return
          }
          failure = errorText(err)
          const timedOut = err instanceof EdgeTimeout && err.code !== 'CONNECT_TIMEOUT'
          answer(timedOut ? 'timeout' : 'offline')
        },
      }

      // The client went away before the exchange finished: stop the upstream side too.
      res.once('close', () => { disarm(); if (!upstreamComplete) abort(new Error('client closed')) })

      if (withBody) {
        arm('IDLE_TIMEOUT', this.idleTimeoutMs)
        req.once('end', armFirstByte)
        // A client that aborts its upload closes `res`, whose handler above aborts the upstream.
        req.once('error', err => { if (!responded) failure ??= `client: ${errorText(err)}` })
      } else {
        armFirstByte()
        if (attempt === 0) req.resume()
      }
      try {
        this.pool.dispatcherFor(activeRoute).dispatch({
          method,
          path: req.url ?? '/',
          headers: headers as Record<string, string | string[]>,
          // Read by the client as it sends (backpressure); counted and keeping the idle timer up.
          // (undici takes async iterables; its types list only streams)
          body: withBody ? countedBody(req, chunk => { bytesIn += chunk.length; touch() }) as unknown as Readable : null,
        }, handler)
      } catch (err) {
        disarm()
        failure = errorText(err)
        answer('offline')
      }
    }
    send(0)
  }

  /** The 'upgrade' handler of the HTTPS server: WebSocket and other HTTP/1.1 upgrades. */
  readonly handleUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    const started = performance.now()
    const requestId = nextRequestId()
    const hostHeader = req.headers.host
    const clientIp = plainIp(req.socket.remoteAddress)
    let status = 0
    let bytesIn = 0
    let bytesOut = 0
    let failure: string | undefined
    let logged = false
    socket.on('error', () => {})

    const log = (): void => {
      if (logged) return
      logged = true
      this.requests?.inc(`${Math.floor(status / 100)}xx`)
      if (!this.logger.isLevelEnabled('info')) return
      this.logger.info({
        reqId: requestId, method: req.method, host: hostHeader, path: (req.url ?? '').split('?', 1)[0], status,
        bytesIn, bytesOut, durationMs: Math.round(performance.now() - started), upgrade: req.headers.upgrade,
        client: clientIp, proto: 'http/1.1', ...(failure !== undefined ? { error: failure } : {}),
      }, 'request')
    }
    const refuse = (page: EdgePage, extra: Record<string, string> = {}): void => {
      failure ??= page
      this.errors?.inc(page)
      status = pageStatus(page)
      const body = renderPage(page, { host: hostHeader, requestId })
      const fields = { ...pageHeaders(body, requestId), ...extra, connection: 'close' }
      socket.end(rawHead(status, http.STATUS_CODES[status] ?? '', Object.entries(fields)) + body)
      setTimeout(() => socket.destroy(), 5_000).unref()
      log()
    }

    const admitted = this.admit(req, hostHeader)
    if ('page' in admitted) { refuse(admitted.page); return }
    const route = admitted.route
    if (!this.pool.tryAcquire(route)) { refuse('busy', { 'retry-after': this.retryAfter }); return }
    let released = false
    const release = (): void => { if (!released) { released = true; this.pool.release(route) } }

    let upstream: http.ClientRequest
    try {
      upstream = http.request({
        agent: this.pool.agentFor(route),
        host: route.tunnelIp,
        port: route.port,
        method: req.method,
        path: req.url,
        headers: upstreamRequestHeaders(req.headers, { clientIp, host: hostHeader!, proto: 'https', requestId }, true),
        setHost: false,
      })
    } catch (err) {
      failure = errorText(err)
      release()
      refuse('offline')
      return
    }
    const firstByteTimer = setTimeout(() => upstream.destroy(new EdgeTimeout('UPSTREAM_TIMEOUT')), this.upstreamTimeoutMs)
    socket.once('close', () => { clearTimeout(firstByteTimer); upstream.destroy(); release(); log() })

    upstream.on('error', err => {
      clearTimeout(firstByteTimer)
      if (status !== 0) return
      failure = errorText(err)
      release()
      refuse(err instanceof EdgeTimeout && err.code !== 'CONNECT_TIMEOUT' ? 'timeout' : 'offline')
    })

    upstream.on('upgrade', (upstreamRes, upstreamSocket, upstreamHead) => {
      clearTimeout(firstByteTimer)
      status = upstreamRes.statusCode ?? 101
      upstreamSocket.on('error', () => {})
      const fields: Array<[string, string]> = []
      for (let i = 0; i < upstreamRes.rawHeaders.length; i += 2) fields.push([upstreamRes.rawHeaders[i], upstreamRes.rawHeaders[i + 1]])
      socket.write(rawHead(status, upstreamRes.statusMessage ?? 'Switching Protocols', fields))
      if (upstreamHead.length > 0) { socket.write(upstreamHead); bytesOut += upstreamHead.length }
      if (head.length > 0) { upstreamSocket.write(head); bytesIn += head.length }
      // Raw relay both ways; either side closing closes the other. Idle time alone ends it.
      const idle = (): void => { failure ??= 'idle timeout'; socket.destroy(); upstreamSocket.destroy() }
      upstreamSocket.setTimeout(this.idleTimeoutMs, idle)
      // pipe() (not pipeline) keeps the listener count on the client socket low: one close
      // handler ends both directions.
      socket.pipe(upstreamSocket)
      upstreamSocket.pipe(socket)
      const closeBoth = (): void => { socket.destroy(); upstreamSocket.destroy() }
      socket.once('close', closeBoth)
      upstreamSocket.once('close', closeBoth)
      socket.on('data', (c: Buffer) => { bytesIn += c.length })
      upstreamSocket.on('data', (c: Buffer) => { bytesOut += c.length })
    })

    // The origin answered without switching protocols: relay that response and close.
    upstream.on('response', upstreamRes => {
      clearTimeout(firstByteTimer)
      status = upstreamRes.statusCode ?? 502
      const fields = Object.entries(withoutHopByHop(upstreamRes.headers))
        .flatMap(([k, v]) => Array.isArray(v) ? v.map(x => [k, x] as [string, string]) : [[k, String(v)] as [string, string]])
      fields.push(['connection', 'close'])
      socket.write(rawHead(status, upstreamRes.statusMessage ?? '', fields))
      upstreamRes.on('data', (c: Buffer) => { bytesOut += c.length })
      upstreamRes.pipe(socket) // ends the socket after the body (Connection: close)
      upstreamRes.once('close', () => {
        if (!upstreamRes.complete) socket.destroy()
        else setTimeout(() => socket.destroy(), 5_000).unref()
      })
    })
    upstream.end()
  }
}

async function * countedBody (req: EdgeRequest, onChunk: (chunk: Buffer) => void): AsyncGenerator<Buffer> {
  for await (const chunk of req as AsyncIterable<Buffer>) {
    onChunk(chunk)
    yield chunk
  }
}

function rawHead (status: number, reason: string, fields: Iterable<[string, string]>): string {
  let head = `HTTP/1.1 ${status} ${reason.replace(/[\r\n]/g, '')}\r\n`
  for (const [name, value] of fields) head += `${name}: ${value}\r\n`
  return head + '\r\n'
}

/** The origin closed or reset the connection (undici reports a close before the response as UND_ERR_SOCKET). */
function isConnectionReset (err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code
  return code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_SOCKET'
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])
function idempotent (method: string): boolean {
  return IDEMPOTENT.has(method)
}

function errorText (err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code
    return code !== undefined ? `${code}: ${err.message}` : err.message
  }
  return String(err)
}
