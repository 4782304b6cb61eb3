/**
 * The control <-> gateway contract: what a gateway asks for (the configuration snapshot), what it
 * tells control about itself (hello) and what it observes (reports). Types and constants only.
 *
 *   gateway -> control  GET  /internal/v1/config?since=VERSION&gateway=ID
 *                                                                 long-poll: ConfigSnapshot or 204
 *   gateway -> control  POST /internal/v1/hello                   GatewayHello -> HelloReply
 *   gateway -> control  POST /internal/v1/reports                 GatewayReport -> ReportReply
 *   gateway -> control  POST /internal/v1/certificates/{get,put,delete,list,lock,unlock}
 *                                                                 the shared certificate store
 *
 * Every request carries `Authorization: Bearer <gateway secret>`. Times are RFC 3339 UTC strings.
 * `cloud-connect start` runs both sides in one process through the same ControlPlane interface.
 */

/** Bumped on any incompatible change; a hello with another value is refused (409). */
export const RPC_PROTOCOL_VERSION = 1

export const RPC_PATHS = {
  config: '/internal/v1/config',
  hello: '/internal/v1/hello',
  reports: '/internal/v1/reports',
  certificateGet: '/internal/v1/certificates/get',
  certificatePut: '/internal/v1/certificates/put',
  certificateDelete: '/internal/v1/certificates/delete',
  certificateList: '/internal/v1/certificates/list',
  certificateLock: '/internal/v1/certificates/lock',
  certificateUnlock: '/internal/v1/certificates/unlock',
} as const

/** How long control holds a `config` request open when nothing changed (default). */
export const DEFAULT_WATCH_WAIT_MS = 30_000
/** How often a gateway reports (default; the hello reply may ask for another interval). */
export const DEFAULT_REPORT_INTERVAL_MS = 5_000

// Limits: a message past these is refused rather than processed.
export const MAX_PEERS = 100_000
/** Gateways in one fleet. */
export const MAX_FLEET_GATEWAYS = 256
export const MAX_HOSTNAMES_PER_PEER = 64
export const MAX_CERTIFICATES = 200_000
export const MAX_ID_LENGTH = 128
export const MAX_CERTIFICATE_PEM_BYTES = 64 * 1024
export const MAX_PRIVATE_KEY_PEM_BYTES = 16 * 1024
/** A lock holder: `<gateway id>/<per-process random id>`. */
export const MAX_HOLDER_LENGTH = 200
/** Lock lifetimes control accepts (ms). */
export const MIN_LOCK_TTL_MS = 100
export const MAX_LOCK_TTL_MS = 86_400_000
/** Instance-hours of traffic in one report (gateway/edge/traffic.ts keeps at most this many). */
export const MAX_USAGE_BUCKETS = 10_000
/** Access-log entries in one report (the gateway's buffer holds at most this many). */
export const MAX_ACCESS_LOG_ENTRIES = 10_000
/** A logged path is cut to this many characters. */
export const MAX_ACCESS_LOG_PATH = 1024

/** The gateway's own settings as control sees them. */
export interface SnapshotGateway {
  /** The gateway's tunnel address (IPv4, no prefix): the first host of the tunnel pool. */
  address: string
  /** UDP port WireGuard listens on. */
  listenPort: number
  /** The gateway public key control hands to containers, when known. */
  publicKey?: string
  /** host:port containers send WireGuard to, when known. */
  endpoint?: string
  /** Control's CC_BASE_DOMAIN: the edge routes app.<baseDomain> and api.<baseDomain> to control. */
  baseDomain?: string
}

