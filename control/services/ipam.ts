/**
 * Tunnel address management. Every instance holds one IPv4 address from the pool (CC_TUNNEL_POOL,
 * default 10.100.0.0/16): never the network or broadcast address, never a gateway's address. The
 * first gateway has the pool's first host (so do existing containers' AllowedIPs); later gateways
 * take addresses from the top of the pool downward (allocateGateway), held in tunnel_ips rows with
 * `gateway_id`, which instance allocation never claims.
 *
 * Allocation is race-free without a global lock:
 *   1. Never-used addresses first, in order, from a database sequence (nextval never hands the same
 *      value to two transactions, even concurrent ones). Values burnt by a rolled-back transaction
 *      leave never-used gaps that step 2 finds later.
 *   2. When the sequence has run past the pool: the free address that was released longest ago
 *      (never-used gaps first), but only once it has been out of use for the quarantine
 *      (CC_TUNNEL_IP_QUARANTINE, default 24 h), so traffic or DNS caches aimed at a deleted instance
 *      never reach the next owner of its address.
 *   3. The claim itself is one `insert ... on conflict (address) do update ... where free` on the
 *      primary key: two transactions that pick the same candidate cannot both get it (the second
 *      waits for the first and then finds the row taken); the loser picks again.
 */
import type { Queryable } from '../db/knex.ts'
import { apiError } from '../errors.ts'
import { formatIPv4, parseIPv4Prefix } from '../../proto/wire/ipv4.ts'

/** The pool and its fixed addresses, as unsigned 32-bit numbers. */
export class TunnelPool {
  readonly cidr: string
  readonly network: number
  readonly prefixLength: number
  readonly broadcast: number
  /** First host: the gateway's address inside the tunnel network. */
  readonly gatewayAddress: number
  readonly firstAllocatable: number
  readonly lastAllocatable: number

  constructor (cidr: string) {
    const prefix = parseIPv4Prefix(cidr)
    if (prefix.prefixLength > 30) throw new Error(`tunnel pool ${cidr} is too small: /30 is the smallest`)
    this.cidr = `${formatIPv4(prefix.network)}/${prefix.prefixLength}`
    this.network = prefix.network
    this.prefixLength = prefix.prefixLength
    this.broadcast = (prefix.network | (~prefix.mask >>> 0)) >>> 0
    this.gatewayAddress = prefix.network + 1
    this.firstAllocatable = prefix.network + 2
    this.lastAllocatable = this.broadcast - 1
  }

  get size (): number {
    return this.lastAllocatable - this.firstAllocatable + 1
  }

  contains (address: number): boolean {
    return address >= this.firstAllocatable && address <= this.lastAllocatable
  }
}

/** Postgres int8 arrives as a string from `pg` and as a number or bigint from PGlite. */
export function toAddress (value: string | number | bigint): number {
  return Number(value)
}

const MAX_ATTEMPTS = 16
/** Fallback candidates read on a retry; one is chosen at random so racing creators spread out. */
const FALLBACK_BATCH = 8

export interface IpamOptions {
  pool: TunnelPool
  quarantineSeconds: number
  now: () => Date
}

export class IpamService {
  readonly pool: TunnelPool
  readonly #quarantineMs: number
  readonly #now: () => Date

  constructor (options: IpamOptions) {
    this.pool = options.pool
    this.#quarantineMs = options.quarantineSeconds * 1000
    this.#now = options.now
  }

