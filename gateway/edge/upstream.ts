/**
 * Upstream connections: how the edge reaches an instance (UpstreamConnector: the netstack's TCP
 * connect to tunnelIp:port in production, net.connect in tests) and a keep-alive pool per
 * instance with a cap on concurrent connections.
 *
 * Requests and upgrades (WebSocket) go through an undici Pool per upstream (its HTTP/1.1 client
 * costs about half of http.request's CPU per exchange, see the README's design notes); an upgraded
 * connection leaves the pool, which opens another when it needs one.
 */
import net from 'node:net'
import type { Duplex } from 'node:stream'
import { Pool, type Dispatcher } from 'undici'
import type { Route } from './routes.ts'

/** Why an upstream exchange was cut short by us. */
export class EdgeTimeout extends Error {
  readonly code: 'CONNECT_TIMEOUT' | 'UPSTREAM_TIMEOUT' | 'IDLE_TIMEOUT'
  constructor (code: EdgeTimeout['code']) {
    super(code.toLowerCase().replace('_', ' '))
    this.code = code
  }
}

export interface UpstreamConnectOptions {
  host: string
  port: number
}

export interface UpstreamConnector {
  /**
   * A new connection to the route's upstream, returned at once (node's net.connect style): writes
   * before it is connected are queued, failures arrive as 'error' with a node code (ECONNREFUSED,
   * ETIMEDOUT, EHOSTUNREACH, ...). It may also throw when the peer cannot be reached at all (no
   * WireGuard session): the edge answers 502 either way.
   */
  createConnection (route: Route, options: UpstreamConnectOptions): Duplex
}

/** Plain kernel TCP: for tests, benchmarks and origins outside the tunnel. */
export const netConnector: UpstreamConnector = {
  createConnection: (_route, options) => net.connect({ host: options.host, port: options.port, noDelay: true }),
}

export interface UpstreamPoolOptions {
  connector: UpstreamConnector
  /** How control's route (Route.control) is reached (default netConnector: kernel TCP). */
  controlConnector?: UpstreamConnector
  /** Cap per instance when the route has none (default 256). */
  defaultMaxConnections?: number
  /**
   * How long an idle pooled connection is kept (default 30 s): below the origin's keep-alive
   * timeout, so we rarely write to a connection the origin is closing.
   */
  freeSocketTimeoutMs?: number
  /** A connection not up within this fails its request with EdgeTimeout CONNECT_TIMEOUT (default 15 s). */
  connectTimeoutMs?: number
  /** Share of an instance's slots one client address may hold (default 1: no per-client cap). */
  clientSlotShare?: number
}

/** A client address may always hold this many of an instance's slots (or all, if it has fewer). */
export const MIN_CLIENT_SLOTS = 8

/** tryAcquire's answer: a slot, or which cap said no. */
export type SlotGrant = 'granted' | 'instance-full' | 'client-full'

/** Key of an upstream: a changed tunnel address or port means a new pool. */
function upstreamKey (route: Route): string {
  return `${route.instanceId}\u0000${route.tunnelIp}:${route.port}`
}

export class UpstreamPool {
  private readonly connector: UpstreamConnector
  private readonly controlConnector: UpstreamConnector
  private readonly defaultMaxConnections: number
  private readonly freeSocketTimeoutMs: number
  private readonly connectTimeoutMs: number
  private readonly pools = new Map<string, Pool>()
  private readonly active = new Map<string, number>()
  private readonly clientSlotShare: number
  /** Slots held per instance and client address (key: instanceId NUL client). */
  private readonly activeByClient = new Map<string, number>()

  constructor (options: UpstreamPoolOptions) {
    this.connector = options.connector
    this.controlConnector = options.controlConnector ?? netConnector
    this.defaultMaxConnections = options.defaultMaxConnections ?? 256
    this.freeSocketTimeoutMs = options.freeSocketTimeoutMs ?? 30_000
    this.connectTimeoutMs = options.connectTimeoutMs ?? 15_000
    this.clientSlotShare = options.clientSlotShare ?? 1
  }

  capacity (route: Route): number {
    return route.maxConnections ?? this.defaultMaxConnections
  }

  /**
   * Slots one client address may hold at once on the route's instance: its share, but never fewer
   * than MIN_CLIENT_SLOTS (a browser opens several requests at once), nor more than the instance has.
   */
  clientCapacity (route: Route): number {
    const capacity = this.capacity(route)
    return Math.max(Math.floor(capacity * this.clientSlotShare), Math.min(capacity, MIN_CLIENT_SLOTS))
  }

