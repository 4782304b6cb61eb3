/**
 * The edge: public HTTPS (TLS by SNI) and HTTP listeners in front of the instances.
 *
 *   HTTPS client -> connection cap per client address (limits.ts) -> TLS, certificate by SNI
 *   (CertificateManager) -> Host -> RouteMap -> 421 unless the SNI names the same instance ->
 *   per-instance cap (503), per-client share of it (429) -> UpstreamPool (keep-alive undici
 *   Pool per upstream, UpstreamConnector) -> response streamed back. HTTP/2 via ALPN, HTTP/1.1 upstream.
 *   HTTP client -> ACME HTTP-01 challenge (ChallengeResponder) or redirect to HTTPS.
 *
 * Control's route (routes.ts controlRoute: app.<base>, api.<base>) goes the same way, except that
 * its upstream is control's API listener over kernel TCP (controlConnector), it has no slot caps,
 * and its responses carry HSTS; without a configured origin it answers a 503 page.
 *
 * API (what the gateway wiring uses):
 *
 *   const edge = new Edge({
 *     dataDir,                          // local CA in <dataDir>/tls/local-ca, certificates in <dataDir>/tls
 *     logger,                           // pino; one 'request' line per request at info
 *     connector,                        // UpstreamConnector: { createConnection(route, {host, port}) }
 *                                       //   gateway: (r, o) => tcp.createConnection({ host: o.host, port: o.port })
 *     controlConnector?,                // how control's route is reached (default netConnector)
 *     metrics?,                         // gateway/metrics.ts: edge_requests, edge_errors, edge_client_errors
 *     https?: { host?, port? },         // default [::]:443 (dual-stack; 0.0.0.0 on a host without IPv6)
 *     http?: { host?, port? } | false,  // default [::]:80; false: no plain listener
 *     publicHttpsPort?,                 // port written in redirects (default: the HTTPS listen port, or 443)
 *     issuer?, certStore?, wildcards?,  // default: LocalCa + FileCertStore; wildcards like '*.erugo.cloud'
 *     challenges?,                      // ChallengeResponder for /.well-known/acme-challenge/ (default: 404)
 *     tlsAlpnChallenges?,               // ACME TLS-ALPN-01 responder attached to the HTTPS listener (acme/)
 *     http2?,                           // default true (ALPN h2 + http/1.1)
 *     tlsWriteMax?,                     // default 16 000 bytes per write to a client's TLS socket (0: node's own)
 *     idleTimeoutMs?,                   // default 300 000: no byte either way for this long ends an exchange
 *     upstreamTimeoutMs?,               // default 120 000: request fully sent -> response headers (504)
 *     connectTimeoutMs?,                // default 15 000 (502)
 *     headersTimeoutMs?,                // default 60 000: client request headers (slowloris) -> 408
 *     keepAliveTimeoutMs?,              // default 30 000: idle client keep-alive connection
 *     maxHeaderSize?,                   // default 16 384 bytes -> 431
 *     defaultMaxConnections?,           // per instance when the route has no maxConnections (default 256)
 *     limits?,                          // per-client fairness (limits.ts EDGE_LIMIT_DEFAULTS): connections
 *                                       //   per address, share of an instance's slots, HTTP/2 streams,
 *                                       //   TLS handshake timeout, minimum upload progress when slots are scarce
 *     now?,                             // clock for certificates (tests)
 *   })
 *   await edge.start()                  // opens the CA, binds the listeners, starts renewal scans
 *   edge.updateRoutes(routes)           // Route[] from the control snapshot; swaps atomically and
 *                                       //   starts obtaining certificates for new hostnames
 *   edge.certificateStates()            // [{hostname, status: pending|active|failing, notAfter, lastError...}]
 *   edge.caCertificatePath              // the local CA's certificate (undefined with another issuer)
 *   edge.addresses()                    // { https, http } AddressInfo
 *   await edge.certificatesSettled()    // no issuance running (tests, start-up)
 *   await edge.close()                  // stop accepting; in-flight requests get graceMs (default 10 s)
 *   edge.certificates                   // the CertificateManager (after start)
 *   edge.pool.activeConnections(id)     // upstream connections in use for an instance
 *   edge.connections.openConnections(a) // client connections open from an address (its /64 for IPv6)
 *
 * Fleet (options.relay): whole client connections relayed to and from other gateways are
 * relay-connections.ts (RelayConnections, built here and attached to the HTTPS listener); requests
 * relayed one by one go through the proxy's RelayClient (relay.ts).
 *
 * WebSocket: HTTP/1.1 Upgrade only (we do not advertise RFC 8441 extended CONNECT, so browsers open
 * an HTTP/1.1 connection for WebSockets while using HTTP/2 for the rest).
 */
