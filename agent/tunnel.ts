/**
 * What the agent needs from a tunnel, whichever way it is built (userspace.ts: our WireGuard
 * device and TCP stack; kernel.ts: wg-quick / wireguard-go and the kernel's TCP), and the checked
 * form of the API's `tunnel_config` both are configured from.
 */
import { lookup } from 'node:dns/promises'
import { decodeKey } from '../proto/noise/keys.ts'
import { formatIPv4, parseIPv4Prefix } from '../proto/wire/ipv4.ts'
import type { TunnelConfig } from '../proto/api/tunnel.ts'

export type TunnelMode = 'userspace' | 'kernel'

export interface TunnelPlan {
  /** Our tunnel address, e.g. 10.100.0.42. */
  address: string
  /** `interface.address` as given, e.g. 10.100.0.42/32. */
  addressCidr: string
  /** The gateway's own tunnel address: the target of probes. */
  gatewayAddress: string
  /** What the tunnel routes (`peer.allowed_ips`). */
  allowedIps: string
  /** The gateway's WireGuard public key, base64. */
  peerPublicKey: string
  endpointHost: string
  endpointPort: number
  /** Seconds (0 = off). */
  persistentKeepalive: number
}

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

export class TunnelConfigError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'TunnelConfigError'
  }
}

/** A mode that cannot run on this system (kernel mode without tools or privileges). */
export class TunnelUnavailableError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'TunnelUnavailableError'
  }
}

/** Checks the API's tunnel_config; throws TunnelConfigError naming the bad field. */
export function planFromConfig (config: TunnelConfig): TunnelPlan {
  const field = (name: string, ok: boolean): void => {
    if (!ok) throw new TunnelConfigError(`the API's tunnel_config has an unusable ${name}`)
  }
  field('interface.address', typeof config?.interface?.address === 'string')
  const [addressText, lengthText] = config.interface.address.split('/')
  let address: string
  try {
    address = formatIPv4(parseIPv4Prefix(`${addressText}/32`).network)
  } catch {
    throw new TunnelConfigError('the API\'s tunnel_config has an unusable interface.address')
  }
  field('interface.address', lengthText === undefined || /^\d{1,2}$/.test(lengthText))
  const peer = config.peer
  field('peer', typeof peer === 'object' && peer !== null)
  field('peer.public_key', typeof peer.public_key === 'string')
  try {
    decodeKey(peer.public_key)
  } catch {
    throw new TunnelConfigError('the API\'s tunnel_config has an unusable peer.public_key')
  }
  field('peer.allowed_ips', typeof peer.allowed_ips === 'string')
  let gatewayAddress: string
  try {
    const prefix = parseIPv4Prefix(peer.allowed_ips.split(',')[0].trim())
    // A /32 is the gateway itself; in a wider range the gateway is by convention its first host.
    gatewayAddress = formatIPv4(prefix.prefixLength >= 31 ? prefix.network : (prefix.network + 1) >>> 0)
  } catch {
    throw new TunnelConfigError('the API\'s tunnel_config has an unusable peer.allowed_ips')
  }
  field('peer.endpoint', typeof peer.endpoint === 'string')
  const endpoint = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(peer.endpoint)
  field('peer.endpoint', endpoint !== null && Number(endpoint[3]) > 0 && Number(endpoint[3]) < 65536)
  const keepalive = peer.persistent_keepalive ?? 0
  field('peer.persistent_keepalive', Number.isInteger(keepalive) && keepalive >= 0 && keepalive <= 65535)
  return {
    address,
    addressCidr: config.interface.address,
    gatewayAddress,
    allowedIps: peer.allowed_ips,
    peerPublicKey: peer.public_key,
    endpointHost: endpoint![1] ?? endpoint![2],
    endpointPort: Number(endpoint![3]),
    persistentKeepalive: keepalive,
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
