/**
 * Per-instance edge traffic, as gateways report it (gateway/edge/traffic.ts): hourly usage (bytes
 * in and out, requests) and the access log. Written from the gateway RPC (rpc/service.ts), read
 * by the instance's owner (routes/usage.ts), pruned by a periodic job (jobs/traffic.ts).
 *
 * - Usage rows are added to (upsert), so reports from several gateways and several reports per
 *   hour sum up. Rows for instances that no longer exist are skipped, never an error.
 * - Client addresses are truncated to their /24 (IPv4) or /48 (IPv6) before they are stored,
 *   unless the operator keeps full addresses (CC_ACCESS_LOG_FULL_ADDRESSES): an owner learns the
 *   network a visitor came from, not the visitor.
 * - The access log is read newest first with an opaque keyset cursor over (at, id): stable while
 *   new rows arrive.
 * - Another user's instance is answered like a missing one (404), as everywhere else.
 */
import net from 'node:net'
import type { AccessLogEntry, AccessLogResponse, InstanceUsageResponse, UsageBucket } from '../../proto/api/instances.ts'
import type { AccessLogReport, UsageReport } from '../../proto/rpc/index.ts'
import type { TrafficConfig } from '../config.ts'
import type { Db, Queryable } from '../db/knex.ts'
import { apiError } from '../errors.ts'
import { ID_PREFIX, looksLikeId } from '../ids.ts'
import { isoSeconds } from '../time.ts'

const HOUR_MS = 3_600_000
const DAY_MS = 24 * HOUR_MS
/** Rows per statement when reports are written. */
const CHUNK = 500
/** Access-log rows deleted per statement by prune(), and statements per run. */
const PRUNE_BATCH = 10_000
const PRUNE_MAX_BATCHES = 100

/** The longest range GET /usage answers. */
export const MAX_USAGE_RANGE_DAYS = 92
/** GET /usage without `from`: this far back from `to`. */
export const DEFAULT_USAGE_RANGE_MS = DAY_MS
export const ACCESS_LOG_DEFAULT_LIMIT = 100
export const ACCESS_LOG_MAX_LIMIT = 500

/** Groups of an IPv6 address (8 numbers), or null. Accepts every text form, embedded IPv4 included. */
function ipv6Groups (address: string): number[] | null {
  if (!net.isIPv6(address)) return null
  // The WHATWG URL serializer writes the canonical form (RFC 5952), embedded IPv4 as hex groups.
  const canonical = new URL(`http://[${address}]`).hostname.slice(1, -1)
  const [head, tail] = canonical.includes('::') ? canonical.split('::') : [canonical, undefined]
  const left = head === '' ? [] : head.split(':')
  const right = tail === undefined || tail === '' ? [] : tail.split(':')
  const zeros = tail === undefined ? 0 : 8 - left.length - right.length
  return [...left, ...Array.from({ length: zeros }, () => '0'), ...right].map(g => parseInt(g, 16))
}

function formatIPv6 (groups: number[]): string {
  return new URL(`http://[${groups.map(g => g.toString(16)).join(':')}]`).hostname.slice(1, -1)
}

/**
 * The network a client address belongs to: IPv4 to its /24 (`203.0.113.0`), IPv6 to its /48
 * (`2001:db8:abcd::`); an IPv4-mapped IPv6 address counts as IPv4. Not an address: null.
 */
export function truncateClientAddress (address: string): string | null {
  const plain = address.replace(/%.*$/, '') // an IPv6 zone names our interface, not the client
  if (net.isIPv4(plain)) return plain.replace(/\.\d+$/, '.0')
  const groups = ipv6Groups(plain)
  if (groups === null) return null
  if (groups.slice(0, 6).every((g, i) => g === (i === 5 ? 0xffff : 0))) {
    return `${groups[6] >> 8}.${groups[6] & 0xff}.${groups[7] >> 8}.0`
  }
  return formatIPv6([groups[0], groups[1], groups[2], 0, 0, 0, 0, 0])
}

/** What is stored for a reported client address. */
export function storedClientAddress (address: string, full: boolean): string | null {
  if (!full) return truncateClientAddress(address)
  const plain = address.replace(/%.*$/, '')
  if (net.isIPv4(plain)) return plain
  const groups = ipv6Groups(plain)
  return groups === null ? null : formatIPv6(groups)
}

/** A gateway's time, never later than control's `now`. */
function notAfter (ms: number, now: Date): number {
  return Math.min(ms, now.getTime())
}

function cursorOf (at: Date, id: string): string {
  return Buffer.from(JSON.stringify([at.toISOString(), id])).toString('base64url')
}

