/**
 * The gateway process wiring: WireGuard device + UDP shell + IP layer + userspace TCP from a
 * validated config, the edge (HTTPS/HTTP listeners, when configured), and the small HTTP server
 * for `GET /metrics` (Prometheus text) and `GET /status` (JSON).
 *
 *   UDP socket -> UdpShell -> Device -> IpLayer -> TcpStack (protocol 6) / ICMP echo
 *   IpLayer.send -> UdpShell.sendPacket -> Device (route by destination) -> UDP socket
 *   HTTPS client -> Edge (TLS by SNI, Host -> route) -> TcpStack.connect(tunnelIp:port) -> peer
 *
 * Peers and routes come from the control plane as snapshots (applySnapshot, driven by
 * gateway/control's ControlClient); the config file's own peers are the first snapshot. A snapshot
 * naming the base domain also routes app.<base> and api.<base> to control (controlOrigin).
 */
import http from 'node:http'
import path from 'node:path'
import type { Logger } from 'pino'
import { Metrics, exposition } from './metrics.ts'
import { Device, activeTunnels, formatEndpoint, type PeerStatus } from './wireguard/device.ts'
import { UdpShell, monotonicNow, wallClockOffset } from './wireguard/udp.ts'
import { StreamEndpoints, isStreamAddress } from './wireguard/streams.ts'
import { EndpointFile } from './wireguard/endpoint-file.ts'
import { HandshakeResumer } from './wireguard/resume.ts'
import type { Peer } from './wireguard/peer.ts'
import { IpLayer } from './netstack/ip.ts'
import { TcpStack, type TcpSocket } from './netstack/tcp/index.ts'
import { Edge, FileCertStore, controlRoute, loadOrCreateRelayIdentity, type CertStore, type EdgeOptions, type RelayIdentity, type Route as EdgeRoute } from './edge/index.ts'
import { AcmeIssuer } from './edge/acme/acme-issuer.ts'
import { HttpChallenges, type ChallengeSolver } from './edge/acme/challenges.ts'
import { DnsChallenges, type DnsProvider } from './edge/acme/dns-provider.ts'
import { TlsAlpnChallenges } from './edge/acme/tls-alpn.ts'
import type { TrafficBatch } from './edge/traffic.ts'
import { planSnapshot, withFleetRoutes, type Route } from './control/apply.ts'
import { snapshotFromConfig } from './control/static-file.ts'
import type { GatewayConfig, PeerConfig } from './config/schema.ts'
import { encodeKey } from '../proto/noise/index.ts'
import { IPPROTO_TCP, formatIPv4 } from '../proto/wire/ipv4.ts'
import type { CertificateReport, ConfigSnapshot, FleetGateway } from '../proto/rpc/index.ts'
import { REJECT_AFTER_TIME } from '../proto/noise/constants.ts'
import type { FaultStats } from './netstack/fault.ts'
import type { SocketStats, UdpIo } from './wireguard/socket.ts'
import { moduleLogger } from '../proto/log.ts'
import { startListening } from '../proto/net/listen.ts'

/** In the edge's data directory: each peer's last endpoint (wireguard/endpoint-file.ts). */
export const ENDPOINT_FILE = 'wireguard-endpoints.json'
/** Endpoint changes are written at most this often (one write per burst of changes). */
const ENDPOINT_FLUSH_DELAY_MS = 2_000
/** Default pace of the initiations to stored endpoints after a restart (dos.resumeInitiationsPerSecond). */
export const RESUME_INITIATIONS_PER_SECOND = 2_000

export interface GatewayStatus {
  publicKey: string
  listen: string
  address: string
  underLoad: boolean
  uptimeMs: number
  peers: PeerStatus[]
  /** Every counter family: { family: { reason: count } }. */
  counters: Record<string, Record<string, number>>
  faults: { inbound: FaultStats, outbound: FaultStats } | null
  /** The WireGuard socket: which implementation, datagrams it could not send, and (batched) its system calls. */
  udp: { io: UdpIo, sendErrors: number, stats: SocketStats | null }
  /** Open WireGuard-over-TLS streams. */
  streams: number
  /** Version of the control-plane snapshot being served (null: only the config file's peers). */
  configVersion: number | null
  routes: number
  edge: { https: string, http: string | null } | null
  /** The relay listener and its certificate's fingerprint (null without one). */
  relay: { listen: string, fingerprint: string, fleet: number } | null
}

