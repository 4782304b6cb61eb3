/**
 * The gateways control has heard from, and what containers are told about the gateway
 * (the GatewayInfo seam of services/tunnel.ts): the public key and endpoint of the gateway that
 * said hello most recently. Until one has, the configured key and endpoint (CC_GATEWAY_PUBLIC_KEY,
 * CC_GATEWAY_ENDPOINT) answer; with neither, instance creation answers 503 as before.
 *
 * A gateway that does not know its public name (hello endpoint null) is announced as the
 * configured endpoint's host with the gateway's own listen port.
 */
import type { GatewayHello } from '../../proto/rpc/index.ts'
import type { Db, Queryable } from '../db/knex.ts'
import type { GatewayEndpoint, GatewayInfo } from '../services/tunnel.ts'

export interface GatewayRow {
  id: string
  public_key: string
  endpoint: string | null
  listen_port: number
  protocol: number
  software: string | null
  hello_at: Date
  report_at: Date | null
}

export interface GatewayRegistryOptions {
  db: Db
  /** The configured answer (ConfiguredGateway) used until a gateway says hello. */
  fallback: GatewayInfo
  /** host:port from configuration: its host names a gateway whose hello has no endpoint. */
  configuredEndpoint: string
  now: () => Date
  /** How long a looked-up answer is reused (other control replicas may record hellos). */
  cacheMs?: number
}

export class GatewayRegistry implements GatewayInfo {
  readonly #o: GatewayRegistryOptions
  #cached: { at: number, row: GatewayRow | undefined } | null = null

  constructor (options: GatewayRegistryOptions) {
    this.#o = options
  }

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

  async record (hello: GatewayHello): Promise<void> {
    const now = this.#o.now()
    await this.#o.db('gateways').insert({
      id: hello.gatewayId,
      public_key: hello.publicKey,
      endpoint: hello.endpoint,
      listen_port: hello.listenPort,
      protocol: hello.protocol,
      software: hello.software ?? null,
      hello_at: now,
    }).onConflict('id').merge(['public_key', 'endpoint', 'listen_port', 'protocol', 'software', 'hello_at'])
    this.#cached = null
  }

  /** A report arrived: its time and how many peers it carried (the operator overview shows both). */
  async noteReport (gatewayId: string, peerCount: number): Promise<void> {
    await this.#o.db('gateways').where({ id: gatewayId }).update({ report_at: this.#o.now(), report_peers: peerCount })
  }
}

/** `host:port` with the port replaced (IPv6 literals keep their brackets). */
export function withPort (hostPort: string, port: number): string {
  const colon = hostPort.lastIndexOf(':')
  return `${colon === -1 ? hostPort : hostPort.slice(0, colon)}:${port}`
}
