/**
 * Which gateways each instance keeps a tunnel to: a primary and a backup (two different gateways
 * when two are alive, one when only one is). A gateway is alive when it said hello or reported
 * within the alive window (3 report intervals, at least 15 s).
 *
 * A new placement prefers alive gateways, in the container's region when it names one, then the
 * least loaded: the primary goes to the gateway with the fewest primaries, the backup to the one
 * with the fewest placements of either kind, so primaries and tunnels both spread evenly.
 *
 * The sweep (sweep()) keeps placements on alive gateways: a slot on a gateway that is not alive is
 * taken over by an alive one (a lost primary is replaced by the backup, which the container already
 * has a tunnel to), except while the instance's session on it is still fresh (a handshake within
 * the session window): a tunnel that is healthy is never moved. A missing backup is filled when a
 * second gateway is alive, which is how a returning gateway takes placements; nothing moves back.
 *
 * A draining gateway (`cloud-connect gateway drain`) is alive but takes no new placements, and the
 * sweep moves its slots as for a gateway that is not alive, with one difference: its session stays
 * fresh while it runs, so a slot on it is kept only while the instance has no fresh session on an
 * eligible gateway of its placement. The container gets the replacement as its other peer, connects
 * to it, and the next sweep lets go of the draining one: no tunnel is cut before its successor is up.
 *
 * The sweep also publishes what snapshots show: gateways.alive and gateway_sessions.live change
 * only here and on hello/report (sessions.ts), each time with a configuration version bump.
 */
import type { TunnelFleetPeer } from '../../proto/api/tunnel.ts'
import { PERSISTENT_KEEPALIVE_SECONDS } from '../../proto/api/tunnel.ts'
import { formatIPv4 } from '../../proto/wire/ipv4.ts'
import type { Db, Queryable } from '../db/knex.ts'
import { toAddress } from '../services/ipam.ts'
import { HANDSHAKE_FRESH_SECONDS } from '../services/tunnel.ts'
import { bumpConfigVersion } from '../db/notify.ts'
import { lastHeardSql } from '../db/gateways.ts'

/** The shortest alive window, whatever the report interval. */
export const MIN_ALIVE_WINDOW_MS = 15_000

export function aliveWindowMs (reportIntervalMs: number): number {
  return Math.max(3 * reportIntervalMs, MIN_ALIVE_WINDOW_MS)
}

export interface PlacementRow {
  instance_id: string
  primary_gateway: string
  backup_gateway: string | null
  placed_at: Date
}

/** An alive gateway and how many placements it carries. */
export interface GatewayLoad {
  id: string
  region: string | null
  primaries: number
  total: number
  /** Alive but draining: keeps what is placed on it for now, takes nothing new. */
  draining: boolean
}

export interface SweepResult {
  /** Gateways whose published `alive` changed. */
  gateways: number
  /** Sessions whose published `live` changed. */
  sessions: number
  /** Placements created or changed. */
  placements: number
  /** The configuration version after the sweep. */
  version: number | null
}

export interface PlacementOptions {
  db: Db
  now: () => Date
  aliveWindowMs: number
  /** A session this fresh pins an instance to its gateway; default HANDSHAKE_FRESH_SECONDS. */
  sessionWindowSeconds?: number
  /** host:port from configuration: its host names a gateway whose hello has no endpoint. */
  configuredEndpoint: string
}

interface GatewayPeerRow {
  id: string
  public_key: string
  endpoint: string | null
  listen_port: number
  region: string | null
  tunnel_address: string | number | null
}

export class PlacementService {
  readonly #o: PlacementOptions

  constructor (options: PlacementOptions) {
    this.#o = options
  }