/** What a config file cannot say: built by the caller (gateway/control/run.ts). */
export interface GatewayStartOptions {
  /** With `edge.acme`: where certificates, the account key and locks live (default <dataDir>/tls). */
  certStore?: CertStore
  /** With `edge.acme`: DNS-01 through this provider (wildcards), after the configured challenges. */
  dnsProvider?: DnsProvider
  /**
   * Control's API listener, where the edge sends app.<base> and api.<base> (plain HTTP over kernel
   * TCP). Unset: those names answer a 503 page (once the snapshot names the base domain).
   */
  controlOrigin?: { host: string, port: number }
}

export interface ApplyResult {
  added: number
  updated: number
  removed: number
  routes: number
  rejected: number
}

export class Gateway {
  /** The config it started from, without its peers: those live in the device (and the plane's snapshot). */
  readonly config: GatewayConfig
  readonly logger: Logger
  readonly metrics: Metrics
  readonly device: Device
  readonly ip: IpLayer
  readonly shell: UdpShell
  readonly tcp: TcpStack
  /** WireGuard over TLS on the edge's HTTPS port (wireguard/streams.ts): peers whose UDP is blocked. */
  readonly streams: StreamEndpoints
  /** Each peer's last endpoint, in the data directory (with an edge: it names the directory). */
  readonly endpointFile: EndpointFile | null
  /** Initiates to the peers of endpointFile after a restart. */
  readonly resumer: HandshakeResumer
  /** The HTTPS/HTTP edge, when the config has an `edge` block. */
  edge: Edge | null = null
  configVersion: number | null = null
  private readonly startedAt = monotonicNow()
  private listenText = ''
  private httpServer: http.Server | null = null
  private routeList: Route[] = []
  /** The edge's instance routes: the local ones plus the fleet's relay-only ones. */
  private fleetRouteList: Route[] = []
  private fleet: FleetGateway[] = []
  private instanceIds = new Map<string, string>()
  /** Instance id -> its peer's public key (base64), for session liveness. */
  private peerKeys = new Map<string, string>()
  /** The relay listener's key and certificate (with `edge.relayListen`), after start. */
  relayIdentity: RelayIdentity | null = null
  /** Control's CC_BASE_DOMAIN from the last snapshot that named one. */
  private baseDomain: string | undefined
  private addressWarnedFor = ''
  private readonly startOptions: GatewayStartOptions

