/**
 * The route table: which instance serves a hostname. Filled from the control plane's snapshot
 * (peers with their hostnames) and swapped whole on every update, so a request sees either the
 * old table or the new one, never a mix.
 */

export interface Route {
  instanceId: string
  /** The peer's tunnel address (upstream host). */
  tunnelIp: string
  /** Upstream TCP port on the peer (Erugo's Caddy listens on 80). */
  port: number
  /** Public hostnames of the instance, any case; normalised on update. */
  hostnames: string[]
  /** Cap on concurrent upstream connections to this instance (the edge default when absent). */
  maxConnections?: number
  /**
   * Control's own route (controlRoute): reached over ordinary TCP, not the tunnel, without the
   * per-instance slot limits, answered with HSTS. `tunnelIp` '' means its origin is not configured.
   */
  control?: true
  /**
   * Fleet: gateways holding a live session with the instance, freshest first (snapshot routes).
   * Without a live local session the edge relays to the first of them in the fleet.
   */
  relayVia?: readonly string[]
  /** Fleet: no local peer; reachable only through the relay (tunnelIp is ''). */
  remote?: true
}

/** The reserved names of the base domain served by control: the dashboard and the API. */
export const CONTROL_LABELS = ['app', 'api'] as const
/** Never a valid instance id (proto/rpc ids are [A-Za-z0-9._:-]). */
export const CONTROL_ROUTE_ID = '#control'

/**
 * The route of `app.<baseDomain>` and `api.<baseDomain>` to control's API listener at `origin`
 * (null: not configured; requests get a 503 page).
 */
export function controlRoute (baseDomain: string, origin: { host: string, port: number } | null): Route {
  return {
    instanceId: CONTROL_ROUTE_ID,
    tunnelIp: origin?.host ?? '',
    port: origin?.port ?? 0,
    hostnames: CONTROL_LABELS.map(label => `${label}.${baseDomain}`),
    control: true,
  }
}

export interface RouteTable {
  /** The route for a Host header or SNI name (any case, port and trailing dot allowed). */
  lookup (host: string): Route | undefined
}

const HOSTNAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/

/**
 * Canonical form of a Host header or SNI value: lower case, no port, no trailing dot (RFC 9110
 * 4.2.3: host comparison is case-insensitive; a trailing dot names the same absolute name).
 * Returns '' for anything that is not a DNS hostname (IP literals included: they never route).
 */
export function normalizeHost (host: string | undefined): string {
  if (host === undefined) return ''
  let h = host.trim().toLowerCase()
  if (h.startsWith('[')) return '' // IPv6 literal
  const colon = h.lastIndexOf(':')
  if (colon !== -1) {
    if (!/^\d{1,5}$/.test(h.slice(colon + 1))) return ''
    h = h.slice(0, colon)
  }
  if (h.endsWith('.')) h = h.slice(0, -1)
  return HOSTNAME.test(h) ? h : ''
}

/** An in-memory RouteTable whose contents are replaced atomically by updateRoutes(). */
export class RouteMap implements RouteTable {
  private byHost = new Map<string, Route>()
  private list: readonly Route[] = []

  constructor (routes: Route[] = []) {
    this.updateRoutes(routes)
  }

  /**
   * Replace every route at once. Hostnames are normalised; a hostname claimed by two routes stays
   * with the first (the control plane should never send that; returned so the caller can log it).
   */
  updateRoutes (routes: Route[]): { conflicts: string[], invalid: string[] } {
    const byHost = new Map<string, Route>()
    const list: Route[] = []
    const conflicts: string[] = []
    const invalid: string[] = []
    for (const r of routes) {
      const hostnames: string[] = []
      for (const raw of r.hostnames) {
        const h = normalizeHost(raw)
        if (h === '' || h !== raw.toLowerCase().replace(/\.$/, '')) { invalid.push(raw); continue }
        if (byHost.has(h)) { conflicts.push(h); continue }
        hostnames.push(h)
      }
      // Object.assign, not a spread: frozen spread copies of routes applied again got a hidden class
      // each (V8, ~190 bytes per route); these share one.
      const route: Route = Object.freeze(Object.assign({}, r, { hostnames: Object.freeze(hostnames) as string[] }))
      for (const h of hostnames) byHost.set(h, route)
      list.push(route)
    }
    this.byHost = byHost
    this.list = Object.freeze(list)
    return { conflicts, invalid }
  }

  lookup (host: string): Route | undefined {
    const h = normalizeHost(host)
    return h === '' ? undefined : this.byHost.get(h)
  }

  routes (): readonly Route[] {
    return this.list
  }

  hostnames (): string[] {
    return [...this.byHost.keys()]
  }
}