/** One WireGuard peer and the hostnames routed to it. */
export interface SnapshotPeer {
  /** Control's instance id; for a static config file, a stable local name. */
  instanceId: string
  /** WireGuard public key, canonical base64 (`wg pubkey`). */
  publicKey: string
  /** The peer's tunnel address: allowed IPs are `tunnelIp/32` and the upstream host. */
  tunnelIp: string
  /** Lower-case hostnames whose HTTP(S) requests go to this peer. */
  hostnames: string[]
  /** Upstream TCP port behind the tunnel (Erugo's Caddy: 80). */
  port: number
  // Static-config extras (control never sends these; a config file may).
  /** Allowed IPs when more than `tunnelIp/32` (CIDR strings). */
  allowedIPs?: string[]
  /** Where to reach the peer before it sends anything (address:port). */
  endpoint?: string
  /** Seconds; 0 = off. */
  persistentKeepalive?: number
  presharedKey?: string
}

/** Another gateway of the fleet, as the relay client reaches it (gateway/edge relay). */
export interface FleetGateway {
  /** Its CC_GATEWAY_ID. */
  id: string
  /** `https://host:port` of its relay listener. */
  relayUrl: string
  /** Lower-case hex SHA-256 of its relay certificate (DER): pinned, and the client certificate it presents. */
  relayFingerprint: string
  region?: string | null
}

/**
 * A routed instance and the gateways that hold a live session with it (a WireGuard handshake within
 * the session window), freshest first. Any gateway can serve `hostnames`: directly when it holds a
 * session itself, else relayed to one of `gateways`.
 */
export interface SnapshotRoute {
  instanceId: string
  hostnames: string[]
  gateways: string[]
}

/**
 * The full desired state; `version` changes whenever the peer set, their hostnames, the fleet or
 * the routes change. With `?gateway=ID` control answers for that gateway: its own tunnel address,
 * only the peers placed on it, and the fleet and routes. Without it (one gateway, old gateways):
 * every peer, and no fleet or routes.
 */
export interface ConfigSnapshot {
  version: number
  gateway: SnapshotGateway
  peers: SnapshotPeer[]
  /** The fleet's live gateways (fresh reports) with a relay listener, this one included. */
  fleet?: FleetGateway[]
  /** Every instance with at least one routed hostname. */
  routes?: SnapshotRoute[]
}

/** A gateway introduces itself (at start and after every reconnect). */
export interface GatewayHello {
  protocol: number
  /** Stable name of this gateway (unique in a fleet). */
  gatewayId: string
  /** Its WireGuard public key: what containers must be told. */
  publicKey: string
  /** Public host:port containers reach it on; null when the gateway does not know it. */
  endpoint: string | null
  /** The UDP port it is bound to. */
  listenPort: number
  /** Software version, for the operator. */
  software?: string
  /** CC_GATEWAY_REGION: placement prefers a container's own region. */
  region?: string | null
  /** `https://host:port` of its relay listener (CC_RELAY_URL, or CC_GATEWAY_ENDPOINT's host and CC_RELAY_PORT); null: none. */
  relayUrl?: string | null
  /** Lower-case hex SHA-256 of its relay certificate (DER); null when it has no relay listener. */
  relayFingerprint?: string | null
}

export interface HelloReply {
  protocol: number
  gatewayId: string
  /** How often control wants reports. */
  reportIntervalMs: number
  /** Control's current configuration version. */
  configVersion: number
}

/** What the gateway sees of one peer. */
export interface PeerReport {
  publicKey: string
  instanceId?: string
  /** Last completed WireGuard handshake, or null if none since the gateway started. */
  lastHandshakeAt: string | null
  /** Last time data arrived from the peer, when known. */
  lastRxAt?: string | null
  /** The peer's current UDP endpoint (roams), or null. */
  endpoint: string | null
  rxBytes: number
  txBytes: number
}

export type CertificateState = 'pending' | 'active' | 'failing'

/** What the gateway's certificate manager knows of one hostname. */
export interface CertificateReport {
  hostname: string
  state: CertificateState
  notAfter?: string
  lastError?: string
  nextRetryAt?: string
}

/**
 * Edge traffic of one instance in one hour since the last accepted report (to be added to what
 * control holds). A request counts in the hour it began; bytes are request and response bodies.
 */
export interface UsageReport {
  instanceId: string
  /** Start of the hour (RFC 3339, minutes and seconds zero). */
  hour: string
  bytesIn: number
  bytesOut: number
  requests: number
}

