/**
 * The gateways control has heard from, and what containers are told about them (the GatewayInfo
 * seam of services/tunnel.ts).
 *
 * - hello: the gateway's row (key, endpoint, region, relay listener), its tunnel address (allocated
 *   at the first hello and kept: services/ipam.ts allocateGateway) and `alive`; every hello bumps
 *   the configuration version (the fleet in snapshots may have changed).
 * - placedPeers: the gateways an instance is placed on (placement.ts), made at first use, as
 *   `tunnel_config.peers` and the heartbeat's `peers`.
 * - current: the gateway that said hello most recently, for callers that want one gateway without
 *   an instance. Until one has, the configured key and endpoint (CC_GATEWAY_PUBLIC_KEY,
 *   CC_GATEWAY_ENDPOINT) answer; with neither, instance creation answers 503 as before.
 *
 * A gateway that does not know its public name (hello endpoint null) is announced as the
 * configured endpoint's host with the gateway's own listen port.
 */
import type { TunnelFleetPeer } from '../../proto/api/tunnel.ts'
import { DEFAULT_REPORT_INTERVAL_MS, type GatewayHello } from '../../proto/rpc/index.ts'
import type { Db, Queryable } from '../db/knex.ts'
import type { IpamService } from '../services/ipam.ts'
import type { GatewayEndpoint, GatewayInfo } from '../services/tunnel.ts'
import { bumpConfigVersion } from '../db/notify.ts'
import { aliveWindowMs, PlacementService, withPort } from './placement.ts'

export { withPort } from './placement.ts'

export interface GatewayRow {
  id: string
  public_key: string
  endpoint: string | null
  listen_port: number
  protocol: number
  software: string | null
  hello_at: Date
  report_at: Date | null
  region: string | null
  relay_url: string | null
  relay_fingerprint: string | null
  /** Unsigned 32-bit; int8 arrives as a string from `pg`. */
  tunnel_address: string | number | null
  alive: boolean
}

export interface GatewayRegistryOptions {
  db: Db
  /** Allocates gateways' tunnel addresses from the instances' pool. */
  ipam: IpamService
  /** The configured answer (ConfiguredGateway) used until a gateway says hello. */
  fallback: GatewayInfo
  /** host:port from configuration: its host names a gateway whose hello has no endpoint. */
  configuredEndpoint: string
  now: () => Date
  /** The report interval gateways are told (the alive window is 3 of them, at least 15 s). */
  reportIntervalMs?: number
  /** How long a looked-up answer is reused (other control replicas may record hellos). */
  cacheMs?: number
}

export class GatewayRegistry implements GatewayInfo {
  readonly placement: PlacementService
  readonly #o: GatewayRegistryOptions
  #cached: { at: number, row: GatewayRow | undefined } | null = null

  constructor (options: GatewayRegistryOptions) {
    this.#o = options
    this.placement = new PlacementService({
      db: options.db,
      now: options.now,
      aliveWindowMs: aliveWindowMs(options.reportIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS),
      configuredEndpoint: options.configuredEndpoint,
    })
  }

  /** CC_GATEWAY_ENDPOINT: its host names a gateway whose hello has no endpoint. */
  get configuredEndpoint (): string { return this.#o.configuredEndpoint }

  async current (): Promise<GatewayEndpoint> {
    const row = await this.latest()
    if (row === undefined) return await this.#o.fallback.current()
    return { publicKey: row.public_key, endpoint: row.endpoint ?? withPort(this.#o.configuredEndpoint, row.listen_port) }
  }

  /** The gateway that said hello most recently, if any. */
  async latest (db: Queryable = this.#o.db): Promise<GatewayRow | undefined> {
    const now = Date.now()
    if (this.#cached !== null && now - this.#cached.at < (this.#o.cacheMs ?? 2_000)) return this.#cached.row
    const row = await db('gateways').orderBy([{ column: 'hello_at', order: 'desc' }, { column: 'id' }]).first() as GatewayRow | undefined
    this.#cached = { at: now, row }
    return row
  }

  async find (db: Queryable, gatewayId: string): Promise<GatewayRow | undefined> {
    return await db('gateways').where({ id: gatewayId }).first() as GatewayRow | undefined
  }

  /** Records a hello; returns the gateway's tunnel address (unsigned 32-bit). */
  async record (hello: GatewayHello): Promise<number> {
    const now = this.#o.now()
    const fields = {
      public_key: hello.publicKey,
      endpoint: hello.endpoint,
      listen_port: hello.listenPort,
      protocol: hello.protocol,
      software: hello.software ?? null,
      hello_at: now,
      region: hello.region ?? null,
      relay_url: hello.relayUrl ?? null,
      relay_fingerprint: hello.relayFingerprint ?? null,
      alive: true,
    }
    await this.#o.db('gateways').insert({ id: hello.gatewayId, ...fields }).onConflict('id').merge(Object.keys(fields))
    const address = await this.#o.ipam.allocateGateway(this.#o.db, hello.gatewayId)
    await bumpConfigVersion(this.#o.db)
    this.#cached = null
    return address
  }

  /** A report arrived: its time and how many peers it carried (the operator overview shows both). */
  async noteReport (gatewayId: string, peerCount: number, db: Queryable = this.#o.db): Promise<void> {
    await db('gateways').where({ id: gatewayId }).update({ report_at: this.#o.now(), report_peers: peerCount })
  }

  /** The instance's gateways, primary first, placing it when it has no placement yet; [] when no gateway is alive. */
  async placedPeers (db: Queryable, instanceId: string, region: string | null = null): Promise<TunnelFleetPeer[]> {
    const placement = await this.placement.place(db, instanceId, region)
    return await this.placement.fleetPeers(db, placement)
  }
}