  private constructor (config: GatewayConfig, logger: Logger, metrics: Metrics, startOptions: GatewayStartOptions) {
    // Not kept twice: a validated peer list is a copy of every key, prefix and name (10,000 peers: MBs).
    this.config = { ...config, peers: [] }
    this.startOptions = startOptions
    this.logger = logger
    this.metrics = metrics
    this.shell = new UdpShell({
      listenAddress: config.listenAddress,
      listenPort: config.listenPort,
      io: config.udpIo,
      faults: config.faults,
      logger: moduleLogger(logger, 'udp'),
    })
    this.ip = new IpLayer({
      address: config.address,
      metrics,
      send: datagram => { this.shell.sendPacket(datagram) },
      logger: moduleLogger(logger, 'ip'),
    })
    const shell = this.shell
    const ip = this.ip
    const limits = config.edge?.limits
    const streams = this.streams = new StreamEndpoints({
      metrics,
      logger: moduleLogger(logger, 'wg-stream'),
      receive: (message, address, port) => { shell.receiveFrom(message, address, port) },
      ...(limits === undefined ? {} : { limits: { maxPerClient: limits.wireguardStreamsPerClient, idleTimeoutMs: limits.wireguardStreamIdleMs } }),
    })
    this.device = new Device({
      privateKey: config.privateKey,
      metrics,
      logger: moduleLogger(logger, 'wireguard'),
      wallClockOffset: wallClockOffset(),
      underLoadHandshakesPerSecond: config.dos.underLoadHandshakesPerSecond,
      rateLimitPerSecond: config.dos.rateLimitPerSecond,
      rateLimitBurst: config.dos.rateLimitBurst,
      testingRekeyAfterTime: config.testing.rekeyAfterTimeMs,
      io: {
        sendDatagram (datagram, address, port) {
          if (isStreamAddress(address)) streams.send(datagram, address, port)
          else shell.sendDatagram(datagram, address, port)
        },
        deliverPacket (packet, _peer, now) { ip.input(packet, now) },
        endpointChanged: () => { this.endpointFile?.changed() },
      },
    })
    this.shell.attach(this.device)
    const device = this.device
    this.endpointFile = config.edge === null
      ? null
      : new EndpointFile(path.join(config.edge.dataDir, ENDPOINT_FILE), () => device.peers.values(), { flushDelayMs: ENDPOINT_FLUSH_DELAY_MS, logger: moduleLogger(logger, 'wireguard') })
    this.resumer = new HandshakeResumer(this.device, {
      perSecond: config.dos.resumeInitiationsPerSecond ?? RESUME_INITIATIONS_PER_SECOND,
      now: monotonicNow,
      wake: () => { shell.wake() },
      // In control mode peers arrive with the first config, after start: logged when each batch begins.
      onBatch: peers => { logger.info({ peers }, 'initiating to peers at their last endpoints') },
    })
    this.tcp = new TcpStack({ localAddress: config.address, ip: this.ip, metrics, logger: moduleLogger(logger, 'tcp') })
    this.ip.register(IPPROTO_TCP, this.tcp)
    for (const peer of config.peers) this.resume(this.device.addPeer(peer))
    this.registerGauges()
    const initial = snapshotFromConfig(config, 0)
    const plan = planSnapshot(initial, { publicKey: config.publicKey, address: config.address })
    this.setRoutes(plan.routes, plan.instanceIds, initial)
  }

  /** A peer just added: with a stored endpoint (and none configured), queued for an initiation. */
  private resume (peer: Peer): void {
    const stored = this.endpointFile?.take(peer.name)
    if (stored === undefined) return
    peer.endpoint ??= stored
    this.resumer.add(peer)
  }

  private setRoutes (routes: Route[], instanceIds: Map<string, string>, snapshot: ConfigSnapshot): void {
    this.routeList = routes
    this.instanceIds = instanceIds
    this.peerKeys = new Map([...instanceIds].map(([key, id]) => [id, key]))
    this.fleetRouteList = withFleetRoutes(routes, snapshot.routes)
    this.fleet = snapshot.fleet ?? []
  }

  /** The instance's peer here completed a handshake within REJECT_AFTER_TIME (paper 6.1): its session is live. */
  sessionLive (instanceId: string): boolean {
    const key = this.peerKeys.get(instanceId)
    const at = key === undefined ? null : this.device.peer(key)?.lastHandshakeAt ?? null
    return at !== null && monotonicNow() - at < REJECT_AFTER_TIME
  }

  /** Builds the gateway and binds its sockets (UDP, then the optional metrics HTTP server). */
  static async start (config: GatewayConfig, logger: Logger, metrics = new Metrics(), options: GatewayStartOptions = {}): Promise<Gateway> {
    const gw = new Gateway(config, logger, metrics, options)
    const bound = await gw.shell.listen()
    gw.listenText = formatEndpoint(bound.address, bound.port)
    gw.resumer.start()
    logger.info({ aead: gw.device.aead.name, OPENSSL_ia32cap: process.env.OPENSSL_ia32cap ?? null }, 'WireGuard transport crypto')
    if (config.metricsListen !== null) {
      try {
        gw.httpServer = await serveStatus(gw, config.metricsListen.address, config.metricsListen.port)
      } catch (err) {
        await gw.shell.close()
        throw err
      }
    }
    if (config.edge !== null) {
      try {
        await gw.startEdge(config.edge)
      } catch (err) {
        await gw.close(0)
        throw err
      }
    }
    if (config.testing.rekeyAfterTimeMs !== undefined) {
      logger.warn({ rekeyAfterTimeMs: config.testing.rekeyAfterTimeMs }, 'TEST SETTING: sessions rekey early; never use in production')
    }
    if (config.faults !== null) logger.warn({ faults: config.faults }, 'TEST SETTING: datagram fault injection is on')
    return gw
  }

