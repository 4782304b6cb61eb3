/**
 * The relay between gateways of a fleet: a gateway without a live session with an instance sends
 * the request to one that has it, over mutually authenticated TLS (both ends pin the SHA-256
 * fingerprints control lists in the snapshot's `fleet`; no CA is involved).
 *
 *   RelayFleet     the current fleet (from each snapshot) and which gateway a route relays to
 *   RelayClient    per fleet gateway: an undici Pool (requests and upgrades) whose connections
 *                  are TLS 1.3 with our certificate, the server's fingerprint pinned
 *   RelayListener  the TLS listener (CC_RELAY_PORT): client certificate required and looked up in
 *                  the fleet, then by ALPN: HTTP/1.1 or HTTP/2 served by a ReverseProxy in relayed
 *                  mode (into the local tunnel only, forwarding headers passed through), or a whole
 *                  client connection after its preamble (passthrough.ts: stream or passthrough)
 *
 * Edge routing (fleet design): a local peer with a live session -> direct; else the first gateway
 * of the route's `relayVia` that is in the fleet (not this one) -> relay; else direct (today's
 * path and its error pages).
 */
import http from 'node:http'
import http2 from 'node:http2'
import net from 'node:net'
import tls from 'node:tls'
import type { Duplex } from 'node:stream'
import { Pool, type Dispatcher } from 'undici'
import type { Logger } from 'pino'
import type { FleetGateway } from '../../proto/rpc/index.ts'
import { plainAddress } from '../../proto/net/address.ts'
import type { CounterFamily, Metrics } from '../metrics.ts'
import { certificateFingerprint, type RelayIdentity } from './relay-identity.ts'
import type { Route } from './routes.ts'
import { EdgeTimeout } from './upstream.ts'
import { PASSTHROUGH_ALPN, PreambleMissing, STREAM_ALPN, markPassthrough, readPreamble, type Preamble } from './passthrough.ts'

/** A relay connection refused by us: the peer's certificate is not the one the fleet pins. */
export class RelayError extends Error {
  readonly code: 'RELAY_FINGERPRINT_MISMATCH' | 'RELAY_NO_CERTIFICATE'
  constructor (code: RelayError['code'], message: string) {
    super(message)
    this.name = 'RelayError'
    this.code = code
  }
}

/** Both ends are ours: TLS 1.3 only (RFC 8446), client certificates in the main handshake. */
const RELAY_TLS_VERSION = 'TLSv1.3'

/** The fingerprint of the certificate the other end presented ('' when none). */
function peerFingerprint (socket: tls.TLSSocket): string {
  const certificate = socket.getPeerX509Certificate()
  return certificate === undefined ? '' : certificateFingerprint(certificate.raw)
}

export class RelayFleet {
  readonly identity: RelayIdentity
  #byId = new Map<string, FleetGateway>()
  #fingerprints = new Set<string>()
  #others = false

  constructor (identity: RelayIdentity) {
    this.identity = identity
  }

  /** Replaces the fleet (each snapshot). */
  update (fleet: readonly FleetGateway[]): void {
    this.#byId = new Map(fleet.map(g => [g.id, g]))
    this.#fingerprints = new Set(fleet.map(g => g.relayFingerprint))
    this.#others = fleet.some(g => g.relayFingerprint !== this.identity.fingerprint)
  }

  /** The fleet has a gateway other than this one (else nothing is ever relayed). */
  get hasOthers (): boolean {
    return this.#others
  }