  get aliveWindowMs (): number { return this.#o.aliveWindowMs }

  #aliveSince (): Date {
    return new Date(this.#o.now().getTime() - this.#o.aliveWindowMs)
  }

  #freshSince (): Date {
    return new Date(this.#o.now().getTime() - (this.#o.sessionWindowSeconds ?? HANDSHAKE_FRESH_SECONDS) * 1000)
  }

  /** Alive gateways (by their hello and report times, now) with their loads, by id. */
  async aliveGateways (db: Queryable = this.#o.db): Promise<GatewayLoad[]> {
    const rows = await db.raw(`
      select g.id, g.region, g.draining,
             (select count(*) from placements p where p.primary_gateway = g.id) as primaries,
             (select count(*) from placements p where p.primary_gateway = g.id or p.backup_gateway = g.id) as total
        from gateways g
       where ${lastHeardSql('g')} >= ? and g.tunnel_address is not null
       order by g.id`, [this.#aliveSince()])
    return (rows.rows as Array<{ id: string, region: string | null, draining: boolean, primaries: string | number, total: string | number }>)
      .map(r => ({ id: r.id, region: r.region, draining: r.draining, primaries: Number(r.primaries), total: Number(r.total) }))
  }

  async placementOf (db: Queryable, instanceId: string): Promise<PlacementRow | undefined> {
    return await db('placements').where({ instance_id: instanceId }).first() as PlacementRow | undefined
  }

  /**
   * The instance's placement; one is made if it has none and a gateway is alive (the caller's
   * transaction then carries a configuration version bump). Undefined: no gateway is alive.
   */
  async place (db: Queryable, instanceId: string, region: string | null = null): Promise<PlacementRow | undefined> {
    const existing = await this.placementOf(db, instanceId)
    if (existing !== undefined) return region === null ? existing : await this.#toRegion(db, existing, region)
    const choice = choose(await this.aliveGateways(db), region, new Set())
    if (choice.primary === undefined) return undefined
    const row: PlacementRow = { instance_id: instanceId, primary_gateway: choice.primary.id, backup_gateway: choice.backup?.id ?? null, placed_at: this.#o.now() }
    const inserted = await db('placements').insert(row).onConflict('instance_id').ignore().returning('instance_id') as unknown[]
    if (inserted.length === 0) return await this.placementOf(db, instanceId)
    await bumpConfigVersion(db)
    return row
  }

  /** The gateways placed for an instance as containers are told (primary first); [] when unplaced. */
  async fleetPeers (db: Queryable, placement: PlacementRow | undefined): Promise<TunnelFleetPeer[]> {
    if (placement === undefined) return []
    const ids = [placement.primary_gateway, placement.backup_gateway].filter((id): id is string => id !== null)
    const rows = await db('gateways').whereIn('id', ids).select('id', 'public_key', 'endpoint', 'listen_port', 'region', 'tunnel_address') as GatewayPeerRow[]
    const out: TunnelFleetPeer[] = []
    for (const [index, id] of ids.entries()) {
      const row = rows.find(r => r.id === id)
      if (row === undefined || row.tunnel_address === null) continue
      out.push({
        gateway_id: row.id,
        role: index === 0 ? 'primary' : 'backup',
        region: row.region,
        public_key: row.public_key,
        endpoint: row.endpoint ?? withPort(this.#o.configuredEndpoint, row.listen_port),
        allowed_ips: `${formatIPv4(toAddress(row.tunnel_address))}/32`,
        persistent_keepalive: PERSISTENT_KEEPALIVE_SECONDS,
      })
    }
    return out
  }

  /**
   * One pass: publishes gateway liveness and session liveness, re-places what sits on gateways that
   * are not alive, fills missing backups and places unplaced instances. Bumps the configuration
   * version once when anything changed. Safe to run from several control replicas at once.
   */
  async sweep (): Promise<SweepResult> {
    return await this.#o.db.transaction(async trx => {
      const gateways = await publishGatewayLiveness(trx, this.#aliveSince())
      const sessions = await publishSessionLiveness(trx, this.#freshSince(), null)
      const placements = await this.#replace(trx)
      const version = gateways + sessions + placements > 0 ? await bumpConfigVersion(trx) : null
      return { gateways, sessions, placements, version }
    })
  }

  async #replace (db: Queryable): Promise<number> {
    const alive = await this.aliveGateways(db)
    const aliveIds = new Set(alive.map(g => g.id))
    // Eligible: alive and not draining, the gateways a slot may move to.
    const eligibleIds = new Set(alive.filter(g => !g.draining).map(g => g.id))
    if (eligibleIds.size === 0) return 0
    const now = this.#o.now()
    // Placements touching a gateway that is not eligible, or lacking a backup while two gateways are eligible.
    const stale = await db('placements as p')
      .leftJoin('instances as i', 'i.id', 'p.instance_id')
      .where(q => {
        void q.whereNotIn('p.primary_gateway', [...eligibleIds])
          .orWhere(q2 => { void q2.whereNotNull('p.backup_gateway').whereNotIn('p.backup_gateway', [...eligibleIds]) })
        if (eligibleIds.size >= 2) void q.orWhereNull('p.backup_gateway')
      })
      .orderBy('p.instance_id')
      .select('p.*', 'i.region') as Array<PlacementRow & { region: string | null }>
    const fresh = await this.#freshSessions(db, stale.map(p => p.instance_id))
    let changed = 0
    for (const p of stale) {
      const pinned = fresh.get(p.instance_id) ?? new Set<string>()
      // A fresh session on an eligible gateway of this placement: the container can do without the others.
      const liveOnEligible = [p.primary_gateway, p.backup_gateway].some(id => id !== null && eligibleIds.has(id) && pinned.has(id))
      // A slot stays where it is while its gateway is eligible or the instance's session there is
      // fresh; on a draining gateway, only until a fresh session exists on an eligible one too.
      const keep = (id: string | null): id is string => id !== null &&
        (eligibleIds.has(id) || (pinned.has(id) && !(aliveIds.has(id) && liveOnEligible)))
      let primary: string | null = keep(p.primary_gateway) ? p.primary_gateway : null
      let backup: string | null = keep(p.backup_gateway) ? p.backup_gateway : null
      if (primary === null && backup !== null && aliveIds.has(backup)) {
        // The container already has a tunnel to the backup: it becomes the primary.
        primary = backup
        backup = null
      }
      const taken = new Set([primary, backup].filter((id): id is string => id !== null))
      const choice = choose(alive, p.region, taken)
      if (primary === null) {
        primary = choice.primary?.id ?? null
        if (primary !== null) taken.add(primary)
      }
      if (backup === null) backup = choose(alive, p.region, taken).backupOnly?.id ?? null
      if (primary === null) continue
      if (primary === p.primary_gateway && backup === p.backup_gateway) continue
      await db('placements').where({ instance_id: p.instance_id }).update({ primary_gateway: primary, backup_gateway: backup, placed_at: now })
      account(alive, p, -1)
      account(alive, { primary_gateway: primary, backup_gateway: backup }, +1)
      changed++
    }
    // Instances placed nowhere yet (created before the fleet, or while no gateway was alive).
    const unplaced = await db('instances as i').leftJoin('placements as p', 'p.instance_id', 'i.id').whereNull('p.instance_id').orderBy('i.id').select('i.id', 'i.region') as Array<{ id: string, region: string | null }>
    for (const { id: instanceId, region } of unplaced) {
      const choice = choose(alive, region, new Set())
      if (choice.primary === undefined) break
      const row = { instance_id: instanceId, primary_gateway: choice.primary.id, backup_gateway: choice.backup?.id ?? null, placed_at: now }
      const inserted = await db('placements').insert(row).onConflict('instance_id').ignore().returning('instance_id') as unknown[]
      if (inserted.length === 0) continue
      account(alive, row, +1)
      changed++
    }
    return changed
  }

  /**
   * A container that names its region at registration: an instance placed (at creation, before
   * anyone knew) outside that region moves to it when a gateway there is alive and takes
   * placements, unless a tunnel of the instance is live: a healthy tunnel is never moved.
   */
  async #toRegion (db: Queryable, p: PlacementRow, region: string): Promise<PlacementRow> {
    const alive = await this.aliveGateways(db)
    if (alive.find(g => g.id === p.primary_gateway)?.region === region) return p
    if (!alive.some(g => g.region === region && !g.draining)) return p
    if ((await this.#freshSessions(db, [p.instance_id])).get(p.instance_id) !== undefined) return p
    account(alive, p, -1)
    const choice = choose(alive, region, new Set())
    if (choice.primary === undefined) return p
    const row: PlacementRow = { instance_id: p.instance_id, primary_gateway: choice.primary.id, backup_gateway: choice.backup?.id ?? null, placed_at: this.#o.now() }
    await db('placements').where({ instance_id: p.instance_id }).update({ primary_gateway: row.primary_gateway, backup_gateway: row.backup_gateway, placed_at: row.placed_at })
    await bumpConfigVersion(db)
    return row
  }

  /** Per instance, the gateways where its current key had a handshake within the session window. */
  async #freshSessions (db: Queryable, instanceIds: string[]): Promise<Map<string, Set<string>>> {
    const out = new Map<string, Set<string>>()
    for (let i = 0; i < instanceIds.length; i += 500) {
      const rows = await db('gateway_sessions as s')
        .join('instances as i', 'i.id', 's.instance_id')
        .whereIn('s.instance_id', instanceIds.slice(i, i + 500))
        .whereRaw('s.public_key = i.public_key')
        .where('s.last_handshake_at', '>=', this.#freshSince())
        .select('s.instance_id', 's.gateway_id') as Array<{ instance_id: string, gateway_id: string }>
      for (const r of rows) {
        const set = out.get(r.instance_id) ?? new Set<string>()
        set.add(r.gateway_id)
        out.set(r.instance_id, set)
      }
    }
    return out
  }
}

/**
 * Primary: fewest primaries (then fewest placements); backup: fewest placements (then fewest
 * primaries); a gateway in `region` first; ids break ties; a draining gateway never. `backupOnly`: the backup choice when
 * the primary is fixed already (it is among `taken`).
 */
function choose (alive: GatewayLoad[], region: string | null, taken: Set<string>): { primary?: GatewayLoad, backup?: GatewayLoad, backupOnly?: GatewayLoad } {
  const free = alive.filter(g => !taken.has(g.id) && !g.draining)
  const inRegion = (g: GatewayLoad): number => region !== null && g.region === region ? 0 : 1
  const byPrimary = [...free].sort((a, b) => inRegion(a) - inRegion(b) || a.primaries - b.primaries || a.total - b.total || cmp(a.id, b.id))
  const byTotal = (pool: GatewayLoad[]): GatewayLoad[] => [...pool].sort((a, b) => inRegion(a) - inRegion(b) || a.total - b.total || a.primaries - b.primaries || cmp(a.id, b.id))
  const primary = byPrimary[0]
  const backup = primary === undefined ? undefined : byTotal(free.filter(g => g.id !== primary.id))[0]
  return { primary, backup, backupOnly: byTotal(free)[0] }
}

/** Keeps the in-memory loads in step while a sweep moves placements. */
function account (alive: GatewayLoad[], p: Pick<PlacementRow, 'primary_gateway' | 'backup_gateway'>, delta: number): void {
  for (const g of alive) {
    if (g.id === p.primary_gateway) { g.primaries += delta; g.total += delta }
    if (g.id === p.backup_gateway) g.total += delta
  }
}

function cmp (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** `host:port` with the port replaced (IPv6 literals keep their brackets). */
export function withPort (hostPort: string, port: number): string {
  const colon = hostPort.lastIndexOf(':')
  return `${colon === -1 ? hostPort : hostPort.slice(0, colon)}:${port}`
}

/** Sets gateways.alive from the hello and report times; returns how many changed. */
export async function publishGatewayLiveness (db: Queryable, aliveSince: Date): Promise<number> {
  const result = await db.raw(`
    update gateways set alive = not alive
     where alive <> (${lastHeardSql()} >= ?)
    returning id`, [aliveSince])
  return (result.rows as unknown[]).length
}

/**
 * Sets gateway_sessions.live (a handshake since `freshSince` for the instance's current key, on a
 * gateway published alive), for one gateway or all; returns how many changed.
 */
export async function publishSessionLiveness (db: Queryable, freshSince: Date, gatewayId: string | null): Promise<number> {
  const result = await db.raw(`
    update gateway_sessions s set live = v.live
      from (select s2.instance_id, s2.gateway_id,
                   coalesce(s2.last_handshake_at >= ? and g.alive and i.public_key = s2.public_key, false) as live
              from gateway_sessions s2
              join instances i on i.id = s2.instance_id
              left join gateways g on g.id = s2.gateway_id
             where ?::text is null or s2.gateway_id = ?::text) v
     where s.instance_id = v.instance_id and s.gateway_id = v.gateway_id and s.live <> v.live
    returning s.instance_id`, [freshSince, gatewayId, gatewayId])
  return (result.rows as unknown[]).length
}

/**
 * Marks a gateway draining (or not); false when no gateway has that id. Snapshots do not change;
 * placements follow at the next fleet sweep (one report interval).
 */
export async function setGatewayDraining (db: Queryable, gatewayId: string, draining: boolean): Promise<boolean> {
  const updated = await db('gateways').where({ id: gatewayId }).update({ draining })
  return Number(updated) > 0
}