function parseCursor (cursor: string): { at: Date, id: string } {
  try {
    const [at, id] = JSON.parse(Buffer.from(cursor, 'base64url').toString()) as unknown[]
    if (typeof at === 'string' && typeof id === 'string' && /^\d{1,19}$/.test(id) && Number.isFinite(Date.parse(at))) return { at: new Date(at), id }
  } catch {}
  throw apiError('VALIDATION_ERROR', 'The request data is invalid', { fields: { cursor: ['is not a cursor this API gave out'] } })
}

function rangeError (field: string, message: string): Error {
  return apiError('VALIDATION_ERROR', 'The request data is invalid', { fields: { [field]: [message] } })
}

interface UsageRow { hour: Date, bytes_in: string | number, bytes_out: string | number, requests: string | number }
interface AccessLogRow {
  id: string | number
  at: Date
  method: string
  path: string
  status: number
  bytes_in: string | number
  bytes_out: string | number
  duration_ms: string | number
  client: string | null
}

export interface UsageServiceOptions {
  db: Db
  config: TrafficConfig
  now: () => Date
}

export class UsageService {
  readonly #o: UsageServiceOptions

  constructor (options: UsageServiceOptions) {
    this.#o = options
  }

  /** Adds a report's usage and access log (in the caller's transaction); returns rows written. */
  async record (db: Queryable, usage: UsageReport[], accessLog: AccessLogReport[], now: Date): Promise<{ usage: number, accessLog: number }> {
    return { usage: await this.#recordUsage(db, usage, now), accessLog: await this.#recordAccessLog(db, accessLog, now) }
  }

  async #recordUsage (db: Queryable, usage: UsageReport[], now: Date): Promise<number> {
    // One row per (instance, hour) per statement: ON CONFLICT cannot touch a row twice.
    const merged = new Map<string, { instanceId: string, hour: number, bytesIn: number, bytesOut: number, requests: number }>()
    for (const u of usage) {
      const hour = Math.floor(notAfter(Date.parse(u.hour), now) / HOUR_MS) * HOUR_MS
      const key = `${u.instanceId}\u0000${hour}`
      const m = merged.get(key)
      if (m === undefined) merged.set(key, { instanceId: u.instanceId, hour, bytesIn: u.bytesIn, bytesOut: u.bytesOut, requests: u.requests })
      else { m.bytesIn += u.bytesIn; m.bytesOut += u.bytesOut; m.requests += u.requests }
    }
    const rows = [...merged.values()].filter(r => r.requests > 0 || r.bytesIn > 0 || r.bytesOut > 0)
    let written = 0
    for (let i = 0; i < rows.length; i += CHUNK) {
      const chunk = rows.slice(i, i + CHUNK)
      const values = chunk.map(() => '(?::text, ?::timestamptz, ?::bigint, ?::bigint, ?::bigint)').join(', ')
      const result = await db.raw(`
        insert into instance_usage as u (instance_id, hour, bytes_in, bytes_out, requests)
        select v.instance_id, v.hour, v.bytes_in, v.bytes_out, v.requests
        from (values ${values}) as v(instance_id, hour, bytes_in, bytes_out, requests)
        join instances i on i.id = v.instance_id
        on conflict (instance_id, hour) do update set
          bytes_in = u.bytes_in + excluded.bytes_in,
          bytes_out = u.bytes_out + excluded.bytes_out,
          requests = u.requests + excluded.requests`,
      chunk.flatMap(r => [r.instanceId, new Date(r.hour), r.bytesIn, r.bytesOut, r.requests])) as { rowCount?: number, affectedRows?: number }
      written += result.rowCount ?? result.affectedRows ?? 0
    }
    return written
  }

