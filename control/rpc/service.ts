/**
 * Control's side of the gateway RPC as a ControlPlane (and, with a CertStoreService, the shared
 * CertificateStorePlane): the HTTP listener (server.ts) is a thin shell over it, and
 * `cloud-connect start` hands it to the in-process gateway directly. Messages are validated here,
 * so both paths accept exactly the same things.
 */
import type { Logger } from 'pino'
import {
  MAX_FLEET_GATEWAYS, RPC_PROTOCOL_VERSION, RpcError, validateCertificateLock, validateCertificateName, validateCertificatePut, validateCertificateUnlock,
  validateHello, validateReport,
  type CertificateLockReply, type CertificateLockRequest, type CertificateStorePlane, type CertificateUnlockRequest, type ConfigSnapshot,
  type ControlPlane, type GatewayHello, type GatewayReport, type HelloReply, type ReportReply, type SnapshotGateway, type StoredCertificate,
} from '../../proto/rpc/index.ts'
import { formatIPv4 } from '../../proto/wire/ipv4.ts'
import type { Db } from '../db/knex.ts'
import { isDatabaseUnavailable } from '../errors.ts'
import { CertStoreKeyError, type CertStoreService } from '../services/cert-store.ts'
import type { UsageService } from '../services/usage.ts'
import type { IpamService } from '../services/ipam.ts'
import { toAddress } from '../services/ipam.ts'
import type { TunnelService } from '../services/tunnel.ts'
import { bumpConfigVersion } from '../db/notify.ts'
import type { SweepResult } from './placement.ts'
import { withPort, type GatewayRegistry } from './registry.ts'
import { recordCertificateReports, recordPeerReports } from './reports.ts'
import { liveSessions, recordSessions } from './sessions.ts'
import { VersionWatcher } from './watcher.ts'

export interface RpcServiceOptions {
  db: Db
  tunnel: TunnelService
  ipam: IpamService
  registry: GatewayRegistry
  /** How long watch() waits for a change before answering "nothing new". */
  waitMs: number
  reportIntervalMs: number
  /** How often a waiting watch() rereads the configuration version (default 250 ms). */
  pollMs?: number
  /** The same while change notifications arrive (db/notify.ts; default 5 s, a safety net). */
  listeningPollMs?: number
  now: () => Date
  logger: Logger
  /** The shared certificate store; unset: its endpoints answer NOT_FOUND. */
  certificates?: CertStoreService
  /** CC_BASE_DOMAIN, sent in snapshots: the edge serves control's names under it. */
  baseDomain?: string
  /** Stores reported per-instance usage and access log; unset: they are dropped. */
  usage?: UsageService
}

export class RpcService implements ControlPlane, CertificateStorePlane {
  readonly watcher: VersionWatcher
  readonly #o: RpcServiceOptions

  constructor (options: RpcServiceOptions) {
    this.#o = options
    this.watcher = new VersionWatcher(async () => await options.tunnel.configVersion(), { pollMs: options.pollMs, listeningPollMs: options.listeningPollMs, logger: options.logger })
  }