import http from 'node:http'
import https from 'node:https'
import http2 from 'node:http2'
import tls from 'node:tls'
import path from 'node:path'
import type net from 'node:net'
import type { Duplex } from 'node:stream'
import type { Logger } from 'pino'
import type { CounterFamily } from '../metrics.ts'
import { RouteMap, type Route } from './routes.ts'
import { UpstreamPool } from './upstream.ts'
import { ReverseProxy } from './proxy.ts'
import { TrafficRecorder } from './traffic.ts'
import { createHttpHandler, noChallenges } from './http-listener.ts'
import { CertificateManager, type CertificateState } from './certificates.ts'
import { FileCertStore } from './cert-store.ts'
import { LocalCa } from './local-ca.ts'
import { ConnectionGate, EDGE_LIMIT_DEFAULTS, type EdgeLimits } from './limits.ts'
import { RelayClient, RelayFleet, RelayListener } from './relay.ts'
import type { FleetGateway } from '../../proto/rpc/index.ts'
import { RelayConnections, type EdgeSide } from './relay-connections.ts'
import { childLogger, moduleLogger } from '../../proto/log.ts'
import { bindDualStack, DUAL_STACK_ANY, plainAddress } from '../../proto/net/address.ts'
import { EDGE_DEFAULTS, TLS_CIPHERS, type EdgeOptions } from './options.ts'
import { listen, noIpv6 } from './bind.ts'
import { boundTlsWrites } from './tls-writes.ts'
import { acceptWireGuardUpgrade, attachWireGuardAlpn, isWireGuardUpgrade } from './wg-over-tls.ts'

export { RouteMap, normalizeHost, controlRoute, CONTROL_LABELS, CONTROL_ROUTE_ID, type Route, type RouteTable } from './routes.ts'
export { UpstreamPool, netConnector, type UpstreamConnector, type UpstreamConnectOptions } from './upstream.ts'
export { CertificateManager, type CertificateState, type CertificateStatus, type CertificateSource } from './certificates.ts'
export { FileCertStore, CertStoreError, type CertStore, type CertificateRecord } from './cert-store.ts'
export { LocalCa, LEAF_LIFETIME_MS, CA_LIFETIME_MS } from './local-ca.ts'
export { IssuerError, type Issuer, type IssuedCertificate } from './issuer.ts'
export { ACME_CHALLENGE_PREFIX, noChallenges, type ChallengeResponder } from './http-listener.ts'
export { ReverseProxy } from './proxy.ts'
export { CONTROL_HSTS } from './exchange.ts'
export { EDGE_LIMIT_DEFAULTS, clientKey, type EdgeLimits } from './limits.ts'
export { RelayClient, RelayFleet, RelayListener, RelayError, connectPinned, type RelayTarget } from './relay.ts'
export { loadOrCreateRelayIdentity, certificateFingerprint, type RelayIdentity } from './relay-identity.ts'
export { EDGE_DEFAULTS, TLS_CIPHERS, type EdgeOptions, type ListenAddress } from './options.ts'

type HttpsServer = https.Server | http2.Http2SecureServer

