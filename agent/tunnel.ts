/**
 * What the agent needs from a tunnel, whichever way it is built (userspace.ts: our WireGuard
 * device and TCP stack; kernel.ts: wg-quick / wireguard-go and the kernel's TCP). Both are
 * configured from a TunnelPlan, which only tunnel-config.ts makes from the API's answer.
 */
import { lookup } from 'node:dns/promises'
import { planGateways, type GatewayPlan, type GatewayRole, type TunnelPlan } from './tunnel-config.ts'

export { checkGatewayList, checkPlan, checkRegistration, planFromConfig, planGateways, planWithGateways, TunnelConfigError, type GatewayPlan, type TunnelPlan } from './tunnel-config.ts'

export type TunnelMode = 'userspace' | 'kernel'

export interface TunnelHealth {
  /** Wall-clock ms of the latest completed handshake, or null. */
  lastHandshakeAt: number | null
  /** Wall-clock ms when something authenticated last arrived from the gateway, or null. */
  lastReceiveAt: number | null
  /** The resolved endpoint in use, `address:port`. */
  endpoint: string | null
  rxBytes: number
  txBytes: number
}

/** One gateway's side of the tunnel. */
export interface GatewayHealth extends TunnelHealth {
  gatewayId: string | null
  role: GatewayRole
  region: string | null
  publicKey: string
  /** The gateway's tunnel address. */
  gatewayAddress: string
  /** The endpoint as configured, `host:port`. */
  configuredEndpoint: string
  /** What carries the tunnel now: UDP, or WireGuard over TLS to the gateway's HTTPS port. */
  transport: 'udp' | 'tls'
}

export interface Tunnel {
  readonly mode: TunnelMode
  /**
   * Brings the tunnel up, or reconfigures it in place: connections survive when the address
   * stays, gateways that stay in the plan are not touched, new ones are added, vanished ones removed.
   */
  apply (plan: TunnelPlan): Promise<void>
  /**
   * After a network change or a silent gateway: resolve the endpoint again, take a new source
   * socket where the mode allows, and start a fresh handshake. With `gatewayPublicKey`, only that
   * gateway's peer (the others' sessions stay as they are).
   */
  reconnect (gatewayPublicKey?: string): Promise<void>
  /**
   * One round trip (ICMP echo) to `gatewayAddress`, or, without it, to every gateway: the first
   * answer counts. ms, or null on timeout.
   */
  probe (timeoutMs: number, gatewayAddress?: string): Promise<number | null>
  /** The whole tunnel: the latest handshake and receive of any gateway, the primary's endpoint, bytes summed. */
  health (): TunnelHealth
  /** Each gateway in the plan, primary first. */
  gateways (): GatewayHealth[]
  close (): Promise<void>
}

/** A mode that cannot run on this system (kernel mode without tools or privileges). */
export class TunnelUnavailableError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'TunnelUnavailableError'
  }
}

/** Resolves an endpoint host, IPv4 first (the gateway's UDP listener is usually IPv4). */
export async function resolveEndpoint (host: string): Promise<{ address: string, family: 4 | 6 }> {
  const all = await lookup(host, { all: true })
  const pick = all.find(a => a.family === 4) ?? all.find(a => a.family === 6)
  if (pick === undefined) throw new Error(`${host} has no address`)
  return { address: pick.address, family: pick.family as 4 | 6 }
}

export function samePlan (a: TunnelPlan | null, b: TunnelPlan): boolean {
  if (a === null || a.address !== b.address) return false
  const before = planGateways(a)
  const after = planGateways(b)
  return before.length === after.length && before.every((g, i) => sameGateway(g, after[i]))
}

export function sameGateway (a: GatewayPlan, b: GatewayPlan): boolean {
  return a.peerPublicKey === b.peerPublicKey && a.allowedIps === b.allowedIps && a.endpointHost === b.endpointHost &&
    a.endpointPort === b.endpointPort && a.persistentKeepalive === b.persistentKeepalive && a.gatewayId === b.gatewayId &&
    a.role === b.role && a.region === b.region
}

/** Aggregates per-gateway health into the tunnel's: up through any gateway. */
export function combinedHealth (gateways: GatewayHealth[]): TunnelHealth {
  const latest = (values: Array<number | null>): number | null => values.reduce<number | null>((m, v) => v !== null && (m === null || v > m) ? v : m, null)
  return {
    lastHandshakeAt: latest(gateways.map(g => g.lastHandshakeAt)),
    lastReceiveAt: latest(gateways.map(g => g.lastReceiveAt)),
    endpoint: gateways[0]?.endpoint ?? null,
    rxBytes: gateways.reduce((n, g) => n + g.rxBytes, 0),
    txBytes: gateways.reduce((n, g) => n + g.txBytes, 0),
  }
}
