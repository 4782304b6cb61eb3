/**
 * The reverse proxy: Host -> route -> upstream over the instance's keep-alive pool, bodies
 * streamed both ways with backpressure (the request body read as undici sends it, the response
 * written to the client with undici paused while the client's buffer is full; nothing buffers a
 * whole body, nothing caps its size). Timers, by phase, one watchdog per exchange:
 *   connect       connectTimeoutMs until the upstream connection is up (the pool) -> 502
 *   first byte    upstreamTimeoutMs from the end of the request body to the
 *                 response headers (time-to-first-byte only)                      -> 504
 *   everything    idleTimeoutMs without a body byte in either direction ends the
 *                 exchange; total time never does
 * Upgrade requests (WebSocket) are relayed as raw byte pipes after the origin's 101.
 */
import http, { type IncomingHttpHeaders } from 'node:http'
import http2 from 'node:http2'
import type tls from 'node:tls'
import type { Duplex, Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import { randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { Metrics, CounterFamily } from '../metrics.ts'
import type { Route, RouteTable } from './routes.ts'
import { EdgeTimeout, type SlotGrant, type UpstreamPool } from './upstream.ts'
import { downstreamResponseHeaders, plainIp, publicAuthority, relayedClientIp, relayedRequestHeaders, upstreamRequestHeaders, withoutHopByHop } from './headers.ts'
import type { RelayClient, RelayTarget } from './relay.ts'
import { passthroughClient } from './passthrough.ts'
import { clientKey, UploadProgressWatch, type UploadInProgress } from './limits.ts'
import { controlPage, pageHeaders, pageStatus, renderPage, type EdgePage } from './pages.ts'
import type { TrafficRecorder } from './traffic.ts'

/**
 * RFC 6797 6.1: on control's names (dashboard and API) browsers must use HTTPS for a year. Sent
 * over TLS only (RFC 6797 7.2: never on plain HTTP, where the listener redirects).
 */
export const CONTROL_HSTS = 'max-age=31536000'

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
  /**
   * Minimum progress of request bodies while an instance's slots are scarce (limits.ts): above
   * `scarceSlotShare` of its slots in use, a body slower than `minBytesPerSecond` over `windowMs`
   * gets 408. Absent: no minimum.
   */
  slowUploads?: { scarceSlotShare: number, minBytesPerSecond: number, windowMs: number }
  /** Fleet: where a request without a live local session is relayed (relay.ts). */
  relay?: RelayClient
  /**
   * The relay listener's proxy: requests another gateway relayed here. They go into the local
   * tunnel only (never relayed again), with the forwarding headers that gateway set.
   */
  relayed?: boolean
  /**
   * Per-instance usage and access log (traffic.ts). Recorded where the client's request entered
   * the fleet: a relayed proxy records nothing (its first gateway did), nor does control's route.
   */
  traffic?: TrafficRecorder
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
  readonly pool: UpstreamPool
  readonly logger: Logger
  readonly idleTimeoutMs: number
  readonly upstreamTimeoutMs: number
  readonly retryAfter: string
  readonly requests: CounterFamily | undefined
  readonly errors: CounterFamily | undefined
  readonly uploads: UploadProgressWatch | undefined
  readonly scarceSlotShare: number
  readonly relayed: boolean
  readonly traffic: TrafficRecorder | undefined
  private readonly relay: RelayClient | undefined
  private controlUnconfiguredWarned = false

  constructor (options: ReverseProxyOptions) {
    this.routes = options.routes
    this.pool = options.pool
    this.logger = options.logger
    this.idleTimeoutMs = options.idleTimeoutMs
    this.upstreamTimeoutMs = options.upstreamTimeoutMs
    this.retryAfter = String(options.retryAfterSeconds ?? 5)
    this.requests = options.metrics?.family('edge_requests', 'Requests answered by the edge, by status class')
    this.errors = options.metrics?.family('edge_errors', 'Edge requests that did not reach the origin or were cut, by reason')
    const slow = options.slowUploads
    this.uploads = slow === undefined ? undefined : new UploadProgressWatch(slow.minBytesPerSecond, slow.windowMs)
    this.scarceSlotShare = slow?.scarceSlotShare ?? 1
    this.relayed = options.relayed === true
    this.relay = this.relayed ? undefined : options.relay
    this.traffic = this.relayed ? undefined : options.traffic
  }

  /**
   * Relay or direct (null) for an admitted route. A relayed request is never relayed again, nor
   * one whose connection another gateway passed through to us (passthrough.ts).
   */
  relayTarget (route: Route, req: EdgeRequest): RelayTarget | null {
    if (this.relay === undefined || passthroughClient(req.socket) !== undefined) return null
    return this.relay.targetFor(route)
  }

  /**
   * The client's address: the socket's; for a connection passed through by another gateway, the
   * one that gateway saw; for a relayed request, the one its first gateway put in the headers.
   */
  clientIpOf (req: EdgeRequest): string {
    const direct = plainIp(passthroughClient(req.socket) ?? req.socket?.remoteAddress)
    return this.relayed ? relayedClientIp(req.headers) ?? direct : direct
  }

  /** Adds a finished request to its instance's usage and access log (not control's, not relayed ones). */
  recordTraffic (route: Route | undefined, request: { startedAt: number, method: string | undefined, target: string | undefined, status: number, bytesIn: number, bytesOut: number, durationMs: number, client: string }): void {
    if (this.traffic === undefined || route === undefined || route.control === true) return
    this.traffic.record({ ...request, instanceId: route.instanceId, method: request.method ?? 'GET', target: request.target ?? '' })
  }

  /** More than scarceSlotShare of the instance's slots are in use (never for control's route: it has no slot cap). */
  slotsScarce (route: Route): boolean {
    return route.control !== true && this.pool.activeConnections(route.instanceId) > this.pool.capacity(route) * this.scarceSlotShare
  }

  /**
   * Check the request against the route table and the connection's SNI. Returns the route, or the
   * page to answer with (and whether the Host names control's route: its pages carry HSTS).
   */
  admit (req: EdgeRequest, hostHeader: string | undefined): { route: Route } | { page: EdgePage, control: boolean } {
    const route = this.routes.lookup(hostHeader ?? '')
    if (route === undefined) return { page: 'unknown-host', control: false }
    const control = route.control === true
    if (this.relayed) {
      // The relay's SNI names no instance; the fleet member that sent this checked Host and SNI.
      // Control's names are each gateway's own business; a route without a local peer ends here.
      if (control) return { page: 'unknown-host', control: false }
      if (route.remote === true) return { page: 'offline', control: false }
      return { route }
    }
    // RFC 9110 7.4 / RFC 9113 9.1.2: a request for an authority this connection's certificate was
    // not chosen for gets 421. Here: the SNI must name the same instance as the Host header, so a
    // connection opened for instance A can never carry requests to instance B.
    const sniRoute = this.routes.lookup(connectionServername(req))
    if (sniRoute === undefined || sniRoute.instanceId !== route.instanceId) return { page: 'misdirected', control }
    const target = req.url ?? ''
    // RFC 9112 3.2: origin-form (or '*' for OPTIONS). Absolute-form is for forward proxies.
    if (!target.startsWith('/') && !(target === '*' && req.method === 'OPTIONS')) return { page: 'bad-request', control }
    if (control && route.tunnelIp === '') {
      if (!this.controlUnconfiguredWarned) {
        this.controlUnconfiguredWarned = true
        this.logger.warn({ hostnames: route.hostnames }, 'a request for control\'s names arrived but control\'s address is not configured: set CC_CONTROL_PUBLIC_ORIGIN (e.g. http://control:8080); answering 503')
      }
      return { page: 'control-unconfigured', control }
    }
    return { route }
  }

  /** The 'request' handler of the HTTPS server (HTTP/1.1 and HTTP/2 compat objects alike). */
  readonly handleRequest = (req: EdgeRequest, res: EdgeResponse): void => {
    new Exchange(this, req, res).start()
  }

  /** The 'upgrade' handler of the HTTPS server: WebSocket and other HTTP/1.1 upgrades. */
  readonly handleUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    const started = performance.now()
    const startedAt = Date.now()
    const requestId = this.relayed ? relayedRequestId(req) : nextRequestId()
    const hostHeader = req.headers.host
    const clientIp = this.clientIpOf(req)
    const client = clientKey(clientIp)
    let status = 0
    let bytesIn = 0
    let bytesOut = 0
    let failure: string | undefined
    let logged = false
    let recordedRoute: Route | undefined
    socket.on('error', () => {})

    const log = (): void => {
      if (logged) return
      logged = true
      this.requests?.inc(`${Math.floor(status / 100)}xx`)
      const durationMs = performance.now() - started
      this.recordTraffic(recordedRoute, { startedAt, method: req.method, target: req.url, status, bytesIn, bytesOut, durationMs, client: clientIp })
      if (!this.logger.isLevelEnabled('info')) return
      this.logger.info({
        reqId: requestId, method: req.method, host: hostHeader, path: (req.url ?? '').split('?', 1)[0], status,
        bytesIn, bytesOut, durationMs: Math.round(durationMs), upgrade: req.headers.upgrade,
        client: clientIp, proto: 'http/1.1', ...(this.relayed ? { relayed: true } : {}), ...(failure !== undefined ? { error: failure } : {}),
      }, 'request')
    }
    let control = false
    const refuse = (refused: EdgePage, extra: Record<string, string> = {}): void => {
      const page = control ? controlPage(refused) : refused
      if (control) extra = { ...extra, 'strict-transport-security': CONTROL_HSTS }
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
    if ('page' in admitted) { control = admitted.control; refuse(admitted.page); return }
    const route = recordedRoute = admitted.route
    control = route.control === true
    const grant = this.pool.tryAcquire(route, client)
    if (grant !== 'granted') { refuse(refusalPage(grant), { 'retry-after': this.retryAfter }); return }
    let released = false
    const release = (): void => { if (!released) { released = true; this.pool.release(route, client) } }
    const target = this.relayTarget(route, req)
    if (target === null && route.remote === true) { release(); refuse('offline'); return }

    let upstream: http.ClientRequest
    try {
      upstream = http.request({
        agent: target?.agent ?? this.pool.agentFor(route),
        host: route.tunnelIp,
        port: route.port,
        method: req.method,
        path: req.url,
        headers: this.relayed
          ? relayedRequestHeaders(req.headers, true)
          : upstreamRequestHeaders(req.headers, { clientIp, host: publicAuthority(hostHeader!, 'https'), proto: 'https', requestId }, true),
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
      if (control) fields.push(['strict-transport-security', CONTROL_HSTS])
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

/** Which deadline an exchange's watchdog enforces. */
const enum Phase { Sending, Waiting, Receiving }

/**
 * One request relayed to the origin: the state of the exchange and its undici dispatch handler.
 * A class rather than closures: one object per request, methods shared.
 */
class Exchange implements Dispatcher.DispatchHandler, UploadInProgress {
  private readonly started = performance.now()
  private readonly startedAt = Date.now()
  private readonly requestId: string
  private readonly hostHeader: string | undefined
  private readonly clientIp: string
  private readonly client: string
  private status = 0
  private bytesIn = 0
  private bytesOut = 0
  private failure: string | undefined
  private route: Route | undefined
  /** Fleet: the gateway this exchange is relayed to (undefined: direct). */
  private target: RelayTarget | undefined
  /** The Host names control's route: HSTS on every answer, control's wording on edge pages. */
  private control = false
  private slot = false
  private withBody = false
  private headers: Record<string, string | string[]> | undefined
  // Per attempt (a reset pooled connection may get a second one).
  private attempt = 0
  private controller: Dispatcher.DispatchController | undefined
  private pendingAbort: Error | undefined
  private responded = false
  private upstreamComplete = false
  private answered = false // we answered the client ourselves: later upstream errors are moot
  private cutByEdge = false // the edge destroyed the response: a close then is not the client's
  private waitingForDrain = false
  // One watchdog timer, re-armed lazily: idle while the request body goes up, first byte (504)
  // once it is all sent, idle again while the response comes down.
  private phase = Phase.Waiting
  private lastActivity = 0
  private watchdog: NodeJS.Timeout | undefined
  private watchdogAt = 0

  constructor (private readonly proxy: ReverseProxy, private readonly req: EdgeRequest, private readonly res: EdgeResponse) {
    this.requestId = proxy.relayed ? relayedRequestId(req) : nextRequestId()
    this.hostHeader = req.headers[':authority'] as string | undefined ?? req.headers.host
    this.clientIp = proxy.clientIpOf(req)
    this.client = clientKey(this.clientIp)
  }

  start (): void {
    const { req, res, proxy } = this
    req.on('error', noop) // an aborted upload closes `res`, handled there
    res.on('error', noop)
    res.once('close', () => { this.closed() })

    const admitted = proxy.admit(req, this.hostHeader)
    if ('page' in admitted) { this.control = admitted.control; this.answer(admitted.page); return }
    const route = this.route = admitted.route
    this.control = route.control === true
    // `OPTIONS *` asks about the server as a whole (RFC 9110 9.3.7), and the HTTP client cannot
    // send a target that is not a path: the edge answers it (no upstream slot taken).
    if (req.url === '*') {
      this.status = 204
      res.writeHead(204, { allow: 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS', 'x-request-id': this.requestId, ...(this.control ? { 'strict-transport-security': CONTROL_HSTS } : {}) })
      res.end()
      return
    }
    const grant = proxy.pool.tryAcquire(route, this.client)
    if (grant !== 'granted') { this.answer(refusalPage(grant), { 'retry-after': proxy.retryAfter }); return }
    this.slot = true
    this.target = proxy.relayTarget(route, req) ?? undefined
    if (this.target === undefined && route.remote === true) { this.answer('offline'); return }
    this.headers = (proxy.relayed
      ? relayedRequestHeaders(req.headers)
      : upstreamRequestHeaders(req.headers, {
        clientIp: this.clientIp, host: publicAuthority(this.hostHeader!, 'https'), proto: 'https', requestId: this.requestId,
      })) as Record<string, string | string[]>
    this.withBody = hasBody(req)
    if (this.withBody) {
      req.once('end', () => { this.requestSent() })
      proxy.uploads?.watch(this)
    }
    this.send()
  }

  private send (): void {
    const { req } = this
    this.controller = undefined
    this.pendingAbort = undefined
    this.responded = false
    if (this.withBody) {
      this.enter(Phase.Sending)
    } else {
      this.enter(Phase.Waiting)
      if (this.attempt === 0) req.resume()
    }
    try {
      const dispatcher = this.target?.dispatcher ?? this.proxy.pool.dispatcherFor(this.route!)
      dispatcher.dispatch({
        method: req.method ?? 'GET',
        path: req.url ?? '/',
        headers: this.headers,
        // Read as the client sends it (backpressure). (undici takes async iterables; its types
        // list only streams.)
        body: this.withBody ? this.countedBody() as unknown as Readable : null,
      }, this)
    } catch (err) {
      this.disarm()
      this.failure = errorText(err)
      this.answer('offline')
    }
  }

  /** The request body as undici reads it: each chunk counted and keeping the idle watchdog fed. */
  private async * countedBody (): AsyncGenerator<Buffer> {
    for await (const chunk of this.req as AsyncIterable<Buffer>) {
      this.bytesIn += chunk.length
      this.lastActivity = performance.now()
      yield chunk
    }
  }

  private requestSent (): void {
    this.proxy.uploads?.unwatch(this)
    // Not once the exchange is over or answered by us: an HTTP/2 request body also ends when its
    // stream closes, and a first-byte deadline armed then would only hold the exchange for nothing.
    if (!this.slot || this.answered) return
    if (!this.responded && this.phase === Phase.Sending) this.enter(Phase.Waiting)
  }

  bytesReceived (): number {
    return this.bytesIn
  }

  /** Sending the body, no answer yet, the upstream request under way and nothing of the body left unread. */
  waitingForClient (): boolean {
    return this.phase === Phase.Sending && !this.responded && !this.answered && this.controller !== undefined && this.req.readableLength === 0
  }

  slotsScarce (): boolean {
    return this.route !== undefined && this.proxy.slotsScarce(this.route)
  }

  /** The body stalled while slots are scarce: 408, and the slot goes back when the response closes. */
  endSlowUpload (): void {
    this.failure = 'slow upload while the instance\'s slots are scarce'
    this.answered = true
    this.answer('slow-upload')
    // RFC 9113 8.1: after a complete response, RST_STREAM(NO_ERROR) tells the client to stop
    // sending; without it the stream (and its slot) stays open until the client ends the body.
    if (this.req.httpVersionMajor >= 2) {
      const stream = (this.res as http2.Http2ServerResponse).stream
      // The stream's own 'finish' (the compat response's waits for the stream to close).
      stream.once('finish', () => { if (!stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR) })
    }
  }

  private enter (phase: Phase): void {
    const now = performance.now()
    this.phase = phase
    this.lastActivity = now
    const at = now + (phase === Phase.Waiting ? this.proxy.upstreamTimeoutMs : this.proxy.idleTimeoutMs)
    // A watchdog already due no later than this deadline checks it then; an earlier one is needed now.
    if (this.watchdog !== undefined && this.watchdogAt <= at) return
    this.arm(at - now, at)
  }

  private arm (ms: number, at: number): void {
    clearTimeout(this.watchdog)
    this.watchdogAt = at
    this.watchdog = setTimeout(watchdogFired, ms, this)
  }

  private disarm (): void {
    clearTimeout(this.watchdog)
    this.watchdog = undefined
  }

  /** The watchdog's turn: abort if the phase's deadline has passed, else sleep until it. */
  checkDeadline (): void {
    this.watchdog = undefined
    const waiting = this.phase === Phase.Waiting
    // Waiting for the first byte, nothing moves: lastActivity is when the phase began.
    const at = this.lastActivity + (waiting ? this.proxy.upstreamTimeoutMs : this.proxy.idleTimeoutMs)
    const now = performance.now()
    if (at > now) { this.arm(at - now, at); return }
    this.abort(new EdgeTimeout(waiting ? 'UPSTREAM_TIMEOUT' : 'IDLE_TIMEOUT'))
  }

  private abort (err: Error): void {
    if (this.controller !== undefined) this.controller.abort(err)
    else this.pendingAbort = err
  }

  private resume (): void {
    this.waitingForDrain = false
    this.controller?.resume()
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.pendingAbort !== undefined) controller.abort(this.pendingAbort)
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, upstreamHeaders: IncomingHttpHeaders, statusMessage?: string): void {
    if (statusCode < 200) return // 1xx informational: nothing to relay
    const { req, res } = this
    this.responded = true
    this.enter(Phase.Receiving)
    this.status = statusCode
    const responseHeaders = downstreamResponseHeaders(upstreamHeaders)
    if (this.control) responseHeaders['strict-transport-security'] = CONTROL_HSTS
    try {
      if (req.httpVersionMajor >= 2) (res as http2.Http2ServerResponse).writeHead(statusCode, responseHeaders)
      else (res as http.ServerResponse).writeHead(statusCode, statusMessage ?? '', responseHeaders)
    } catch (err) {
      // A header the client side refuses (e.g. invalid in HTTP/2): the origin's fault.
      this.failure = errorText(err)
      this.status = 0
      this.answer('offline')
      this.answered = true
      controller.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.bytesOut += chunk.length
    this.lastActivity = performance.now()
    if (!(this.res as NodeJS.WritableStream).write(chunk) && !this.waitingForDrain) {
      this.waitingForDrain = true
      controller.pause()
      this.res.once('drain', () => { this.resume() })
    }
  }

  onResponseEnd (): void {
    this.upstreamComplete = true
    this.disarm()
    this.res.end()
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    this.disarm()
    if (this.answered) return
    // The origin's side failed mid-body: cut the client's response, never end it as complete.
    if (this.responded) { this.failure ??= errorText(err); this.cutByEdge = true; this.res.destroy(); return }
    if (this.res.destroyed) return
    // A pooled connection the origin closed just as we reused it: an idempotent request without
    // a body may go once more (RFC 9110 9.2.2; nothing was taken from the client).
    if (!this.withBody && this.attempt === 0 && idempotent(this.req.method ?? 'GET') && isConnectionReset(err)) {
      this.attempt = 1
      this.send()
      return
    }
    this.failure = errorText(err)
    this.answer(err instanceof EdgeTimeout && err.code !== 'CONNECT_TIMEOUT' ? 'timeout' : 'offline')
  }

  /** Answer with one of the edge's own pages (or cut the response if it has begun). */
  private answer (refused: EdgePage, extra: Record<string, string> = {}): void {
    const { req, res } = this
    const page = this.control ? controlPage(refused) : refused
    if (this.control) extra = { ...extra, 'strict-transport-security': CONTROL_HSTS }
    this.failure ??= page
    this.proxy.errors?.inc(page)
    if (res.headersSent) { this.status = this.status || 502; this.cutByEdge = true; res.destroy(); return }
    this.status = pageStatus(page)
    const body = renderPage(page, { host: this.hostHeader, requestId: this.requestId })
    // HTTP/1: a body we will not read makes the connection unusable for the next request.
    if (req.httpVersionMajor < 2 && !req.complete) extra = { ...extra, connection: 'close' }
    try {
      res.writeHead(this.status, { ...pageHeaders(body, this.requestId), ...extra })
      if (req.method === 'HEAD') res.end()
      else res.end(body)
    } catch {
      this.cutByEdge = true
      res.destroy()
    }
    // Unread request bodies are discarded (HTTP/1 keeps the connection only if it can drain).
    if (!req.readableEnded) req.resume()
  }

  /** The client's response closed (finished or cut): stop the upstream side, free the slot, log. */
  private closed (): void {
    const { req, res, proxy } = this
    // The client left before the whole response was sent: nginx's 499, not the origin's status.
    const cancelled = !res.writableFinished && !this.cutByEdge
    this.disarm()
    proxy.uploads?.unwatch(this)
    if (!this.upstreamComplete && this.slot) this.abort(new Error('client closed'))
    if (this.slot) proxy.pool.release(this.route!, this.client)
    this.slot = false
    const upstreamStatus = this.status
    if (cancelled) this.status = 499
    proxy.requests?.inc(`${Math.floor(this.status / 100)}xx`)
    const durationMs = performance.now() - this.started
    proxy.recordTraffic(this.route, {
      startedAt: this.startedAt, method: req.method, target: req.url, status: this.status, bytesIn: this.bytesIn, bytesOut: this.bytesOut, durationMs, client: this.clientIp,
    })
    if (!proxy.logger.isLevelEnabled('info')) return
    proxy.logger.info({
      reqId: this.requestId,
      method: req.method,
      host: this.hostHeader,
      path: (req.url ?? '').split('?', 1)[0],
      status: this.status,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      durationMs: Math.round(durationMs),
      instanceId: this.route?.instanceId,
      client: this.clientIp,
      proto: req.httpVersionMajor >= 2 ? 'h2' : 'http/1.1',
      ...(this.target !== undefined ? { relay: this.target.gateway.id } : {}),
      ...(proxy.relayed ? { relayed: true } : {}),
      ...(this.failure !== undefined && !cancelled ? { error: this.failure } : {}),
      ...(cancelled ? { cancelled: true, ...(upstreamStatus !== 0 ? { upstreamStatus } : {}) } : {}),
      ...(!res.writableFinished && !cancelled ? { aborted: true } : {}),
    }, 'request')
  }
}

function noop (): void {}

/** A relayed request keeps the id its first gateway gave it (one id across the fleet's logs). */
function relayedRequestId (req: EdgeRequest): string {
  const id = req.headers['x-request-id']
  return typeof id === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(id) ? id : nextRequestId()
}

/** The page for a refused slot: the instance is full (503) or this client holds its share (429). */
function refusalPage (grant: Exclude<SlotGrant, 'granted'>): EdgePage {
  return grant === 'client-full' ? 'client-busy' : 'busy'
}

function watchdogFired (exchange: Exchange): void {
  exchange.checkDeadline()
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