  /**
   * Take one of the instance's connection slots for `client` (a limits.ts clientKey). Refused when
   * all are in use, or when this client already holds its share (the caller answers 503 or 429).
   * Every 'granted' must be matched by one release() with the same client.
   */
  tryAcquire (route: Route, client: string): SlotGrant {
    const n = this.active.get(route.instanceId) ?? 0
    const key = `${route.instanceId}\u0000${client}`
    const mine = this.activeByClient.get(key) ?? 0
    // Control's route is counted (close() waits for it) but not capped: control has its own
    // rate limits, and the per-client connection cap still applies at the listener.
    if (route.control !== true) {
      if (n >= this.capacity(route)) return 'instance-full'
      if (mine >= this.clientCapacity(route)) return 'client-full'
    }
    this.active.set(route.instanceId, n + 1)
    this.activeByClient.set(key, mine + 1)
    return 'granted'
  }

  release (route: Route, client: string): void {
    const n = (this.active.get(route.instanceId) ?? 0) - 1
    if (n <= 0) this.active.delete(route.instanceId)
    else this.active.set(route.instanceId, n)
    const key = `${route.instanceId}\u0000${client}`
    const mine = (this.activeByClient.get(key) ?? 0) - 1
    if (mine <= 0) this.activeByClient.delete(key)
    else this.activeByClient.set(key, mine)
  }

  /** Slots `client` holds on the instance. */
  clientConnections (instanceId: string, client: string): number {
    return this.activeByClient.get(`${instanceId}\u0000${client}`) ?? 0
  }

  activeConnections (instanceId: string): number {
    return this.active.get(instanceId) ?? 0
  }

  totalActive (): number {
    let n = 0
    for (const v of this.active.values()) n += v
    return n
  }

  /** A new connection to the route's upstream, handed over once connected (or failed, or timed out). */
  private connect (route: Route, callback: (err: Error | null, socket: Duplex | null) => void): void {
    let socket: Duplex
    try {
      const connector = route.control === true ? this.controlConnector : this.connector
      socket = connector.createConnection(route, { host: route.tunnelIp, port: route.port })
    } catch (err) {
      callback(err instanceof Error ? err : new Error(String(err)), null)
      return
    }
    if ((socket as net.Socket).connecting !== true) { callback(null, socket); return }
    const done = (err: Error | null): void => {
      clearTimeout(timer)
      socket.off('connect', onConnect)
      socket.off('error', done)
      if (err === null) { callback(null, socket); return }
      socket.on('error', () => {}) // nothing listens to this socket any more
      socket.destroy()
      callback(err, null)
    }
    const onConnect = (): void => { done(null) }
    const timer = setTimeout(() => { done(new EdgeTimeout('CONNECT_TIMEOUT')) }, this.connectTimeoutMs)
    socket.once('connect', onConnect)
    socket.once('error', done)
  }

  /** The dispatcher (undici Pool, one connection per exchange in flight) for the route's upstream. */
  dispatcherFor (route: Route): Dispatcher {
    const key = upstreamKey(route)
    let pool = this.pools.get(key)
    if (pool === undefined) {
      const host = net.isIPv6(route.tunnelIp) ? `[${route.tunnelIp}]` : route.tunnelIp
      pool = new Pool(`http://${host}:${route.port}`, {
        // Control's route has no slot cap: undici must not queue its requests behind one either.
        connections: route.control === true ? null : this.capacity(route),
        pipelining: 1,
        // Idle connections are kept this long, or less when the origin's Keep-Alive says so.
        keepAliveTimeout: this.freeSocketTimeoutMs,
        keepAliveMaxTimeout: this.freeSocketTimeoutMs,
        // The proxy runs its own first-byte and idle timers (they count upload time differently).
        headersTimeout: 0,
        bodyTimeout: 0,
        connect: (_options, callback) => { this.connect(route, callback as (err: Error | null, socket: Duplex | null) => void) },
      })
      this.pools.set(key, pool)
    }
    return pool
  }

  /**
   * Forget pools whose upstream is no longer routed: their idle connections close now, requests in
   * flight finish on the connections they have.
   */
  retain (routes: readonly Route[]): void {
    const keep = new Set(routes.map(upstreamKey))
    for (const [key, pool] of this.pools) {
      if (keep.has(key)) continue
      this.pools.delete(key)
      pool.close().catch(() => {})
    }
  }

  /** Close every pooled connection (in-flight ones included). */
  destroy (): void {
    for (const pool of this.pools.values()) pool.destroy().catch(() => {})
    this.pools.clear()
  }
}