/** Server fields node reads per connection (also on an HTTP/2 server's HTTP/1.1 side). */
interface Http1Limits {
  headersTimeout: number
  requestTimeout: number
  keepAliveTimeout: number
  maxHeaderSize: number
  connectionsCheckingInterval: number
}

export class Edge {
  readonly routes = new RouteMap()
  readonly pool: UpstreamPool
  readonly proxy: ReverseProxy
  /** Per-instance usage and access log, taken by each report to control (bounded while none is). */
  readonly traffic = new TrafficRecorder()
  /** Open client connections per address, on both listeners. */
  readonly connections: ConnectionGate
  private readonly limits: EdgeLimits
  private readonly options: EdgeOptions
  private readonly logger: Logger
  private readonly clientErrors: CounterFamily | undefined
  private manager: CertificateManager | undefined
  private localCa: LocalCa | undefined
  private httpsServer: HttpsServer | undefined
  private httpServer: http.Server | undefined
  private readonly sockets = new Set<net.Socket>()
  private noCertificate: tls.SecureContext | undefined
  /** Fleet relay: the client side (routing) and the listener; null without `relay`. */
  readonly relay: RelayClient | null = null
  private relayListener: RelayListener | undefined
  /** Whole client connections relayed to and from other gateways (relay-connections.ts). */
  private relayConnections: RelayConnections | undefined

  constructor (options: EdgeOptions) {
    this.options = options
    this.logger = options.logger
    const limits = this.limits = { ...EDGE_LIMIT_DEFAULTS, ...options.limits }
    this.pool = new UpstreamPool({
      connector: options.connector,
      controlConnector: options.controlConnector,
      defaultMaxConnections: options.defaultMaxConnections ?? EDGE_DEFAULTS.defaultMaxConnections,
      connectTimeoutMs: options.connectTimeoutMs ?? EDGE_DEFAULTS.connectTimeoutMs,
      clientSlotShare: limits.clientSlotShare,
    })
    const proxyOptions = {
      routes: this.routes,
      pool: this.pool,
      logger: options.logger,
      metrics: options.metrics,
      idleTimeoutMs: options.idleTimeoutMs ?? EDGE_DEFAULTS.idleTimeoutMs,
      upstreamTimeoutMs: options.upstreamTimeoutMs ?? EDGE_DEFAULTS.upstreamTimeoutMs,
      slowUploads: { scarceSlotShare: limits.scarceSlotShare, minBytesPerSecond: limits.minUploadBytesPerSecond, windowMs: limits.uploadProgressWindowMs },
      traffic: this.traffic,
    }
    if (options.relay !== undefined) {
      const fleet = new RelayFleet(options.relay.identity)
      this.relay = new RelayClient({ fleet, sessionLive: options.relay.sessionLive, connectTimeoutMs: options.connectTimeoutMs ?? EDGE_DEFAULTS.connectTimeoutMs })
      const relayed = new ReverseProxy({ ...proxyOptions, logger: childLogger(options.logger, { relay: 'in' }), relayed: true })
      this.relayListener = new RelayListener({
        fleet,
        handleRequest: relayed.handleRequest,
        handleUpgrade: relayed.handleUpgrade,
        handlePassthrough: socket => { this.relayConnections?.acceptPassthrough(socket) },
        handleStream: (socket, preamble) => { this.relayConnections?.acceptStream(socket, preamble) },
        logger: options.logger,
        metrics: options.metrics,
        idleTimeoutMs: proxyOptions.idleTimeoutMs,
        handshakeTimeoutMs: limits.tlsHandshakeTimeoutMs,
        headersTimeoutMs: options.headersTimeoutMs ?? EDGE_DEFAULTS.headersTimeoutMs,
        keepAliveTimeoutMs: options.keepAliveTimeoutMs ?? EDGE_DEFAULTS.keepAliveTimeoutMs,
        maxHeaderSize: options.maxHeaderSize ?? EDGE_DEFAULTS.maxHeaderSize,
        // Streams of many clients share one relay connection: the instance's slot caps bound them.
        maxConcurrentStreams: 1_000,
        h2StreamWindow: EDGE_DEFAULTS.h2StreamWindow,
      })
    }
    this.proxy = new ReverseProxy({ ...proxyOptions, ...(this.relay === null ? {} : { relay: this.relay }) })
    this.clientErrors = options.metrics?.family('edge_client_errors', 'Client connections refused before a request: TLS handshakes, malformed or oversized requests, header timeouts, per-address connection cap')
    this.connections = new ConnectionGate(limits.maxConnectionsPerClient, client => {
      this.clientErrors?.inc('connection_cap')
      this.logger.debug({ client }, 'connection refused: client address at its connection cap')
    })
    if (this.relay !== null) this.relayConnections = new RelayConnections(this.relay, options.relay?.mode ?? 'stream', this.edgeSide(), options.metrics)
  }

