/**
 * The reverse proxy: Host -> route -> upstream over the instance's keep-alive pool, bodies
 * streamed both ways with backpressure (the request body read as undici sends it, the response
 * written to the client with undici paused while the client's buffer is full; nothing buffers a
 * whole body, nothing caps its size). Timers, by phase, one watchdog per exchange:
 *   connect       connectTimeoutMs until the upstream connection is up (the pool) -> 502
 *   first byte    upstreamTimeoutMs from the end of the request body to the
 *                 response headers (time-to-first-byte only)                      -> 504
 *   everything    idleTimeoutMs without a body byte (or a byte of an upgraded
 *                 connection) in either direction ends the exchange; total time never does
 * Upgrade requests (WebSocket) take the same path, pool and timers up to the origin's answer, then
 * are relayed as raw byte pipes after its 101. One request is a RequestExchange (exchange.ts), one
 * upgrade an UpgradeExchange (upgrade.ts); both are an Exchange.
 */
import type http from 'node:http'
import type tls from 'node:tls'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { Metrics, CounterFamily } from '../metrics.ts'
import type { Route, RouteTable } from './routes.ts'
import type { UpstreamPool } from './upstream.ts'
import { plainIp, relayedClientIp } from './headers.ts'
import type { RelayClient, RelayTarget } from './relay.ts'
import { passthroughClient } from './passthrough.ts'
import { UploadProgressWatch } from './limits.ts'
import type { EdgePage } from './pages.ts'
import type { TrafficRecorder } from './traffic.ts'
import { RequestExchange, type EdgeRequest, type EdgeResponse } from './exchange.ts'
import { UpgradeExchange } from './upgrade.ts'

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

  /** Where a finished request of `route` is recorded: its instance's usage and access log (not control's, not relayed ones). */
  trafficOf (route: Route | undefined): TrafficRecorder | undefined {
    return route === undefined || route.control === true ? undefined : this.traffic
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
    new RequestExchange(this, req, res).start()
  }

  /** The 'upgrade' handler of the HTTPS server: WebSocket and other HTTP/1.1 upgrades. */
  readonly handleUpgrade = (req: http.IncomingMessage, socket: Duplex, head: Buffer): void => {
    new UpgradeExchange(this, req, socket, head).start()
  }
}
