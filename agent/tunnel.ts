/**
 * What the agent needs from a tunnel, whichever way it is built (userspace.ts: our WireGuard
 * device and TCP stack; kernel.ts: wg-quick / wireguard-go and the kernel's TCP). Both are
 * configured from a TunnelPlan, which only tunnel-config.ts makes from the API's answer.
 */
import { lookup } from 'node:dns/promises'
import type { TunnelPlan } from './tunnel-config.ts'

export { checkPlan, checkRegistration, planFromConfig, TunnelConfigError, type TunnelPlan } from './tunnel-config.ts'

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

export interface Tunnel {
  readonly mode: TunnelMode
  /** Brings the tunnel up, or reconfigures it in place (connections survive when the address stays). */
  apply (plan: TunnelPlan): Promise<void>
  /**
   * After a network change or a silent gateway: resolve the endpoint again, take a new source
   * socket where the mode allows, and start a fresh handshake.
   */
  reconnect (): Promise<void>
  /** One round trip to the gateway's tunnel address (ICMP echo); ms, or null on timeout. */
  probe (timeoutMs: number): Promise<number | null>
  health (): TunnelHealth
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
  return a !== null && a.address === b.address && a.peerPublicKey === b.peerPublicKey && a.allowedIps === b.allowedIps &&
    a.endpointHost === b.endpointHost && a.endpointPort === b.endpointPort && a.persistentKeepalive === b.persistentKeepalive
}