  /** What relayed client connections share with the HTTPS listener. */
  private edgeSide (): EdgeSide {
    return {
      routes: this.routes,
      proxy: this.proxy,
      logger: this.logger,
      clientErrors: this.clientErrors,
      idleTimeoutMs: this.options.idleTimeoutMs ?? EDGE_DEFAULTS.idleTimeoutMs,
      tlsHandshakeTimeoutMs: this.limits.tlsHandshakeTimeoutMs,
      http2: this.options.http2 !== false,
      tlsOptions: () => this.tlsServerOptions(),
      h2Settings: streamWindow => this.h2Settings(streamWindow),
      applyHttp1Limits: server => { this.applyHttp1Limits(server) },
      watchSessions: (server, connectionWindow) => { this.watchSessions(server, connectionWindow) },
      onClientError: (err, socket) => { this.onClientError(err, socket) },
      track: socket => { this.track(socket) },
      listening: () => this.httpsServer?.listening === true,
    }
  }

  /** The local CA's certificate, for clients to trust (undefined when another issuer is used). */
  get caCertificatePath (): string | undefined {
    return this.localCa?.certificatePath
  }

  get certificates (): CertificateManager {
    if (this.manager === undefined) throw new Error('Edge.start() has not run')
    return this.manager
  }

  /**
   * Listen (HTTPS, then HTTP), then start managing certificates: ACME validation may come to these
   * listeners as soon as an order is placed. If a listener cannot be opened, what was opened is
   * closed again and the error is thrown.
   */
  async start (): Promise<void> {
    try {
      await this.listen()
      await this.manageCertificates()
    } catch (err) {
      await this.close(0)
      throw err
    }
    this.logger.info({ https: this.httpsServer?.address(), http: this.httpServer?.address() ?? null, ca: this.caCertificatePath }, 'edge listening')
  }

  private async manageCertificates (): Promise<void> {
    const o = this.options
    const tlsDir = path.join(o.dataDir, 'tls')
    let issuer = o.issuer
    if (issuer === undefined) {
      this.localCa = await LocalCa.open({ directory: path.join(tlsDir, 'local-ca'), now: o.now })
      issuer = this.localCa
    }
    this.manager = new CertificateManager({
      store: o.certStore ?? new FileCertStore({ directory: tlsDir, now: o.now }),
      issuer,
      logger: moduleLogger(this.logger, 'certificates'),
      wildcards: o.wildcards,
      contextCacheSize: this.limits.tlsContextCache,
      now: o.now,
    })
    this.manager.setHostnames(this.routes.hostnames(), this.localWildcards())
    this.manager.start()
  }