/** One request the edge answered for an instance. Never the query string, never headers. */
export interface AccessLogReport {
  instanceId: string
  /** When the request began. */
  at: string
  method: string
  /** The request target's path, without the query (at most MAX_ACCESS_LOG_PATH characters). */
  path: string
  /** 0: the client went away before any status was sent. */
  status: number
  bytesIn: number
  bytesOut: number
  durationMs: number
  /** The client's address as the edge saw it (control truncates it before storing). */
  client: string
}

export interface GatewayReport {
  protocol: number
  gatewayId: string
  sentAt: string
  /** True when every peer is listed; false when only peers that changed since the last report are. */
  full: boolean
  peers: PeerReport[]
  certificates: CertificateReport[]
  // Optional (no protocol bump): an older gateway sends none, an older control drops them.
  usage?: UsageReport[]
  accessLog?: AccessLogReport[]
  /** Access-log entries the gateway's buffer dropped (oldest first) since the last accepted report. */
  accessLogDropped?: number
}

export interface ReportReply {
  /** Peers that matched a registered instance. */
  peers: number
  certificates: number
}

/**
 * The one interface a gateway uses to talk to its control plane: an HTTP client
 * (gateway/control/http-client.ts), the static file adapter, or control itself in-process
 * (`cloud-connect start`). Failures reject with RpcError.
 */
export interface ControlPlane {
  /**
   * The snapshot when `since` is null or differs from control's version (at once); otherwise waits
   * for a change and resolves with the new snapshot, or with null when the wait ends (timeout or
   * `signal` aborted) with nothing new.
   */
  watch (since: number | null, signal?: AbortSignal): Promise<ConfigSnapshot | null>
  hello (hello: GatewayHello): Promise<HelloReply>
  report (report: GatewayReport): Promise<ReportReply>
}

// The shared certificate store (gateway/edge/cert-store.ts CertStore, kept by control for a fleet).
// Added without a protocol bump: a control that lacks it answers NOT_FOUND.

/** One stored certificate (names: a hostname, `*.<domain>` or a reserved `.invalid` name). */
export interface StoredCertificate {
  name: string
  /** PEM chain, leaf first. */
  certificatePem: string
  /** PEM private key of the leaf (encrypted at rest by control; plain on the authenticated wire). */
  privateKeyPem: string
  issuer: string
  /** When control stored it (RFC 3339); set by control, ignored in a put. */
  updatedAt?: string
}

export interface CertificateNameRequest { name: string }
export interface CertificateGetReply { certificate: StoredCertificate | null }
export interface CertificatePutRequest { certificate: StoredCertificate }
export interface CertificatePutReply { stored: true }
export interface CertificateDeleteReply { deleted: boolean }
export interface CertificateListReply { names: string[] }

/**
 * Take the named lock for `holder` for `ttlMs` when it is free, expired, or already held by
 * `holder` (then its expiry is extended: a retried request cannot lock its own sender out).
 */
export interface CertificateLockRequest { name: string, holder: string, ttlMs: number }
export interface CertificateLockReply {
  acquired: boolean
  /** When the lock expires: ours when acquired, else the current holder's. */
  expiresAt: string
}
export interface CertificateUnlockRequest { name: string, holder: string }
export interface CertificateUnlockReply { released: boolean }

/**
 * The certificate store and issuance locks control keeps for a fleet of gateways: implemented by
 * the HTTP client and, in-process (`cloud-connect start`), by control's RpcService. Failures reject
 * with RpcError.
 */
export interface CertificateStorePlane {
  getCertificate (name: string): Promise<StoredCertificate | null>
  putCertificate (certificate: StoredCertificate): Promise<void>
  deleteCertificate (name: string): Promise<boolean>
  listCertificates (): Promise<string[]>
  lockCertificate (request: CertificateLockRequest): Promise<CertificateLockReply>
  unlockCertificate (request: CertificateUnlockRequest): Promise<boolean>
}