  gateways (): FleetGateway[] {
    return [...this.#byId.values()]
  }

  /** A client certificate the relay listener accepts: one of the fleet's. */
  admits (fingerprint: string): boolean {
    return fingerprint !== '' && this.#fingerprints.has(fingerprint)
  }

  /** The first of `gatewayIds` in the fleet that is not this gateway (known by its fingerprint). */
  pick (gatewayIds: readonly string[]): FleetGateway | null {
    for (const id of gatewayIds) {
      const g = this.#byId.get(id)
      if (g !== undefined && g.relayFingerprint !== this.identity.fingerprint) return g
    }
    return null
  }
}

/** Where a relayed request goes: the gateway and its connections. */
export interface RelayTarget {
  gateway: FleetGateway
  dispatcher: Dispatcher
}

export interface RelayClientOptions {
  fleet: RelayFleet
  /** The local peer of a route has a live WireGuard session (a handshake within REJECT_AFTER_TIME). */
  sessionLive: (route: Route) => boolean
  connectTimeoutMs: number
  /** How long an idle relay connection is kept (default 30 s). */
  keepAliveMs?: number
  /**
   * After a failed connect, how long a gateway is passed over while another holds the session
   * (default 5 s): a gateway that died is skipped at once, before control's sweep drops it from
   * the routes.
   */
  unreachableMs?: number
  now?: () => number
}

interface RelayEntry extends RelayTarget {
  key: string
}

function entryKey (g: FleetGateway): string {
  return `${g.id}\u0000${g.relayUrl}\u0000${g.relayFingerprint}`
}

export class RelayClient {
  readonly fleet: RelayFleet
  readonly #o: RelayClientOptions
  readonly #entries = new Map<string, RelayEntry>()
  /** Gateway id -> until when it is passed over (its last connect failed). */
  readonly #unreachable = new Map<string, number>()

  constructor (options: RelayClientOptions) {
    this.fleet = options.fleet
    this.#o = options
  }

