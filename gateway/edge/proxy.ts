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
 * Upgrade requests (WebSocket) are relayed as raw byte pipes after the origin's 101. One ordinary
 * request is an Exchange (exchange.ts).
 */
import http from 'node:http'
import type tls from 'node:tls'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { Metrics, CounterFamily } from '../metrics.ts'
import type { Route, RouteTable } from './routes.ts'
import { EdgeTimeout, type UpstreamPool } from './upstream.ts'
import { plainIp, publicAuthority, relayedClientIp, relayedRequestHeaders, upstreamRequestHeaders, withoutHopByHop } from './headers.ts'
import type { RelayClient, RelayTarget } from './relay.ts'
import { passthroughClient } from './passthrough.ts'
import { clientKey, UploadProgressWatch } from './limits.ts'
import { controlPage, pageHeaders, pageStatus, renderPage, type EdgePage } from './pages.ts'
import type { TrafficRecorder } from './traffic.ts'
import { CONTROL_HSTS, errorText, Exchange, nextRequestId, refusalPage, relayedRequestId, type EdgeRequest, type EdgeResponse } from './exchange.ts'

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

function rawHead (status: number, reason: string, fields: Iterable<[string, string]>): string {
  let head = `HTTP/1.1 ${status} ${reason.replace(/[\r\n]/g, '')}\r\n`
  for (const [name, value] of fields) head += `${name}: ${value}\r\n`
  return head + '\r\n'
}
