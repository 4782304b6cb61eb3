/**
 * The gateway process wiring: WireGuard device + UDP shell + IP layer from a validated config, and
 * the small HTTP server for `GET /metrics` (Prometheus text) and `GET /status` (JSON).
 *
 *   UDP socket -> UdpShell -> Device -> IpLayer -> protocol handlers (TCP registers protocol 6)
 *   IpLayer.send -> UdpShell.sendPacket -> Device (route by destination) -> UDP socket
 */
import http from 'node:http'
import type { Logger } from 'pino'
import { Metrics } from './metrics.ts'
import { Device, formatEndpoint, type PeerStatus } from './wireguard/device.ts'
import { UdpShell, monotonicNow, wallClockOffset } from './wireguard/udp.ts'
import { IpLayer } from './netstack/ip.ts'
import type { GatewayConfig, PeerConfig } from './config/schema.ts'
import { encodeKey } from '../proto/noise/index.ts'
import { formatIPv4 } from '../proto/wire/ipv4.ts'
import type { FaultStats } from './netstack/fault.ts'

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
}

export class Gateway {
  readonly config: GatewayConfig
  readonly logger: Logger
  readonly metrics: Metrics
  readonly device: Device
  readonly ip: IpLayer
  readonly shell: UdpShell
  private readonly startedAt = monotonicNow()
  private listenText = ''
  private httpServer: http.Server | null = null

  private constructor (config: GatewayConfig, logger: Logger, metrics: Metrics) {
    this.config = config
    this.logger = logger
    this.metrics = metrics
    this.shell = new UdpShell({
      listenAddress: config.listenAddress,
      listenPort: config.listenPort,
      faults: config.faults,
      logger: logger.child({ module: 'udp' }),
    })
    this.ip = new IpLayer({
      address: config.address,
      metrics,
      send: datagram => { this.shell.sendPacket(datagram) },
      logger: logger.child({ module: 'ip' }),
    })
    const shell = this.shell
    const ip = this.ip
    this.device = new Device({
      privateKey: config.privateKey,
      metrics,
      logger: logger.child({ module: 'wireguard' }),
      wallClockOffset: wallClockOffset(),
      underLoadHandshakesPerSecond: config.dos.underLoadHandshakesPerSecond,
      rateLimitPerSecond: config.dos.rateLimitPerSecond,
      rateLimitBurst: config.dos.rateLimitBurst,
      testingRekeyAfterTime: config.testing.rekeyAfterTimeMs,
      io: {
        sendDatagram (datagram, address, port) { shell.sendDatagram(datagram, address, port) },
        deliverPacket (packet, _peer, now) { ip.input(packet, now) },
      },
    })
    this.shell.attach(this.device)
    for (const peer of config.peers) this.device.addPeer(peer)
  }

  /** Builds the gateway and binds its sockets (UDP, then the optional metrics HTTP server). */
  static async start (config: GatewayConfig, logger: Logger, metrics = new Metrics()): Promise<Gateway> {
    const gw = new Gateway(config, logger, metrics)
    const bound = await gw.shell.listen()
    gw.listenText = formatEndpoint(bound.address, bound.port)
    if (config.metricsListen !== null) {
      try {
        gw.httpServer = await serveStatus(gw, config.metricsListen.address, config.metricsListen.port)
      } catch (err) {
        await gw.shell.close()
        throw err
      }
    }
    if (config.testing.rekeyAfterTimeMs !== undefined) {
      logger.warn({ rekeyAfterTimeMs: config.testing.rekeyAfterTimeMs }, 'TEST SETTING: sessions rekey early; never use in production')
    }
    if (config.faults !== null) logger.warn({ faults: config.faults }, 'TEST SETTING: datagram fault injection is on')
    return gw
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
        this.device.removePeer(peer.publicKey)
        removed++
      }
    }
    for (const [name, p] of wanted) {
      if (this.device.peer(name) === undefined) {
        this.device.addPeer(p)
        added++
      } else {
        this.device.updatePeer(p)
        updated++
      }
    }
    this.device.updateTimers(monotonicNow())
    return { added, updated, removed }
  }

  status (): GatewayStatus {
    const now = monotonicNow()
    return {
      publicKey: encodeKey(this.device.publicKey),
      listen: this.listenText,
      address: formatIPv4(this.config.address),
      underLoad: this.device.underLoad(now),
      uptimeMs: Math.round(now - this.startedAt),
      peers: [...this.device.peers.values()].map(p => this.device.peerStatus(p, now)),
      counters: this.metrics.snapshot(),
      faults: this.shell.faultStats(),
    }
  }

  /** Prometheus text: every counter family, plus per-peer gauges. */
  prometheus (): string {
    const now = monotonicNow()
    const lines = [this.metrics.toPrometheus().trimEnd()]
    const gauges: Array<[string, string, (s: PeerStatus) => number]> = [
      ['cc_wg_peer_rx_bytes', 'Bytes received from the peer', s => s.rxBytes],
      ['cc_wg_peer_tx_bytes', 'Bytes sent to the peer', s => s.txBytes],
      ['cc_wg_peer_rx_packets', 'Datagrams received from the peer', s => s.rxPackets],
      ['cc_wg_peer_tx_packets', 'Datagrams sent to the peer', s => s.txPackets],
      ['cc_wg_peer_last_handshake_seconds', 'Unix time of the last handshake (0 = never)', s => (s.lastHandshakeAt ?? 0) / 1000],
    ]
    const statuses = [...this.device.peers.values()].map(p => this.device.peerStatus(p, now))
    for (const [name, help, value] of gauges) {
      lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} gauge`)
      for (const s of statuses) lines.push(`${name}{peer="${s.publicKey}"} ${value(s)}`)
    }
    lines.push('# HELP cc_wg_peers Configured peers', '# TYPE cc_wg_peers gauge', `cc_wg_peers ${statuses.length}`)
    return lines.join('\n') + '\n'
  }

  async close (): Promise<void> {
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
    try {
      if (path === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(gw.prometheus())
      } else if (path === '/status') {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(gw.status()))
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
      }
    } catch (err) {
      gw.logger.error({ err }, 'status request failed')
      res.writeHead(500).end()
    }
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, address, () => {
      server.off('error', reject)
      resolve()
    })
  })
  return server
}