  get waitMs (): number { return this.#o.waitMs }

  /**
   * The current configuration. Without `gatewayId`: every registered peer with its hostnames (one
   * gateway, or one older than the fleet). With it: that gateway's own address, only the peers
   * placed on it, the fleet and the routes (fleetSnapshot). SERVICE_UNAVAILABLE for a gateway that
   * has not said hello (it says hello and asks again).
   */
  async snapshot (gatewayId?: string): Promise<ConfigSnapshot> {
    return await guard(async () => {
      if (gatewayId !== undefined) return await this.#fleetSnapshot(gatewayId)
      const { version, peers } = await this.#o.tunnel.configSnapshot()
      return { version, gateway: await this.#gatewaySection(), peers }
    })
  }

  /** ControlPlane.watch, for gateway `gatewayId` when given (the `gateway=` query). */
  async watch (since: number | null, signal?: AbortSignal, gatewayId?: string): Promise<ConfigSnapshot | null> {
    if (since !== null) {
      const version = await guard(async () => await this.#o.tunnel.configVersion())
      if (version === since) {
        const changed = await this.watcher.wait(since, this.#o.waitMs, signal)
        if (!changed) return null
      }
    }
    return await this.snapshot(gatewayId)
  }

  /**
   * Placement and liveness housekeeping (placement.ts sweep); wakes waiting long-polls when it
   * changed anything. Runs periodically (startFleetSweep) and from tests with their own clock.
   */
  async sweep (): Promise<SweepResult> {
    const result = await guard(async () => await this.#o.registry.placement.sweep())
    if (result.version !== null) this.watcher.poke()
    return result
  }

  async hello (message: GatewayHello): Promise<HelloReply> {
    const hello = validateHello(message)
    checkProtocol(hello.protocol)
    const address = await guard(async () => await this.#o.registry.record(hello))
    this.watcher.poke()
    this.#o.logger.info({ gatewayId: hello.gatewayId, publicKey: hello.publicKey, endpoint: hello.endpoint, listenPort: hello.listenPort, region: hello.region, relayUrl: hello.relayUrl, address: formatIPv4(address) }, 'gateway hello')
    return {
      protocol: RPC_PROTOCOL_VERSION,
      gatewayId: hello.gatewayId,
      reportIntervalMs: this.#o.reportIntervalMs,
      configVersion: await guard(async () => await this.#o.tunnel.configVersion()),
    }
  }

  async report (message: GatewayReport): Promise<ReportReply> {
    const report = validateReport(message)
    checkProtocol(report.protocol)
    const now = this.#o.now()
    const reply = await guard(async () => {
      const peers = await recordPeerReports(this.#o.db, report.peers, now)
      const certificates = await recordCertificateReports(this.#o.db, report.gatewayId, report.certificates, now)
      const changed = await this.#o.db.transaction(async trx => {
        await this.#o.registry.noteReport(report.gatewayId, report.peers.length, trx)
        const freshSince = new Date(now.getTime() - this.#o.tunnel.statusWindowSeconds * 1000)
        const live = await recordSessions(trx, report.gatewayId, report.peers, now, freshSince)
        if (live) await bumpConfigVersion(trx)
        // In the same transaction: a report that fails is sent again whole, and must not count twice.
        await this.#o.usage?.record(trx, report.usage ?? [], report.accessLog ?? [], now)
        return live
      })
      return { reply: { peers, certificates }, changed }
    })
    if (reply.changed) this.watcher.poke()
    if (report.accessLogDropped !== undefined && report.accessLogDropped > 0) {
      this.#o.logger.warn({ gatewayId: report.gatewayId, dropped: report.accessLogDropped }, 'a gateway dropped access-log entries it could not report in time')
    }
    return reply.reply
  }

  async getCertificate (name: string): Promise<StoredCertificate | null> {
    const request = validateCertificateName({ name })
    return await this.#certificates(async store => await store.get(request.name))
  }

  async putCertificate (certificate: StoredCertificate): Promise<void> {
    const request = validateCertificatePut({ certificate })
    await this.#certificates(async store => { await store.put(request.certificate) })
  }

  async deleteCertificate (name: string): Promise<boolean> {
    const request = validateCertificateName({ name })
    return await this.#certificates(async store => await store.delete(request.name))
  }

  async listCertificates (): Promise<string[]> {
    return await this.#certificates(async store => await store.list())
  }

  async lockCertificate (message: CertificateLockRequest): Promise<CertificateLockReply> {
    const request = validateCertificateLock(message)
    const result = await this.#certificates(async store => await store.lock(request.name, request.holder, request.ttlMs))
    return { acquired: result.acquired, expiresAt: result.expiresAt.toISOString() }
  }

  async unlockCertificate (message: CertificateUnlockRequest): Promise<boolean> {
    const request = validateCertificateUnlock(message)
    return await this.#certificates(async store => await store.unlock(request.name, request.holder))
  }

  async #certificates<T> (body: (store: CertStoreService) => Promise<T>): Promise<T> {
    const store = this.#o.certificates
    if (store === undefined) throw new RpcError('NOT_FOUND', 'this control plane keeps no certificate store')
    try {
      return await guard(async () => await body(store))
    } catch (err) {
      if (err instanceof CertStoreKeyError) {
        this.#o.logger.error({ err: err.message }, 'certificate store key problem')
        throw new RpcError('INTERNAL_ERROR', `certificate store: ${err.message}`)
      }
      throw err
    }
  }

  /** Ends every pending watch (they answer "nothing new"). */
  close (): void {
    this.watcher.close()
  }

  /** One repeatable-read transaction: the version describes exactly what is read. */
  async #fleetSnapshot (gatewayId: string): Promise<ConfigSnapshot> {
    return await this.#o.db.transaction(async trx => {
      const version = await this.#o.tunnel.configVersion(trx)
      const row = await this.#o.registry.find(trx, gatewayId)
      if (row === undefined || row.tunnel_address === null) throw new RpcError('SERVICE_UNAVAILABLE', `no hello from gateway ${gatewayId} yet: say hello first`, { gatewayId })
      const gateway: SnapshotGateway = {
        address: formatIPv4(toAddress(row.tunnel_address)),
        listenPort: row.listen_port,
        publicKey: row.public_key,
      }
      // Port 0: the gateway introduced itself before binding (gateway/control/run.ts); its own
      // hello with the bound port follows.
      if (row.endpoint !== null || row.listen_port !== 0) gateway.endpoint = row.endpoint ?? withPort(this.#o.registry.configuredEndpoint, row.listen_port)
      if (this.#o.baseDomain !== undefined) gateway.baseDomain = this.#o.baseDomain
      const all = await this.#o.tunnel.listPeers(trx)
      const placed = new Set(await trx('placements')
        .where({ primary_gateway: gatewayId }).orWhere({ backup_gateway: gatewayId })
        .pluck('instance_id') as string[])
      const sessions = await liveSessions(trx)
      const fleetRows = await trx('gateways').where({ alive: true }).whereNotNull('relay_url').whereNotNull('relay_fingerprint')
        .orderBy('id').limit(MAX_FLEET_GATEWAYS).select('id', 'relay_url', 'relay_fingerprint', 'region') as Array<{ id: string, relay_url: string, relay_fingerprint: string, region: string | null }>
      return {
        version,
        gateway,
        peers: all.filter(p => placed.has(p.instanceId)),
        fleet: fleetRows.map(g => ({ id: g.id, relayUrl: g.relay_url, relayFingerprint: g.relay_fingerprint, region: g.region })),
        routes: all.map(p => ({ instanceId: p.instanceId, hostnames: p.hostnames, gateways: (sessions.get(p.instanceId) ?? []).slice(0, MAX_FLEET_GATEWAYS) })),
      }
    }, { isolationLevel: 'repeatable read' })
  }

  async #gatewaySection (): Promise<SnapshotGateway> {
    const section: SnapshotGateway = { address: formatIPv4(this.#o.ipam.pool.gatewayAddress), listenPort: 0 }
    if (this.#o.baseDomain !== undefined) section.baseDomain = this.#o.baseDomain
    const latest = await this.#o.registry.latest()
    try {
      const known = await this.#o.registry.current()
      section.publicKey = known.publicKey
      section.endpoint = known.endpoint
      section.listenPort = Number(known.endpoint.slice(known.endpoint.lastIndexOf(':') + 1))
    } catch {
      // No gateway known yet: the gateway learns its address only.
    }
    if (latest !== undefined) section.listenPort = latest.listen_port
    return section
  }
}

function checkProtocol (protocol: number): void {
  if (protocol !== RPC_PROTOCOL_VERSION) {
    throw new RpcError('PROTOCOL_MISMATCH', `control speaks RPC protocol ${RPC_PROTOCOL_VERSION}, the gateway ${protocol}`, { expected: RPC_PROTOCOL_VERSION, got: protocol })
  }
}

/** Database trouble as RpcError: unreachable -> SERVICE_UNAVAILABLE (the gateway retries). */
async function guard<T> (body: () => Promise<T>): Promise<T> {
  try {
    return await body()
  } catch (err) {
    if (err instanceof RpcError) throw err
    if (isDatabaseUnavailable(err)) throw new RpcError('SERVICE_UNAVAILABLE', 'database unreachable')
    throw err
  }
}
