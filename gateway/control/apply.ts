/**
 * From a configuration snapshot to what the gateway runs: WireGuard peers (allowed IPs =
 * `tunnelIp/32` unless a static config says otherwise) and the edge's route table. Pure: the
 * Gateway applies the plan (reloadPeers keeps the sessions of unchanged peers).
 *
 * A peer the gateway cannot take safely is dropped, with a reason, and the rest still applies:
 * its own key, a key twice, bad key text, an address that covers the gateway's own or overlaps an
 * earlier peer's (cryptokey routing must stay unambiguous, paper 2). A hostname claimed twice
 * stays with the first peer.
 */
import { decodeKey } from '../../proto/noise/keys.ts'
import type { ConfigSnapshot, SnapshotPeer, SnapshotRoute } from '../../proto/rpc/index.ts'
import { anyPrefixesOverlap, formatIPv4, parseIPv4Address, parseIPv4Prefix, prefixContains, type IPv4Prefix } from '../../proto/wire/ipv4.ts'
import { parseEndpoint, type PeerConfig } from '../config/schema.ts'

/** One routed instance (the shape gateway/edge's RouteMap takes). */
export interface Route {
  instanceId: string
  tunnelIp: string
  port: number
  hostnames: string[]
  /** Fleet: gateways holding a live session with the instance, freshest first. */
  relayVia?: string[]
  /** Fleet: no peer here; reachable only through the relay (tunnelIp ''). */
  remote?: true
}

/** One array for every peer without hostnames (frozen: a push throws instead of giving all of them one). */
export const NO_HOSTNAMES = Object.freeze([]) as unknown as string[]

export interface RejectedPeer {
  instanceId: string
  publicKey: string
  reason: 'own_key' | 'duplicate_key' | 'bad_key' | 'bad_address' | 'covers_gateway' | 'overlapping_address'
}

export interface SnapshotPlan {
  peers: PeerConfig[]
  routes: Route[]
  rejected: RejectedPeer[]
  /** Hostnames dropped because an earlier peer claimed them. */
  duplicateHostnames: string[]
  /** Public key (base64) -> instance id, for reports. */
  instanceIds: Map<string, string>
}

export interface GatewayIdentity {
  publicKey: Buffer
  /** Tunnel address as a 32-bit number. */
  address: number
}

export function planSnapshot (snapshot: ConfigSnapshot, self: GatewayIdentity): SnapshotPlan {
  const plan: SnapshotPlan = { peers: [], routes: [], rejected: [], duplicateHostnames: [], instanceIds: new Map() }
  const ownKey = self.publicKey.toString('base64')
  const owned: IPv4Prefix[] = []
  const hostnames = new Set<string>()
  // The pairwise overlap check (O(n²), 0.4 s at 10,000 peers) only when a sort says one is possible.
  const mayOverlap = anyPrefixesOverlap(snapshot.peers.flatMap(p => {
    try { return (p.allowedIPs ?? [`${p.tunnelIp}/32`]).map(text => parseIPv4Prefix(text)) } catch { return [] }
  }))
  for (const p of snapshot.peers) {
    const reject = (reason: RejectedPeer['reason']): void => { plan.rejected.push({ instanceId: p.instanceId, publicKey: p.publicKey, reason }) }
    if (p.publicKey === ownKey) { reject('own_key'); continue }
    if (plan.instanceIds.has(p.publicKey)) { reject('duplicate_key'); continue }
    let publicKey: Buffer
    try {
      publicKey = decodeKey(p.publicKey)
    } catch {
      reject('bad_key')
      continue
    }
    let allowedIPs: IPv4Prefix[]
    try {
      parseIPv4Address(p.tunnelIp)
      allowedIPs = (p.allowedIPs ?? [`${p.tunnelIp}/32`]).map(text => parseIPv4Prefix(text))
    } catch {
      reject('bad_address')
      continue
    }
    if (allowedIPs.some(prefix => prefixContains(prefix, self.address))) { reject('covers_gateway'); continue }
    if (mayOverlap) {
      if (allowedIPs.some(prefix => owned.some(other => overlaps(prefix, other)))) { reject('overlapping_address'); continue }
      owned.push(...allowedIPs)
    }
    plan.instanceIds.set(p.publicKey, p.instanceId)
    plan.peers.push({
      publicKey,
      presharedKey: p.presharedKey === undefined ? null : decodeKey(p.presharedKey),
      allowedIPs,
      endpoint: endpointOf(p),
      persistentKeepalive: p.persistentKeepalive ?? 0,
    })
    const routed: string[] = []
    for (const h of p.hostnames) {
      if (hostnames.has(h)) { plan.duplicateHostnames.push(h); continue }
      hostnames.add(h)
      routed.push(h)
    }
    plan.routes.push({ instanceId: p.instanceId, tunnelIp: p.tunnelIp, port: p.port, hostnames: routed.length === 0 ? NO_HOSTNAMES : routed })
  }
  return plan
}

/**
 * The edge's routes in a fleet: each local route with the gateways the snapshot's routes name for
 * its instance, then a relay-only route for every instance with no peer here (its hostnames not
 * already routed locally). Without snapshot routes: the local routes unchanged.
 */
export function withFleetRoutes (local: readonly Route[], fleetRoutes: readonly SnapshotRoute[] | undefined): Route[] {
  if (fleetRoutes === undefined || fleetRoutes.length === 0) return [...local]
  const byInstance = new Map(fleetRoutes.map(r => [r.instanceId, r]))
  const routed = new Set<string>()
  const out: Route[] = local.map(r => {
    for (const h of r.hostnames) routed.add(h)
    const fleet = byInstance.get(r.instanceId)
    return fleet === undefined ? r : { ...r, relayVia: fleet.gateways }
  })
  const localIds = new Set(local.map(r => r.instanceId))
  for (const r of fleetRoutes) {
    if (localIds.has(r.instanceId)) continue
    const hostnames = r.hostnames.filter(h => !routed.has(h))
    if (hostnames.length === 0) continue
    for (const h of hostnames) routed.add(h)
    out.push({ instanceId: r.instanceId, tunnelIp: '', port: 0, hostnames, relayVia: r.gateways, remote: true })
  }
  return out
}

function endpointOf (p: SnapshotPeer): PeerConfig['endpoint'] {
  if (p.endpoint === undefined) return null
  try {
    return parseEndpoint(p.endpoint)
  } catch {
    return null // a DNS name: the peer's first packet teaches us its endpoint (roaming, paper 2.1)
  }
}

function overlaps (a: IPv4Prefix, b: IPv4Prefix): boolean {
  const shorter = a.prefixLength <= b.prefixLength ? a : b
  const longer = shorter === a ? b : a
  return prefixContains(shorter, longer.network)
}

/** For logs: "10.100.0.2/32". */
export function formatPrefix (p: IPv4Prefix): string {
  return `${formatIPv4(p.network)}/${p.prefixLength}`
}
