/** Request and response bodies of the spec's "Instance Management Endpoints" and "Subdomain Endpoints". */

/**
 * `pending` until the container registers its WireGuard key and a gateway sees its first handshake;
 * then `connected` while a gateway reports a recent handshake, else `disconnected`. `suspended`
 * whatever the tunnel does while the instance is over its owner's plan limit (not routed).
 */
export type InstanceStatus = 'pending' | 'connected' | 'disconnected' | 'suspended'

/** Why an instance is suspended; null when it is not. `plan_limit`: over the owner's instance limit. */
export type SuspendedReason = 'plan_limit'

/** An item of GET /instances. */
export interface InstanceSummary {
  id: string
  name: string
  subdomain: string
  custom_domain: string | null
  status: InstanceStatus
  suspended_reason: SuspendedReason | null
  tunnel_ip: string
  /** Last sign of life of the tunnel (handshake or data seen by a gateway); null before the first. */
  last_seen: string | null
  created_at: string
}

export interface ListInstancesResponse {
  instances: InstanceSummary[]
}

/** Which alerts the owner gets for an instance. */
export interface InstanceAlerts {
  /** A mail when the instance has been offline for CC_ALERT_OFFLINE_AFTER, and one when it is back. */
  offline: boolean
}

/** GET /instances/{instance_id}. */
export interface InstanceDetails extends InstanceSummary {
  full_domain: string
  alerts: InstanceAlerts
}

export interface CreateInstanceRequest {
  name: string
  subdomain: string
}

export interface WireGuardCredentials {
  server_public_key: string
  /** host:port of the gateway's WireGuard listener. */
  server_endpoint: string
  /** `<tunnel_ip>/32`. */
  client_ip: string
  /**
   * Only the gateway's own tunnel address (`/32`). The spec's example shows the whole /24; a peer
   * configured with that would route other customers' addresses into its tunnel.
   */
  allowed_ips: string
}

export interface CreateInstanceResponse {
  instance: {
    id: string
    name: string
    subdomain: string
    full_domain: string
    status: InstanceStatus
    tunnel_ip: string
    created_at: string
  }
  credentials: {
    /** Shown once (the server keeps only its id): regenerate it if lost. */
    instance_token: string
    wireguard: WireGuardCredentials
  }
}

export interface UpdateInstanceRequest {
  name?: string
  subdomain?: string
  alerts?: Partial<InstanceAlerts>
}

export interface UpdateInstanceResponse {
  id: string
  name: string
  subdomain: string
  full_domain: string
  alerts: InstanceAlerts
}

export interface RegenerateTokenResponse {
  instance_token: string
}

/** One hour of an instance's edge traffic (bytes are request and response bodies). */
export interface UsageBucket {
  /** Start of the hour, RFC 3339 UTC. */
  hour: string
  bytes_in: number
  bytes_out: number
  requests: number
}

/** GET /instances/{instance_id}/usage?from=&to= : hours with traffic, oldest first, and their sums. */
export interface InstanceUsageResponse {
  instance_id: string
  /** The range asked for (from inclusive, to exclusive), as the server read it. */
  from: string
  to: string
  buckets: UsageBucket[]
  totals: { bytes_in: number, bytes_out: number, requests: number }
}

/** One request the edge answered for the instance. Never the query string or headers. */
export interface AccessLogEntry {
  /** When the request began (RFC 3339 UTC, milliseconds). */
  at: string
  method: string
  /** The path without the query string. */
  path: string
  /** 0: the client left before a status was sent. */
  status: number
  bytes_in: number
  bytes_out: number
  duration_ms: number
  /** The client's address, truncated to its /24 (IPv4) or /48 (IPv6) unless the operator keeps full addresses. */
  client: string | null
}

/** GET /instances/{instance_id}/access-log?limit=&cursor= : newest first. */
export interface AccessLogResponse {
  entries: AccessLogEntry[]
  /** Pass as `cursor` for the next (older) page; null on the last page. */
  next_cursor: string | null
}

/** GET /subdomains/check?subdomain=... */
export interface SubdomainCheckResponse {
  subdomain: string
  available: boolean
  /** Present when not available: labels that are free right now. */
  suggestions?: string[]
}

/** `details` of SUBDOMAIN_TAKEN (409). */
export interface SubdomainTakenDetails {
  subdomain: string
  suggestions: string[]
}

/** `details` of LIMIT_EXCEEDED (403) for instances. */
export interface InstanceLimitDetails {
  resource: 'instances'
  limit: number
  plan: string
}
