/** Request and response bodies of the spec's "Instance Authenticated Endpoints": /v1/tunnel/*. */
import type { InstanceStatus, SuspendedReason } from './instances.ts'

/** Seconds between heartbeats the server asks for. */
export const HEARTBEAT_INTERVAL_SECONDS = 60
/** WireGuard persistent keepalive the server asks for: keeps NAT mappings open (wg(8) suggests 25). */
export const PERSISTENT_KEEPALIVE_SECONDS = 25

/** A region name: a gateway's CC_GATEWAY_REGION, a container's CC_AGENT_REGION. */
export const REGION_NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/

export interface RegisterTunnelRequest {
  /** The container's WireGuard public key: 44 characters of canonical base64 (`wg pubkey`). */
  public_key: string
  /**
   * Where the container runs (REGION_NAME), when it says: its first placement prefers gateways of
   * that region, and so does a re-placement. Null or absent: no preference, as before.
   */
  region?: string | null
}

/** One gateway as a container's WireGuard peer. */
export interface TunnelPeer {
  public_key: string
  endpoint: string
  /** The gateway's own tunnel address `/32` only (see WireGuardCredentials.allowed_ips). */
  allowed_ips: string
  persistent_keepalive: number
}

/** A fleet gateway placed for this instance: `primary` first, then `backup`. */
export interface TunnelFleetPeer extends TunnelPeer {
  gateway_id: string
  role: 'primary' | 'backup'
  region: string | null
}

export interface TunnelConfig {
  interface: {
    /** `<tunnel_ip>/32`: the same address on every gateway. */
    address: string
  }
  /** The primary gateway (the spec's field; equal to `peers[0]` without the fleet fields). */
  peer: TunnelPeer
  /**
   * Every gateway placed for the instance, primary first: a container keeps a tunnel to each
   * (userspace: one WireGuard peer per gateway; wg-quick: one [Peer] per gateway). Absent from
   * control planes older than the fleet: then `peer` is the only gateway.
   */
  peers?: TunnelFleetPeer[]
}

export interface RegisterTunnelResponse {
  status: 'registered'
  tunnel_config: TunnelConfig
  domains: {
    /** The full domain, e.g. `myfiles.erugo.cloud`. */
    subdomain: string
    custom_domains: string[]
  }
}

export interface HeartbeatRequest {
  timestamp: string
}

export interface HeartbeatResponse {
  status: 'ok'
  next_heartbeat_in: number
  /**
   * The gateways placed for the instance now (as `tunnel_config.peers`): after a gateway is lost
   * and the instance re-placed, the container adds and removes peers from here without registering
   * again.
   */
  peers?: TunnelFleetPeer[]
}

export interface DisconnectResponse {
  status: 'disconnected'
}

/**
 * The subdomain as gateways serve it: `active` while a key is registered and the instance is not
 * suspended; `pending` before registration and after a token regeneration (the old key is gone
 * until the container registers again); `suspended` over the plan limit.
 */
export type DomainStatus = 'active' | 'pending' | 'suspended'

export interface TunnelStatusResponse {
  tunnel_status: InstanceStatus
  suspended_reason: SuspendedReason | null
  domains: {
    subdomain: { domain: string, status: DomainStatus }
    custom_domains: Array<{ domain: string, status: string, ssl_status: string }>
  }
}