  async #recordAccessLog (db: Queryable, entries: AccessLogReport[], now: Date): Promise<number> {
    const full = this.#o.config.accessLogFullAddresses
    let written = 0
    for (let i = 0; i < entries.length; i += CHUNK) {
      const chunk = entries.slice(i, i + CHUNK)
      const values = chunk.map(() => '(?::text, ?::timestamptz, ?::text, ?::text, ?::integer, ?::bigint, ?::bigint, ?::bigint, ?::text)').join(', ')
      const result = await db.raw(`
        insert into instance_access_log (instance_id, at, method, path, status, bytes_in, bytes_out, duration_ms, client)
        select v.instance_id, v.at, v.method, v.path, v.status, v.bytes_in, v.bytes_out, v.duration_ms, v.client
        from (values ${values}) as v(instance_id, at, method, path, status, bytes_in, bytes_out, duration_ms, client)
        join instances i on i.id = v.instance_id`,
      chunk.flatMap(e => [
        e.instanceId, new Date(notAfter(Date.parse(e.at), now)), e.method, e.path, e.status, e.bytesIn, e.bytesOut, e.durationMs,
        storedClientAddress(e.client, full),
      ])) as { rowCount?: number, affectedRows?: number }
      written += result.rowCount ?? result.affectedRows ?? 0
    }
    return written
  }

  /** 404 unless `userId` owns `instanceId`. */
  async #owned (userId: string, instanceId: string): Promise<void> {
    const found = looksLikeId(ID_PREFIX.instance, instanceId)
      ? await this.#o.db('instances').where({ id: instanceId, user_id: userId }).first('id') as { id: string } | undefined
      : undefined
    if (found === undefined) throw apiError('NOT_FOUND', 'Instance not found')
  }

  /** Hourly buckets from `from` (rounded down to its hour) to `to` (exclusive), oldest first. */
  async usage (userId: string, instanceId: string, range: { from?: Date, to?: Date }): Promise<InstanceUsageResponse> {
    const to = range.to ?? this.#o.now()
    const from = new Date(Math.floor((range.from ?? new Date(to.getTime() - DEFAULT_USAGE_RANGE_MS)).getTime() / HOUR_MS) * HOUR_MS)
    if (from.getTime() >= to.getTime()) throw rangeError(range.to === undefined ? 'from' : 'to', 'must be later than from')
    if (to.getTime() - from.getTime() > MAX_USAGE_RANGE_DAYS * DAY_MS) throw rangeError('to', `the range may span at most ${MAX_USAGE_RANGE_DAYS} days`)
    await this.#owned(userId, instanceId)
    const rows = await this.#o.db('instance_usage')
      .where({ instance_id: instanceId }).andWhere('hour', '>=', from).andWhere('hour', '<', to)
      .orderBy('hour').select('hour', 'bytes_in', 'bytes_out', 'requests') as UsageRow[]
    const buckets: UsageBucket[] = rows.map(r => ({ hour: isoSeconds(r.hour), bytes_in: Number(r.bytes_in), bytes_out: Number(r.bytes_out), requests: Number(r.requests) }))
    const totals = { bytes_in: 0, bytes_out: 0, requests: 0 }
    for (const b of buckets) { totals.bytes_in += b.bytes_in; totals.bytes_out += b.bytes_out; totals.requests += b.requests }
    return { instance_id: instanceId, from: isoSeconds(from), to: isoSeconds(to), buckets, totals }
  }

  /** A page of the access log, newest first; `cursor` continues where the previous page ended. */
  async accessLog (userId: string, instanceId: string, page: { limit?: number, cursor?: string }): Promise<AccessLogResponse> {
    const limit = page.limit ?? ACCESS_LOG_DEFAULT_LIMIT
    const after = page.cursor === undefined ? undefined : parseCursor(page.cursor)
    await this.#owned(userId, instanceId)
    const rows = await this.#o.db('instance_access_log')
      .where({ instance_id: instanceId })
      .modify(q => { if (after !== undefined) void q.andWhereRaw('(at, id) < (?::timestamptz, ?::bigint)', [after.at, after.id]) })
      .orderBy([{ column: 'at', order: 'desc' }, { column: 'id', order: 'desc' }])
      .limit(limit + 1)
      .select('id', 'at', 'method', 'path', 'status', 'bytes_in', 'bytes_out', 'duration_ms', 'client') as AccessLogRow[]
    const more = rows.length > limit
    const shown = more ? rows.slice(0, limit) : rows
    const entries: AccessLogEntry[] = shown.map(r => ({
      at: r.at.toISOString(),
      method: r.method,
      path: r.path,
      status: r.status,
      bytes_in: Number(r.bytes_in),
      bytes_out: Number(r.bytes_out),
      duration_ms: Number(r.duration_ms),
      client: r.client,
    }))
    const last = shown[shown.length - 1]
    return { entries, next_cursor: more ? cursorOf(last.at, String(last.id)) : null }
  }

  /** Deletes usage and access-log rows past their retention; returns how many. */
  async prune (): Promise<{ usage: number, accessLog: number }> {
    const now = this.#o.now().getTime()
    const usageCutoff = new Date(now - this.#o.config.usageRetentionDays * DAY_MS)
    const logCutoff = new Date(now - this.#o.config.accessLogRetentionDays * DAY_MS)
    const usage = affected(await this.#o.db('instance_usage').where('hour', '<', usageCutoff).delete())
    let accessLog = 0
    // In batches: a week of a busy instance is many rows, and one huge delete holds its locks long.
    for (let i = 0; i < PRUNE_MAX_BATCHES; i++) {
      const n = affected(await this.#o.db.raw(`
        delete from instance_access_log where id in (select id from instance_access_log where at < ? limit ${PRUNE_BATCH})`, [logCutoff]))
      accessLog += n
      if (n < PRUNE_BATCH) break
    }
    return { usage, accessLog }
  }
}

/** Rows a statement touched: pg answers a number or a result, the PGlite dialect a result object. */
function affected (result: unknown): number {
  if (typeof result === 'number') return result
  const r = result as { rowCount?: number, affectedRows?: number } | null
  return r?.rowCount ?? r?.affectedRows ?? 0
}