  private async startEdge (settings: NonNullable<GatewayConfig['edge']>): Promise<void> {
    const tcp = this.tcp
    if (settings.relayListen !== undefined) this.relayIdentity = await loadOrCreateRelayIdentity(settings.dataDir)
    const identity = this.relayIdentity
    const edge = new Edge({
      dataDir: settings.dataDir,
      logger: moduleLogger(this.logger, 'edge'),
      metrics: this.metrics,
      // Upstream = the peer's tunnel address through our own TCP stack.
      connector: { createConnection: (_route, o) => tcp.connect({ host: o.host, port: o.port, noDelay: true }) },
      https: { host: settings.httpsListen.address, port: settings.httpsListen.port },
      http: settings.httpListen === null ? false : { host: settings.httpListen.address, port: settings.httpListen.port },
      publicHttpsPort: settings.publicHttpsPort,
      wildcards: settings.wildcards,
      limits: settings.limits,
      wireguardStreams: (socket, remote) => { this.streams.accept(socket, remote) },
      ...this.acmeOptions(settings),
      ...(identity === null || settings.relayListen === undefined
        ? {}
        : { relay: { listen: { host: settings.relayListen.address, port: settings.relayListen.port }, identity, sessionLive: route => this.sessionLive(route.instanceId), mode: settings.relayMode } }),
    })
    edge.updateRoutes(this.edgeRoutes())
    edge.updateFleet(this.fleet)
    this.edge = edge
    await edge.start()
    if (settings.acme !== undefined) this.logger.info({ directory: settings.acme.directory, challenges: settings.acme.challenges }, 'certificates from ACME')
    else this.logger.info({ caCertificate: edge.caCertificatePath }, 'certificates from the local CA')
  }

  /** With `edge.acme`: the issuer, its store (given, else the edge's own <dataDir>/tls) and challenge solvers. */
  private acmeOptions (settings: NonNullable<GatewayConfig['edge']>): Partial<EdgeOptions> {
    const acme = settings.acme
    if (acme === undefined) return {}
    const options: Partial<EdgeOptions> = { certStore: this.startOptions.certStore ?? new FileCertStore({ directory: path.join(settings.dataDir, 'tls') }) }
    const solvers: ChallengeSolver[] = []
    for (const type of acme.challenges) {
      if (type === 'http-01') {
        if (settings.httpListen === null) this.logger.warn('ACME http-01 is configured but the HTTP listener is off')
        const http01 = new HttpChallenges()
        options.challenges = http01
        solvers.push(http01)
      } else {
        const tlsAlpn01 = new TlsAlpnChallenges()
        options.tlsAlpnChallenges = tlsAlpn01
        solvers.push(tlsAlpn01)
      }
    }
    // Last: chosen only where the CA offers nothing earlier in the list, and for wildcards (RFC 8555 7.1.3).
    if (this.startOptions.dnsProvider !== undefined) solvers.push(new DnsChallenges(this.startOptions.dnsProvider))
    options.issuer = new AcmeIssuer({
      directoryUrl: acme.directory,
      email: acme.email,
      caBundlePem: acme.caBundlePem,
      store: options.certStore!,
      solvers,
      logger: moduleLogger(this.logger, 'acme'),
    })
    return options
  }

  /** "address:port" the UDP socket is bound to. */
  get listen (): string { return this.listenText }

  /** "address:port" of the metrics server, or null. */
  get metricsListen (): string | null {
    const a = this.httpServer?.address()
    return a == null || typeof a === 'string' ? null : formatEndpoint(a.address, a.port)
  }

