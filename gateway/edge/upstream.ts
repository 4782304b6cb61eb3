/**
 * Upstream connections: how the edge reaches an instance (UpstreamConnector: the netstack's TCP
 * connect to tunnelIp:port in production, net.connect in tests) and a keep-alive pool per
 * instance with a cap on concurrent connections.
 */
import http from 'node:http'
import net from 'node:net'
import type { Duplex } from 'node:stream'
import type { Route } from './routes.ts'

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
  /** Cap per instance when the route has none (default 256). */
  defaultMaxConnections?: number
  /** Idle keep-alive connections kept per instance (default 32). */
  maxFreeSockets?: number
  /**
   * How long an idle pooled connection is kept (default 30 s): below the origin's keep-alive
   * timeout, so we rarely write to a connection the origin is closing.
   */
  freeSocketTimeoutMs?: number
}

interface PoolEntry {
  key: string
  agent: http.Agent
}

/** Key of an upstream: a changed tunnel address or port means a new pool. */
function upstreamKey (route: Route): string {
  return `${route.instanceId}\u0000${route.tunnelIp}:${route.port}`
}

export class UpstreamPool {
  private readonly connector: UpstreamConnector
  private readonly defaultMaxConnections: number
  private readonly maxFreeSockets: number
  private readonly freeSocketTimeoutMs: number
  private readonly entries = new Map<string, PoolEntry>()
  private readonly active = new Map<string, number>()

  constructor (options: UpstreamPoolOptions) {
    this.connector = options.connector
    this.defaultMaxConnections = options.defaultMaxConnections ?? 256
    this.maxFreeSockets = options.maxFreeSockets ?? 32
    this.freeSocketTimeoutMs = options.freeSocketTimeoutMs ?? 30_000
  }

  capacity (route: Route): number {
    return route.maxConnections ?? this.defaultMaxConnections
  }

  /**
   * Take one of the instance's connection slots; false when all are in use (the caller answers
   * 503). Every true must be matched by one release().
   */
  tryAcquire (route: Route): boolean {
    const n = this.active.get(route.instanceId) ?? 0
    if (n >= this.capacity(route)) return false
    this.active.set(route.instanceId, n + 1)
    return true
  }

  release (route: Route): void {
    const n = (this.active.get(route.instanceId) ?? 0) - 1
    if (n <= 0) this.active.delete(route.instanceId)
    else this.active.set(route.instanceId, n)
  }

  activeConnections (instanceId: string): number {
    return this.active.get(instanceId) ?? 0
  }

  totalActive (): number {
    let n = 0
    for (const v of this.active.values()) n += v
    return n
  }

  /** The keep-alive agent for the route's upstream (maxSockets = the instance's cap). */
  agentFor (route: Route): http.Agent {
    const key = upstreamKey(route)
    let entry = this.entries.get(key)
    if (entry === undefined) {
      const agent = new http.Agent({
        keepAlive: true,
        maxSockets: this.capacity(route),
        maxFreeSockets: Math.min(this.maxFreeSockets, this.capacity(route)),
        timeout: this.freeSocketTimeoutMs,
        scheduling: 'lifo', // reuse the warmest connection; idle ones age out
        // No TLS upstream: without this, every request has http.Agent derive a TLS server name
        // from its Host header and test it with net.isIP (two regular expressions per request).
        servername: '',
      } as http.AgentOptions)
      const connector = this.connector
      // http.Agent calls createConnection(options, oncreate); returning the socket is enough.
      ;(agent as unknown as { createConnection: (o: net.NetConnectOpts) => Duplex }).createConnection =
        () => connector.createConnection(route, { host: route.tunnelIp, port: route.port })
      entry = { key, agent }
      this.entries.set(key, entry)
    }
    return entry.agent
  }

  /**
   * Forget pools whose upstream is no longer routed: their idle connections close now, requests in
   * flight finish on the connections they have.
   */
  retain (routes: readonly Route[]): void {
    const keep = new Set(routes.map(upstreamKey))
    for (const [key, entry] of this.entries) {
      if (keep.has(key)) continue
      this.entries.delete(key)
      destroyFreeSockets(entry.agent)
    }
  }

  /** Close every pooled connection (in-flight ones included). */
  destroy (): void {
    for (const entry of this.entries.values()) entry.agent.destroy()
    this.entries.clear()
  }
}

function destroyFreeSockets (agent: http.Agent): void {
  for (const list of Object.values(agent.freeSockets)) {
    for (const socket of list ?? []) socket.destroy()
  }
}