  /** Gateways currently passed over after a failed connect (ids). */
  get unreachable (): string[] {
    const now = this.#now()
    return [...this.#unreachable].filter(([, until]) => until > now).map(([id]) => id)
  }

  #now (): number {
    return (this.#o.now ?? Date.now)()
  }

  /** Where a request for `route` goes: null = direct (into the local tunnel, or its error page). */
  targetFor (route: Route): RelayTarget | null {
    if (route.control === true) return null
    if (route.remote !== true && this.#o.sessionLive(route)) return null
    const holders = route.relayVia ?? []
    const now = this.#now()
    const reachable = holders.filter(id => (this.#unreachable.get(id) ?? 0) <= now)
    // Every holder failed lately: try them anyway (one may be back) rather than answer at once.
    const gateway = this.fleet.pick(reachable) ?? this.fleet.pick(holders)
    return gateway === null ? null : this.#entryFor(gateway)
  }

  /** A relay connection to `gateway` (ALPN `alpn`); a failed connect passes the gateway over for a while. */
  connect (gateway: FleetGateway, alpn: string, callback: (err: Error | null, socket: tls.TLSSocket | null) => void): void {
    connectPinned(gateway, this.fleet.identity, this.#o.connectTimeoutMs, (err, socket) => {
      if (err !== null) this.#unreachable.set(gateway.id, this.#now() + (this.#o.unreachableMs ?? 5_000))
      else this.#unreachable.delete(gateway.id)
      callback(err, socket)
    }, alpn)
  }

  #entryFor (gateway: FleetGateway): RelayEntry {
    const key = entryKey(gateway)
    let entry = this.#entries.get(key)
    if (entry !== undefined) return entry
    const connect = (callback: (err: Error | null, socket: Duplex | null) => void): void => {
      this.connect(gateway, 'http/1.1', callback)
    }
    const keepAliveMs = this.#o.keepAliveMs ?? 30_000
    const dispatcher = new Pool(new URL(gateway.relayUrl).origin, {
      // The instance's slot caps apply before a request gets here; none again per relay.
      connections: null,
      pipelining: 1,
      keepAliveTimeout: keepAliveMs,
      keepAliveMaxTimeout: keepAliveMs,
      // The proxy runs its own first-byte and idle timers.
      headersTimeout: 0,
      bodyTimeout: 0,
      connect: (_options, callback) => { connect(callback as (err: Error | null, socket: Duplex | null) => void) },
    })
    entry = { key, gateway, dispatcher }
    this.#entries.set(key, entry)
    return entry
  }

  /** Closes the connections to gateways that left the fleet (or changed address or certificate). */
  retain (): void {
    const keep = new Set(this.fleet.gateways().map(entryKey))
    for (const [key, entry] of this.#entries) {
      if (keep.has(key)) continue
      this.#entries.delete(key)
      entry.dispatcher.close().catch(() => {})
    }
  }

  destroy (): void {
    for (const entry of this.#entries.values()) entry.dispatcher.destroy().catch(() => {})
    this.#entries.clear()
  }
}

/**
 * A TLS connection to `gateway`'s relay listener presenting our certificate, handed over only once
 * the server's certificate has the pinned fingerprint (nothing is written before that).
 */
export function connectPinned (gateway: FleetGateway, identity: RelayIdentity, timeoutMs: number, callback: (err: Error | null, socket: tls.TLSSocket | null) => void, alpn = 'http/1.1'): void {
  const url = new URL(gateway.relayUrl)
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname
  const socket = tls.connect({
    host,
    port: Number(url.port),
    ...(net.isIP(host) === 0 ? { servername: host } : {}),
    key: identity.privateKeyPem,
    cert: identity.certificatePem,
    // The chain is not checked (self-signed); the fingerprint below is the authentication.
    rejectUnauthorized: false,
    minVersion: RELAY_TLS_VERSION,
    ALPNProtocols: [alpn],
  })
  socket.setNoDelay(true)
  let settled = false
  const done = (err: Error | null): void => {
    if (settled) return
    settled = true
    clearTimeout(timer)
    socket.off('secureConnect', onSecure)
    socket.off('error', done)
    if (err === null) { callback(null, socket); return }
    socket.on('error', () => {})
    socket.destroy()
    callback(err, null)
  }
  const onSecure = (): void => {
    const presented = peerFingerprint(socket)
    if (presented !== gateway.relayFingerprint) {
      done(new RelayError('RELAY_FINGERPRINT_MISMATCH', `relay ${gateway.id} at ${gateway.relayUrl} presented certificate ${presented || '(none)'}, expected ${gateway.relayFingerprint}`))
      return
    }
    done(null)
  }
  const timer = setTimeout(() => { done(new EdgeTimeout('CONNECT_TIMEOUT')) }, timeoutMs)
  socket.once('secureConnect', onSecure)
  socket.once('error', done)
}

export interface RelayListenerOptions {
  fleet: RelayFleet
  /** Serves admitted requests (a ReverseProxy in relayed mode). */
  handleRequest: (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void
  handleUpgrade: (req: http.IncomingMessage, socket: Duplex, head: Buffer) => void
  /** A client's raw TLS passed through by another gateway (passthrough.ts), its preamble read and the socket marked. */
  handlePassthrough?: (socket: tls.TLSSocket) => void
  /**
   * A client's decrypted HTTP/1.1 or HTTP/2 another gateway pipes to us (its TLS ended there), the
   * preamble read (with `alpn` and `servername`), the bytes after it unread and the socket marked.
   */
  handleStream?: (socket: tls.TLSSocket, preamble: Preamble) => void
  logger: Logger
  metrics?: Metrics
  /** No byte either way for this long closes a connection (the proxy's own idle deadline acts first). */
  idleTimeoutMs: number
  handshakeTimeoutMs: number
  headersTimeoutMs: number
  keepAliveTimeoutMs: number
  maxHeaderSize: number
  maxConcurrentStreams: number
  h2StreamWindow: number
}

export class RelayListener {
  readonly #o: RelayListenerOptions
  readonly #tls: tls.Server
  readonly #http1: http.Server
  readonly #http2: http2.Http2Server
  readonly #sockets = new Set<tls.TLSSocket>()
  readonly #refused: CounterFamily | undefined

  constructor (options: RelayListenerOptions) {
    this.#o = options
    const identity = options.fleet.identity
    this.#refused = options.metrics?.family('relay_refused', 'Relay connections refused: TLS handshakes, client certificates not in the fleet, malformed or late preambles')
    this.#tls = tls.createServer({
      key: identity.privateKeyPem,
      cert: identity.certificatePem,
      // Required, but checked against the fleet's fingerprints below, not against a CA.
      requestCert: true,
      rejectUnauthorized: false,
      minVersion: RELAY_TLS_VERSION,
      ALPNProtocols: [
        ...(options.handleStream === undefined ? [] : [STREAM_ALPN]),
        ...(options.handlePassthrough === undefined ? [] : [PASSTHROUGH_ALPN]),
        'h2', 'http/1.1',
      ],
      handshakeTimeout: options.handshakeTimeoutMs,
    })
    this.#http1 = http.createServer({
      maxHeaderSize: options.maxHeaderSize,
      requestTimeout: 0, // never a total-time limit: idle time alone ends transfers
      headersTimeout: options.headersTimeoutMs,
      keepAliveTimeout: options.keepAliveTimeoutMs,
    })
    this.#http2 = http2.createServer({
      settings: { maxConcurrentStreams: options.maxConcurrentStreams, maxHeaderListSize: options.maxHeaderSize, initialWindowSize: options.h2StreamWindow },
    })
    for (const server of [this.#http1, this.#http2]) {
      server.setTimeout(options.idleTimeoutMs + 1_000)
      server.on('request', options.handleRequest)
    }
    this.#http1.on('upgrade', options.handleUpgrade)
    this.#http1.on('clientError', (err: Error, socket: Duplex) => {
      options.logger.debug({ err: err.message }, 'relay client error')
      socket.destroy()
    })
    this.#http2.on('session', (session: http2.ServerHttp2Session) => { session.on('error', () => {}) })
    this.#tls.on('secureConnection', socket => { this.#admit(socket) })
    this.#tls.on('tlsClientError', (err, socket) => {
      socket.destroy()
      this.#refused?.inc('tls_handshake')
      options.logger.debug({ err: err.message, client: socket.remoteAddress === undefined ? null : plainAddress(socket.remoteAddress) }, 'relay TLS handshake failed')
    })
  }

  #admit (socket: tls.TLSSocket): void {
    socket.on('error', () => {})
    const fingerprint = peerFingerprint(socket)
    if (!this.#o.fleet.admits(fingerprint)) {
      this.#refused?.inc(fingerprint === '' ? 'no_certificate' : 'unknown_certificate')
      this.#o.logger.warn({ client: socket.remoteAddress === undefined ? null : plainAddress(socket.remoteAddress), fingerprint: fingerprint || null }, 'relay connection refused: client certificate not in the fleet')
      socket.destroy()
      return
    }
    this.#sockets.add(socket)
    socket.once('close', () => this.#sockets.delete(socket))
    const stream = socket.alpnProtocol === STREAM_ALPN ? this.#o.handleStream : undefined
    const passthrough = socket.alpnProtocol === PASSTHROUGH_ALPN ? this.#o.handlePassthrough : undefined
    if (stream !== undefined || passthrough !== undefined) {
      const what = stream !== undefined ? 'stream' : 'passthrough'
      readPreamble(socket, this.#o.handshakeTimeoutMs, (err, preamble, rest) => {
        // A stream must name the client's ALPN protocol and server name; a passthrough names neither.
        if (err === null) {
          const { alpn, servername } = preamble!
          const valid = stream !== undefined ? alpn !== undefined && servername !== undefined : alpn === undefined && servername === undefined
          if (!valid) err = new Error('relay preamble malformed')
        }
        if (err instanceof PreambleMissing && err.empty) {
          // The relaying gateway gave up before writing anything (its client's TLS handshake
          // failed, counted there): nothing was refused here.
          this.#o.logger.debug({ gateway: socket.remoteAddress }, `relay ${what} closed before its preamble`)
          socket.destroy()
          return
        }
        if (err !== null) {
          this.#refused?.inc(`${what}_preamble`)
          this.#o.logger.warn({ err: err.message, gateway: socket.remoteAddress }, `relay ${what} refused`)
          socket.destroy()
          return
        }
        if (rest !== undefined && rest.length > 0) socket.unshift(rest)
        markPassthrough(socket, preamble!.client)
        if (stream !== undefined) stream(socket, preamble!)
        else passthrough!(socket)
      })
      return
    }
    if (socket.alpnProtocol === 'h2') this.#http2.emit('connection', socket)
    else this.#http1.emit('connection', socket)
  }

  async listen (host: string, port: number): Promise<void> {
    await new Promise<void>((resolve, reject) => {
      this.#tls.once('error', reject)
      this.#tls.listen({ host, port }, () => {
        this.#tls.off('error', reject)
        this.#tls.on('error', err => this.#o.logger.error({ err }, 'relay listener error'))
        resolve()
      })
    })
    this.#o.logger.info({ relay: this.#tls.address(), fingerprint: this.#o.fleet.identity.fingerprint }, 'relay listening')
  }

  address (): net.AddressInfo {
    return this.#tls.address() as net.AddressInfo
  }

  /** Stops accepting; open connections stay until destroyConnections (the edge's grace period). */
  async stopAccepting (): Promise<void> {
    if (!this.#tls.listening) return
    await new Promise<void>(resolve => this.#tls.close(() => resolve()))
  }

  destroyConnections (): void {
    for (const socket of this.#sockets) socket.destroy()
  }
}