  /**
   * Leases an address to `instanceId` (an instance row that exists in `db`'s transaction) and
   * returns it. 503 SERVICE_UNAVAILABLE when the pool has no address out of quarantine.
   */
  async allocate (db: Queryable, instanceId: string): Promise<number> {
    const now = this.#now()
    const cutoff = new Date(now.getTime() - this.#quarantineMs)
    let sequenceExhausted = false
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let candidate: number | undefined
      if (!sequenceExhausted) {
        candidate = await this.#nextNeverUsed(db)
        if (candidate === undefined) sequenceExhausted = true
      }
      if (candidate === undefined) candidate = await this.#oldestFree(db, cutoff, attempt > 0)
      if (candidate === undefined) break
      if (await this.#claim(db, candidate, 'instance_id', instanceId, now, cutoff)) return candidate
    }
    throw apiError('SERVICE_UNAVAILABLE', 'No tunnel address is available right now, try again later', {}, { 'retry-after': '3600' })
  }

  /** Ends `instanceId`'s lease; the address enters quarantine now. Returns it, if there was one. */
  async release (db: Queryable, instanceId: string): Promise<number | undefined> {
    const rows = await db('tunnel_ips').where({ instance_id: instanceId })
      .update({ instance_id: null, released_at: this.#now() })
      .returning('address') as Array<{ address: string | number }>
    return rows.length === 0 ? undefined : toAddress(rows[0].address)
  }

  async addressOf (db: Queryable, instanceId: string): Promise<number | undefined> {
    const row = await db('tunnel_ips').where({ instance_id: instanceId }).first('address') as { address: string | number } | undefined
    return row === undefined ? undefined : toAddress(row.address)
  }

  async #nextNeverUsed (db: Queryable): Promise<number | undefined> {
    const result = await db.raw("select nextval('tunnel_ip_cursor') as n")
    const offset = Number((result.rows as Array<{ n: string | number }>)[0].n)
    const address = this.pool.firstAllocatable + offset
    return address <= this.pool.lastAllocatable ? address : undefined
  }

  /**
   * A free address out of quarantine: never-used gaps first, then the longest released. After a
   * lost claim (`spread`), one of the best few at random, so racing transactions stop colliding.
   */
  async #oldestFree (db: Queryable, cutoff: Date, spread: boolean): Promise<number | undefined> {
    const result = await db.raw(`
      select g.a as address
        from generate_series(?::bigint, ?::bigint) as g(a)
        left join tunnel_ips t on t.address = g.a
       where t.address is null or (t.instance_id is null and t.gateway_id is null and (t.released_at is null or t.released_at <= ?))
       order by t.released_at nulls first, g.a
       limit ?`, [this.pool.firstAllocatable, this.pool.lastAllocatable, cutoff, spread ? FALLBACK_BATCH : 1])
    const rows = result.rows as Array<{ address: string | number }>
    if (rows.length === 0) return undefined
    return toAddress(rows[Math.floor(Math.random() * rows.length)].address)
  }

  /**
   * Takes `address` for instance or gateway `holderId` if nobody holds it and it is out of
   * quarantine; false if someone beat us to it.
   */
  async #claim (db: Queryable, address: number, column: 'instance_id' | 'gateway_id', holderId: string, now: Date, cutoff: Date): Promise<boolean> {
    const result = await db.raw(`
      insert into tunnel_ips (address, ??, assigned_at, released_at) values (?, ?, ?, null)
      on conflict (address) do update
         set ?? = excluded.??, assigned_at = excluded.assigned_at, released_at = null
       where tunnel_ips.instance_id is null and tunnel_ips.gateway_id is null and (tunnel_ips.released_at is null or tunnel_ips.released_at <= ?)
      returning address`, [column, address, holderId, now, column, column, cutoff])
    return (result.rows as unknown[]).length === 1
  }

  /**
   * The tunnel address of gateway `gatewayId` (a `gateways` row): the one it has, else the pool's
   * first host when no gateway holds it, else the highest free address out of quarantine. Safe
   * against concurrent hellos (unique indexes decide; the loser takes the next candidate).
   */
  async allocateGateway (db: Queryable, gatewayId: string): Promise<number> {
    const now = this.#now()
    const cutoff = new Date(now.getTime() - this.#quarantineMs)
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const held = await db('gateways').where({ id: gatewayId }).first('tunnel_address') as { tunnel_address: string | number | null } | undefined
      if (held === undefined) throw new Error(`gateway ${gatewayId} is not recorded`)
      if (held.tunnel_address !== null) return toAddress(held.tunnel_address)
      try {
        const firstTaken = await db('gateways').where({ tunnel_address: this.pool.gatewayAddress }).first('id')
        if (firstTaken === undefined) {
          await db('gateways').where({ id: gatewayId }).whereNull('tunnel_address').update({ tunnel_address: this.pool.gatewayAddress })
          continue
        }
        const candidate = await this.#highestFree(db, cutoff)
        if (candidate === undefined) break
        if (await this.#claim(db, candidate, 'gateway_id', gatewayId, now, cutoff)) {
          await db('gateways').where({ id: gatewayId }).whereNull('tunnel_address').update({ tunnel_address: candidate })
        }
      } catch (err) {
        // Another hello took the same address first (or this gateway's own concurrent hello did).
        if ((err as { code?: unknown }).code !== '23505') throw err
      }
    }
    throw new Error('no tunnel address is free for a gateway')
  }

  /** Gateway addresses (every gateway that has one), for checks and the operator. */
  async gatewayAddresses (db: Queryable): Promise<Map<string, number>> {
    const rows = await db('gateways').whereNotNull('tunnel_address').select('id', 'tunnel_address') as Array<{ id: string, tunnel_address: string | number }>
    return new Map(rows.map(r => [r.id, toAddress(r.tunnel_address)]))
  }

  async #highestFree (db: Queryable, cutoff: Date): Promise<number | undefined> {
    const result = await db.raw(`
      select g.a as address
        from generate_series(?::bigint, ?::bigint, -1) as g(a)
        left join tunnel_ips t on t.address = g.a
       where t.address is null or (t.instance_id is null and t.gateway_id is null and (t.released_at is null or t.released_at <= ?))
       order by g.a desc
       limit 1`, [this.pool.lastAllocatable, this.pool.firstAllocatable, cutoff])
    const rows = result.rows as Array<{ address: string | number }>
    return rows.length === 0 ? undefined : toAddress(rows[0].address)
  }
}
