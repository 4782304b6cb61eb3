/** Request and response bodies of the spec's "Instance Authenticated Endpoints": /v1/tunnel/*. */
import type { InstanceStatus, SuspendedReason } from './instances.ts'

/** Seconds between heartbeats the server asks for. */
export const HEARTBEAT_INTERVAL_SECONDS = 60
/** WireGuard persistent keepalive the server asks for: keeps NAT mappings open (wg(8) suggests 25). */
export const PERSISTENT_KEEPALIVE_SECONDS = 25

export interface RegisterTunnelRequest {
  /** The container's WireGuard public key: 44 characters of canonical base64 (`wg pubkey`). */
  public_key: string
}

export interface TunnelConfig {
  interface: {
    /** `<tunnel_ip>/32`. */
    address: string
  }
  peer: {
    public_key: string
    endpoint: string
    /** The gateway's own tunnel address `/32` only (see WireGuardCredentials.allowed_ips). */
    allowed_ips: string
    persistent_keepalive: number
  }
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
