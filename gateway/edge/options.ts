/** The edge's options and defaults (the Edge of index.ts takes them). */
import type net from 'node:net'
import type { Logger } from 'pino'
import type { Metrics } from '../metrics.ts'
import type { Route } from './routes.ts'
import type { UpstreamConnector } from './upstream.ts'
import type { ChallengeResponder } from './http-listener.ts'
import type { CertStore } from './cert-store.ts'
import type { Issuer } from './issuer.ts'
import type { EdgeLimits } from './limits.ts'
import type { RelayIdentity } from './relay-identity.ts'
import type { StreamHandler } from './wg-over-tls.ts'
import { TLS_WRITE_MAX } from './tls-writes.ts'

export interface ListenAddress {
  host?: string
  port?: number
}

export interface EdgeOptions {
  dataDir: string
  logger: Logger
  connector: UpstreamConnector
  /** How control's route is reached (default netConnector: kernel TCP). */
  controlConnector?: UpstreamConnector
  metrics?: Metrics
  https?: ListenAddress
  http?: ListenAddress | false
  publicHttpsPort?: number
  issuer?: Issuer
  certStore?: CertStore
  wildcards?: string[]
  challenges?: ChallengeResponder
  /** ACME TLS-ALPN-01 (acme/tls-alpn.ts): put in front of the HTTPS listener's connections. */
  tlsAlpnChallenges?: { attach (server: net.Server): void }
  http2?: boolean
  /**
   * Largest write handed to a client's TLS socket (HTTP/1.1; tls-writes.ts), below 16 KiB: an idle
   * connection then keeps a 16 KiB output block after a download instead of one the size of its
   * largest write (the proxy's 64 KiB pieces: 82 KB). Default 16,000; 0: node's own writes.
   */
  tlsWriteMax?: number
  idleTimeoutMs?: number
  upstreamTimeoutMs?: number
  connectTimeoutMs?: number
  headersTimeoutMs?: number
  keepAliveTimeoutMs?: number
  maxHeaderSize?: number
  defaultMaxConnections?: number
  /** Per-client fairness limits; each absent field takes EDGE_LIMIT_DEFAULTS'. */
  limits?: Partial<EdgeLimits>
  /** How often node checks headersTimeout on open connections (default 5 s; node's own is 30 s). */
  connectionsCheckingIntervalMs?: number
  now?: () => number
  /**
   * Fleet relay (relay.ts): the listener other gateways relay to, this gateway's identity, and
   * whether a route's local peer has a live session (else requests are relayed when a gateway of
   * the fleet has one). Absent: no relay either way.
   */
  relay?: {
    listen: ListenAddress
    identity: RelayIdentity
    sessionLive: (route: Route) => boolean
    /**
     * How a client connection for an instance whose session another gateway holds goes there:
     * 'stream' (default): its TLS ends here and the plaintext is piped to the holder, whose edge
     * serves it; 'passthrough': its raw TLS is piped to the holder, which ends it; 'request': its
     * TLS ends here and each request is relayed over HTTP. The first two need every gateway to
     * hold the certificates of every name (the fleet's shared certificate store).
     */
    mode?: RelayMode
  }
  /**
   * WireGuard over TLS (wg-over-tls.ts): connections that negotiate the ALPN protocol
   * `cc-wireguard/1`, and HTTP/1.1 upgrades on the control route's reserved path, go here as
   * streams of framed WireGuard messages. Absent: neither is accepted.
   */
  wireguardStreams?: StreamHandler
}

export const RELAY_MODES = ['stream', 'passthrough', 'request'] as const
export type RelayMode = typeof RELAY_MODES[number]

export const EDGE_DEFAULTS = {
  tlsWriteMax: TLS_WRITE_MAX,
  idleTimeoutMs: 300_000,
  upstreamTimeoutMs: 120_000,
  connectTimeoutMs: 15_000,
  headersTimeoutMs: 60_000,
  keepAliveTimeoutMs: 30_000,
  maxHeaderSize: 16_384,
  defaultMaxConnections: 256,
  connectionsCheckingIntervalMs: 5_000,
  /** HTTP/2 receive windows: per stream, and per connection (the most one client can have in flight to us). */
  h2StreamWindow: 1 << 20,
  h2ConnectionWindow: 2 << 20,
  /**
   * The same for a client's HTTP/2 piped from another gateway (relay stream mode): the relay hop
   * adds its round trip to every window update, and an upload moves at most a window per round
   * trip (RFC 9113 6.9; 1 MiB held relayed uploads at 18-21 MB/s in the fleet bench).
   */
  relayedH2StreamWindow: 4 << 20,
  relayedH2ConnectionWindow: 8 << 20,
  /**
   * The most bytes a relayed connection's pipe holds unsent toward either side before it stops
   * reading the other (stream and passthrough mode). Node's pipe() stops at 16 KiB, one TLS
   * record: every record then pauses and resumes the reading side.
   */
  relayPipeBuffer: 256 << 10,
} as const

/**
 * TLS 1.2 suites: ECDHE with AEAD only (AES-GCM, ChaCha20-Poly1305; RFC 9325 4.2), for ECDSA and
 * RSA certificates. No CBC (padding-oracle and Lucky13 history), no static RSA key exchange (no
 * forward secrecy). TLS 1.3's suites are all AEAD.
 */
export const TLS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256', 'TLS_AES_256_GCM_SHA384', 'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256', 'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384', 'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305', 'ECDHE-RSA-CHACHA20-POLY1305',
].join(':')