  private async listen (): Promise<void> {
    const o = this.options
    this.httpsServer = this.createHttpsServer()
    this.relayConnections?.attach(this.httpsServer)
    o.tlsAlpnChallenges?.attach(this.httpsServer)
    this.connections.attach(this.httpsServer) // outermost: counted before the ACME check and TLS
    const httpsAddress = o.https ?? {}
    await listen(this.httpsServer, httpsAddress.host ?? DUAL_STACK_ANY, httpsAddress.port ?? 443, this.logger, 'HTTPS')

    if (o.http !== false) {
      const httpsPort = o.publicHttpsPort ?? ((httpsAddress.port ?? 443) === 0 ? (this.httpsServer.address() as net.AddressInfo).port : httpsAddress.port ?? 443)
      const headersTimeout = o.headersTimeoutMs ?? EDGE_DEFAULTS.headersTimeoutMs
      const server = http.createServer({
        maxHeaderSize: o.maxHeaderSize ?? EDGE_DEFAULTS.maxHeaderSize,
        // Only tiny redirects and challenge answers are served here: the whole request must come
        // within the header timeout.
        requestTimeout: headersTimeout,
        headersTimeout,
        keepAliveTimeout: o.keepAliveTimeoutMs ?? EDGE_DEFAULTS.keepAliveTimeoutMs,
        connectionsCheckingInterval: o.connectionsCheckingIntervalMs ?? EDGE_DEFAULTS.connectionsCheckingIntervalMs,
      }, createHttpHandler({ routes: this.routes, challenges: o.challenges ?? noChallenges, logger: this.logger, httpsPort }))
      server.on('connection', socket => this.track(socket))
      server.on('clientError', (err, socket) => this.onClientError(err, socket))
      this.connections.attach(server)
      this.httpServer = server
      const httpAddress = o.http ?? {}
      await listen(server, httpAddress.host ?? DUAL_STACK_ANY, httpAddress.port ?? 80, this.logger, 'HTTP')
    }
    const relay = this.relayListener
    if (relay !== undefined) {
      const port = o.relay!.listen.port ?? 0
      await bindDualStack(o.relay!.listen.host ?? DUAL_STACK_ANY, async host => { await relay.listen(host, port) }, err => noIpv6(this.logger, 'relay', port, err))
    }
  }

  /** Fleet: the gateways requests may be relayed to and relay connections accepted from (each snapshot). */
  updateFleet (fleet: readonly FleetGateway[]): void {
    if (this.relay === null) return
    this.relay.fleet.update(fleet)
    this.relay.retain()
  }

  /** The relay listener's address (null without one). */
  relayAddress (): net.AddressInfo | null {
    return this.relayListener?.address() ?? null
  }

  /** Replace the route table (atomically) and manage certificates for exactly its hostnames. */
  updateRoutes (routes: Route[]): void {
    const { conflicts, invalid } = this.routes.updateRoutes(routes)
    if (conflicts.length > 0) this.logger.warn({ conflicts }, 'hostnames claimed by more than one route: first kept')
    if (invalid.length > 0) this.logger.warn({ invalid }, 'invalid hostnames in routes: ignored')
    this.pool.retain(this.routes.routes())
    this.manager?.setHostnames(this.routes.hostnames(), this.localWildcards())
  }

  /**
   * With the local CA, one certificate `*.<base>` serves every instance subdomain instead of one
   * each (the base domain is the one control's route names). Not for a one-label base such as
   * `localhost`: clients refuse a wildcard directly under a top-level name (node checkServerIdentity, browsers).
   */
  private localWildcards (): string[] {
    if (this.localCa === undefined) return []
    const control = this.routes.routes().find(r => r.control === true)
    const first = control?.hostnames[0]
    const base = first === undefined ? '' : first.slice(first.indexOf('.') + 1)
    return base.includes('.') ? [`*.${base}`] : []
  }

  certificateStates (): CertificateState[] {
    return this.manager?.certificateStates() ?? []
  }

  async certificatesSettled (): Promise<void> {
    await this.manager?.settled()
  }

  /** The HTTPS listener accepts connections (readiness checks read this). */
  get httpsListening (): boolean {
    return this.httpsServer?.listening === true
  }

