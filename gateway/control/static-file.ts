/**
 * The static control plane: the `--config FILE` peers served through the same ControlPlane
 * interface as a real control API. `replace()` (SIGHUP) publishes the file's new contents as the
 * next version and wakes the watcher; hello and reports go nowhere (the gateway's own /status and
 * /metrics show the same facts).
 */
import { RPC_PROTOCOL_VERSION, type ConfigSnapshot, type ControlPlane, type GatewayHello, type GatewayReport, type HelloReply, type ReportReply, type SnapshotPeer } from '../../proto/rpc/index.ts'
import { formatIPv4 } from '../../proto/wire/ipv4.ts'
import type { GatewayConfig } from '../config/schema.ts'
import { NO_HOSTNAMES, formatPrefix } from './apply.ts'

/** The snapshot a config file describes. */
export function snapshotFromConfig (config: GatewayConfig, version: number): ConfigSnapshot {
  return {
    version,
    gateway: { address: formatIPv4(config.address), listenPort: config.listenPort, publicKey: config.publicKey.toString('base64') },
    peers: config.peers.map((p, i): SnapshotPeer => {
      const tunnelIp = formatIPv4(p.tunnelIp ?? p.allowedIPs[0].network)
      const allowedIPs = p.allowedIPs.map(formatPrefix)
      const peer: SnapshotPeer = {
        instanceId: p.name ?? `peer${i}`,
        publicKey: p.publicKey.toString('base64'),
        tunnelIp,
        hostnames: p.hostnames === undefined || p.hostnames.length === 0 ? NO_HOSTNAMES : p.hostnames,
        port: p.port ?? 80,
        persistentKeepalive: p.persistentKeepalive,
      }
      // The plane keeps this snapshot for as long as it serves it: the usual `tunnelIp/32` is left
      // to its default (SnapshotPeer.allowedIPs) rather than stored again for every peer.
      if (allowedIPs.length !== 1 || allowedIPs[0] !== `${tunnelIp}/32`) peer.allowedIPs = allowedIPs
      if (p.endpoint !== null) peer.endpoint = p.endpoint.address.includes(':') ? `[${p.endpoint.address}]:${p.endpoint.port}` : `${p.endpoint.address}:${p.endpoint.port}`
      if (p.presharedKey !== null) peer.presharedKey = p.presharedKey.toString('base64')
      return peer
    }),
    ...(config.fleet.length > 0 ? { fleet: config.fleet } : {}),
    ...(config.routes.length > 0 ? { routes: config.routes } : {}),
  }
}

export class StaticControlPlane implements ControlPlane {
  #snapshot: ConfigSnapshot
  readonly #waiters = new Set<() => void>()
  /** The latest report, for inspection (tests, debugging). */
  lastReport: GatewayReport | null = null

  constructor (config: GatewayConfig) {
    this.#snapshot = snapshotFromConfig(config, 1)
  }

  get version (): number { return this.#snapshot.version }

  /** Publishes a reloaded file as the next version. */
  replace (config: GatewayConfig): void {
    this.#snapshot = snapshotFromConfig(config, this.#snapshot.version + 1)
    for (const wake of [...this.#waiters]) wake()
  }

  async watch (since: number | null, signal?: AbortSignal): Promise<ConfigSnapshot | null> {
    if (since !== this.#snapshot.version) return this.#snapshot
    if (signal?.aborted === true) return null
    return await new Promise(resolve => {
      const done = (): void => {
        this.#waiters.delete(done)
        signal?.removeEventListener('abort', done)
        resolve(since === this.#snapshot.version ? null : this.#snapshot)
      }
      this.#waiters.add(done)
      signal?.addEventListener('abort', done, { once: true })
    })
  }

  async hello (hello: GatewayHello): Promise<HelloReply> {
    return { protocol: RPC_PROTOCOL_VERSION, gatewayId: hello.gatewayId, reportIntervalMs: 60_000, configVersion: this.#snapshot.version }
  }

  async report (report: GatewayReport): Promise<ReportReply> {
    this.lastReport = report
    return { peers: report.peers.length, certificates: report.certificates.length }
  }
}