  /** Applies a new peer list (SIGHUP): adds, updates in place (sessions kept) and removes peers. */
  reloadPeers (peers: PeerConfig[]): { added: number, updated: number, removed: number } {
    const wanted = new Map(peers.map(p => [encodeKey(p.publicKey), p]))
    let added = 0; let updated = 0; let removed = 0
    for (const peer of [...this.device.peers.values()]) {
      if (!wanted.has(peer.name)) {
        this.device.removePeer(peer.publicKey, monotonicNow())
        removed++
      }
    }
    for (const [name, p] of wanted) {
      const live = this.device.peer(name)
      if (live === undefined) {
        this.resume(this.device.addPeer(p))
        added++
      } else {
        // Once a peer has completed a handshake, its endpoint follows its authenticated packets
        // (roaming, paper 2.1): a configured endpoint (possibly stale) must not pull it back.
        this.device.updatePeer(live.lastHandshakeAt !== null ? { ...p, endpoint: null } : p)
        updated++
      }
    }
    this.device.updateTimers(monotonicNow())
    return { added, updated, removed }
  }

  /**
   * Serves a control-plane snapshot: WireGuard peers added, updated in place (sessions kept) or
   * removed, and the edge's routes replaced. Peers that cannot be taken are dropped and logged.
   */
  applySnapshot (snapshot: ConfigSnapshot): ApplyResult {
    const plan = planSnapshot(snapshot, { publicKey: this.device.publicKey, address: this.config.address })
    const own = formatIPv4(this.config.address)
    if (snapshot.gateway.address !== own && this.addressWarnedFor !== snapshot.gateway.address) {
      this.addressWarnedFor = snapshot.gateway.address
      this.logger.warn({ configured: own, control: snapshot.gateway.address }, 'control assigns another tunnel address to the gateway: restart to use it')
    }
    if (plan.rejected.length > 0) this.logger.warn({ rejected: plan.rejected }, 'peers dropped from the configuration')
    if (plan.duplicateHostnames.length > 0) this.logger.warn({ hostnames: plan.duplicateHostnames }, 'hostnames claimed by more than one peer: first kept')
    const counts = this.reloadPeers(plan.peers)
    this.setRoutes(plan.routes, plan.instanceIds, snapshot)
    if (snapshot.gateway.baseDomain !== undefined) this.baseDomain = snapshot.gateway.baseDomain
    this.edge?.updateFleet(this.fleet)
    this.edge?.updateRoutes(this.edgeRoutes())
    this.configVersion = snapshot.version
    return { ...counts, routes: plan.routes.length, rejected: plan.rejected.length }
  }

  get routes (): readonly Route[] { return this.routeList }

  /** The edge's routes: control's first (a peer can never take its names), then the peers'. */
  private edgeRoutes (): EdgeRoute[] {
    if (this.baseDomain === undefined) return this.fleetRouteList
    return [controlRoute(this.baseDomain, this.startOptions.controlOrigin ?? null), ...this.fleetRouteList]
  }

  instanceIdOf (publicKey: string): string | undefined {
    return this.instanceIds.get(publicKey)
  }

  peerStatuses (): PeerStatus[] {
    const now = monotonicNow()
    return [...this.device.peers.values()].map(p => this.device.peerStatus(p, now))
  }

  /** The edge's certificate states in the RPC's terms (none without an edge). */
  certificateReports (): CertificateReport[] {
    if (this.edge === null) return []
    return this.edge.certificateStates().map(c => {
      const report: CertificateReport = { hostname: c.hostname, state: c.status }
      if (c.notAfter !== undefined) report.notAfter = c.notAfter
      if (c.lastError !== undefined) report.lastError = c.lastError.slice(0, 2000)
      if (c.nextAttemptAt !== undefined) report.nextRetryAt = c.nextAttemptAt
      return report
    })
  }

  /** The edge's per-instance traffic since the last report (null without an edge). */
  takeTraffic (): TrafficBatch | null {
    return this.edge?.traffic.take() ?? null
  }

  /** A batch the report could not deliver: kept for the next one. */
  restoreTraffic (batch: TrafficBatch): void {
    this.edge?.traffic.restore(batch)
  }

  /** A TCP connection through the tunnel to a peer's address (what the edge's upstreams use). */
  connectUpstream (host: string, port: number): TcpSocket {
    return this.tcp.connect({ host, port, noDelay: true })
  }