  addresses (): { https: net.AddressInfo, http: net.AddressInfo | null } {
    if (this.httpsServer === undefined) throw new Error('Edge.start() has not run')
    return {
      https: this.httpsServer.address() as net.AddressInfo,
      http: (this.httpServer?.address() as net.AddressInfo | undefined) ?? null,
    }
  }

  /** Stop accepting; wait up to graceMs for open connections, then cut them. */
  async close (graceMs = 10_000): Promise<void> {
    this.manager?.stop()
    const closing = [this.httpsServer, this.httpServer]
      .filter((s): s is HttpsServer | http.Server => s !== undefined && s.listening)
      .map(s => new Promise<void>(resolve => s.close(() => resolve())))
    if (this.relayListener !== undefined) closing.push(this.relayListener.stopAccepting())
    const deadline = Date.now() + graceMs
    // In-flight exchanges may finish; idle keep-alive connections are not waited for.
    while (this.pool.totalActive() > 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
    for (const socket of this.sockets) socket.destroy()
    this.relayListener?.destroyConnections()
    this.relay?.destroy()
    this.pool.destroy()
    await Promise.all(closing)
  }

  private track (socket: net.Socket): void {
    this.sockets.add(socket)
    socket.once('close', () => this.sockets.delete(socket))
  }

  /** TLS of the HTTPS listener (and of clients whose connections are relayed as streams): certificates by SNI. */
  private tlsServerOptions (): tls.TlsOptions {
    const sni = (servername: string, cb: (err: Error | null, ctx?: tls.SecureContext) => void): void => {
      // Before the certificate manager is up (the moment between listen and its start), no name has one.
      const manager = this.manager
      if (manager === undefined) { cb(null, this.emptyContext()); return }
      manager.secureContext(servername).then(ctx => {
        // No certificate for this name: an empty context makes OpenSSL fail the handshake with a
        // handshake_failure alert. There is no default certificate to fall back to.
        cb(null, ctx ?? this.emptyContext())
      }, err => cb(err instanceof Error ? err : new Error(String(err))))
    }
    return {
      SNICallback: sni,
      minVersion: 'TLSv1.2',
      ciphers: TLS_CIPHERS,
      // Node's default is 120 s: a connection that never finishes its handshake holds a socket that long.
      handshakeTimeout: this.limits.tlsHandshakeTimeoutMs,
    }
  }

  private h2Settings (streamWindow: number = EDGE_DEFAULTS.h2StreamWindow): http2.Settings {
    return {
      maxConcurrentStreams: this.limits.maxConcurrentStreams,
      // The HTTP/1.1 limit for HTTP/2 too: node resets a stream whose header list is larger
      // (RFC 9113 6.5.2, 10.5.1) with ENHANCE_YOUR_CALM.
      maxHeaderListSize: this.options.maxHeaderSize ?? EDGE_DEFAULTS.maxHeaderSize,
      // RFC 9113 6.9.2: the 64 KiB default window caps an upload at window/RTT.
      initialWindowSize: streamWindow,
    }
  }

  /**
   * HTTP/1.1 limits: set as fields because http2's allowHTTP1 path reads them from the server
   * object but does not take them as options.
   */
  private applyHttp1Limits (server: http.Server | HttpsServer | http2.Http2Server): void {
    const o = this.options
    const limits = server as unknown as Http1Limits
    limits.requestTimeout = 0 // never a total-time limit: idle time alone ends transfers
    limits.headersTimeout = o.headersTimeoutMs ?? EDGE_DEFAULTS.headersTimeoutMs
    limits.keepAliveTimeout = o.keepAliveTimeoutMs ?? EDGE_DEFAULTS.keepAliveTimeoutMs
    limits.maxHeaderSize = o.maxHeaderSize ?? EDGE_DEFAULTS.maxHeaderSize
    limits.connectionsCheckingInterval = o.connectionsCheckingIntervalMs ?? EDGE_DEFAULTS.connectionsCheckingIntervalMs
  }

  /** HTTP/2 sessions: errors counted, the connection window raised. */
  private watchSessions (server: http2.Http2SecureServer | http2.Http2Server, connectionWindow: number = EDGE_DEFAULTS.h2ConnectionWindow): void {
    server.on('session', (session: http2.ServerHttp2Session) => {
      session.on('error', () => {}) // reported through sessionError
      session.once('localSettings', () => { try { session.setLocalWindowSize(connectionWindow) } catch { /* closed meanwhile */ } })
    })
    server.on('sessionError', (err: Error) => {
      this.clientErrors?.inc('h2_session')
      this.logger.debug({ err: err.message }, 'HTTP/2 session error')
    })
  }

  private createHttpsServer (): HttpsServer {
    const o = this.options
    const tlsOptions = this.tlsServerOptions()
    const server: HttpsServer = o.http2 === false
      ? https.createServer(tlsOptions)
      : http2.createSecureServer({ ...tlsOptions, allowHTTP1: true, settings: this.h2Settings() })
    this.applyHttp1Limits(server)
    // Socket (HTTP/1.1) and session (HTTP/2) inactivity backstop, a second later than the proxy's
    // own idle deadline (whose watchdog may wake a few milliseconds after it): that one acts
    // first, and the access log names the idle timeout.
    server.setTimeout((o.idleTimeoutMs ?? EDGE_DEFAULTS.idleTimeoutMs) + 1_000)

    const writeMax = o.tlsWriteMax ?? EDGE_DEFAULTS.tlsWriteMax
    // From 16 KiB up node sizes its kept output block by the write: the bound would do nothing.
    if (!Number.isInteger(writeMax) || writeMax < 0 || writeMax >= 16_384) throw new RangeError(`edge tlsWriteMax must be an integer from 0 to 16383, not ${writeMax}`)
    server.on('secureConnection', (socket: tls.TLSSocket) => {
      if (writeMax > 0) boundTlsWrites(socket, writeMax)
      this.track(socket)
    })
    server.on('request', this.proxy.handleRequest)
    const streams = o.wireguardStreams
    if (streams === undefined) server.on('upgrade', this.proxy.handleUpgrade)
    else {
      attachWireGuardAlpn(server, streams)
      server.on('upgrade', (req: http.IncomingMessage, socket: Duplex, head: Buffer) => {
        if (isWireGuardUpgrade(req) && this.routes.lookup(req.headers.host ?? '')?.control === true) acceptWireGuardUpgrade(req, socket, head, streams)
        else this.proxy.handleUpgrade(req, socket, head)
      })
    }
    server.on('clientError', (err: Error, socket: Duplex) => this.onClientError(err, socket))
    server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
      // With a listener here node leaves the socket open (a handshake timeout included): close it.
      socket.destroy()
      this.clientErrors?.inc('tls_handshake')
      this.logger.debug({ err: err.message, servername: socket.servername, client: socket.remoteAddress === undefined ? null : plainAddress(socket.remoteAddress) }, 'TLS handshake failed')
    })
    if (o.http2 !== false) this.watchSessions(server as http2.Http2SecureServer)
    return server
  }

  private emptyContext (): tls.SecureContext {
    this.noCertificate ??= tls.createSecureContext({})
    return this.noCertificate
  }

  /** Malformed, oversized or too-slow requests: a short 4xx when the socket can take it, then close. */
  private onClientError (err: Error & { code?: string }, socket: Duplex): void {
    const code = err.code ?? 'UNKNOWN'
    this.clientErrors?.inc(code)
    this.logger.debug({ code, err: err.message }, 'client error')
    if (code === 'ECONNRESET' || !socket.writable) { socket.destroy(); return }
    const status = code === 'HPE_HEADER_OVERFLOW' ? 431 : code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400
    const body = `${status} ${http.STATUS_CODES[status]}\n`
    socket.end(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\ncontent-type: text/plain\r\ncontent-length: ${body.length}\r\nconnection: close\r\n\r\n${body}`)
    setTimeout(() => socket.destroy(), 1_000).unref()
  }
}