  status (): GatewayStatus {
    const now = monotonicNow()
    const edge = this.edge === null ? null : this.edgeAddresses()
    return {
      publicKey: encodeKey(this.device.publicKey),
      listen: this.listenText,
      address: formatIPv4(this.config.address),
      underLoad: this.device.underLoad(now),
      uptimeMs: Math.round(now - this.startedAt),
      peers: [...this.device.peers.values()].map(p => this.device.peerStatus(p, now)),
      counters: this.metrics.snapshot(),
      faults: this.shell.faultStats(),
      udp: { io: this.shell.io, sendErrors: this.shell.sendErrors, stats: this.shell.socketStats() },
      streams: this.streams.size,
      configVersion: this.configVersion,
      routes: this.routeList.length,
      edge,
      relay: this.relayStatus(),
    }
  }

  private relayStatus (): GatewayStatus['relay'] {
    const address = this.edge?.relayAddress() ?? null
    if (address === null || this.relayIdentity === null) return null
    return { listen: formatEndpoint(address.address, address.port), fingerprint: this.relayIdentity.fingerprint, fleet: this.fleet.length }
  }

  private edgeAddresses (): { https: string, http: string | null } | null {
    try {
      const a = this.edge!.addresses()
      return { https: formatEndpoint(a.https.address, a.https.port), http: a.http === null ? null : formatEndpoint(a.http.address, a.http.port) }
    } catch {
      return null // not started yet
    }
  }

  /** Scrape-time gauges: per-peer counters, configured peers, live tunnels. */
  private registerGauges (): void {
    const perPeer: Array<[string, string, (s: PeerStatus) => number]> = [
      ['cc_wg_peer_rx_bytes', 'Bytes received from the peer', s => s.rxBytes],
      ['cc_wg_peer_tx_bytes', 'Bytes sent to the peer', s => s.txBytes],
      ['cc_wg_peer_rx_packets', 'Datagrams received from the peer', s => s.rxPackets],
      ['cc_wg_peer_tx_packets', 'Datagrams sent to the peer', s => s.txPackets],
      ['cc_wg_peer_last_handshake_seconds', 'Unix time of the last handshake (0 = never)', s => (s.lastHandshakeAt ?? 0) / 1000],
    ]
    for (const [name, help, value] of perPeer) {
      this.metrics.gauge(name, help, ['peer'], () => this.peerStatuses().map(s => [{ peer: s.publicKey }, value(s)]))
    }
    this.metrics.gauge('cc_wg_peers', 'Configured peers', [], () => this.device.peers.size)
    this.metrics.gauge('cc_tunnels_active', 'Tunnels with a handshake within the last 180 s (REJECT_AFTER_TIME)', [], () => activeTunnels(this.device, monotonicNow()))
  }

  /** Prometheus text: this gateway's registry (counter families, gauges, histograms) and the process metrics. */
  async prometheus (): Promise<{ contentType: string, text: string }> {
    // Lapsed tunnels first, so this scrape's duration histogram already holds them.
    activeTunnels(this.device, monotonicNow())
    return await exposition(this.metrics.registry)
  }

  /** Stops the edge (in-flight requests get `graceMs`), the metrics server, TCP and the UDP socket. */
  async close (graceMs = 5_000): Promise<void> {
    const edge = this.edge
    this.edge = null
    if (edge !== null) await edge.close(graceMs)
    this.resumer.close()
    this.endpointFile?.close()
    this.streams.close()
    this.tcp.close()
    const server = this.httpServer
    this.httpServer = null
    if (server !== null) {
      server.closeAllConnections()
      await new Promise<void>(resolve => { server.close(() => { resolve() }) })
    }
    await this.shell.close()
  }
}

async function serveStatus (gw: Gateway, address: string, port: number): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET' }).end()
      return
    }
    const answer = async (): Promise<void> => {
      if (path === '/metrics') {
        const { contentType, text } = await gw.prometheus()
        res.writeHead(200, { 'content-type': contentType }).end(text)
      } else if (path === '/status') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(gw.status()))
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
      }
    }
    answer().catch(err => {
      gw.logger.error({ err }, 'status request failed')
      if (!res.headersSent) res.writeHead(500)
      res.end()
    })
  })
  await startListening(server, port, address)
  return server
}
