/**
 * What the edge tells control about each instance's traffic: bytes in and out and request counts
 * per instance per hour, and an access log of the requests themselves (time, method, path without
 * the query, status, body bytes, duration, client address). Kept in memory between reports and
 * handed to the report loop (gateway/control/client.ts) with take(); a report control did not
 * accept gives its batch back with restore(), so nothing is lost to a short outage.
 *
 * Bounded either way: at most `maxAccessLogEntries` entries (the oldest are dropped and counted)
 * and `maxUsageBuckets` instance-hours (past that, the oldest hour's buckets are dropped and
 * counted). The query string and headers are never recorded: they carry tokens and cookies.
 *
 * Recording is on every request's path and an entry lives until the next report (5 s): entries
 * are kept in preallocated columns of a ring (no object per request to promote and collect) and
 * become report objects (ISO time, path without the query) only in take(), and only those kept.
 */
import {
  MAX_ACCESS_LOG_ENTRIES, MAX_ACCESS_LOG_PATH, MAX_USAGE_BUCKETS, type AccessLogReport, type UsageReport,
} from '../../proto/rpc/index.ts'

/** One finished request of an instance, as the proxy saw it. */
export interface FinishedRequest {
  instanceId: string
  /** Wall-clock ms when the request began. */
  startedAt: number
  method: string
  /** The request target as received (the query is cut off here). */
  target: string
  status: number
  bytesIn: number
  bytesOut: number
  durationMs: number
  client: string
}

/** What one report carries; given back whole by restore() when the report failed. */
export interface TrafficBatch {
  usage: UsageReport[]
  accessLog: AccessLogReport[]
  accessLogDropped: number
}

export interface TrafficLimits {
  maxAccessLogEntries: number
  maxUsageBuckets: number
}

const HOUR_MS = 3_600_000

interface Bucket { instanceId: string, hour: number, bytesIn: number, bytesOut: number, requests: number }

/** The path of a request target: everything before `?` (RFC 9110 4.1: the query follows it), capped. */
export function pathOf (target: string): string {
  const q = target.indexOf('?')
  const path = q === -1 ? target : target.slice(0, q)
  return path.length > MAX_ACCESS_LOG_PATH ? path.slice(0, MAX_ACCESS_LOG_PATH) : path
}

export class TrafficRecorder {
  readonly limits: TrafficLimits
  readonly #buckets = new Map<string, Bucket>()
  /** The bucket of the last request: consecutive requests of one instance and hour skip the key. */
  #lastBucket: Bucket | undefined
  readonly #log: AccessLogRing
  #dropped = 0
  /** Usage that did not fit (instance-hours dropped), for the operator's logs. */
  droppedUsageBuckets = 0

  constructor (limits: Partial<TrafficLimits> = {}) {
    this.limits = {
      maxAccessLogEntries: Math.min(limits.maxAccessLogEntries ?? MAX_ACCESS_LOG_ENTRIES, MAX_ACCESS_LOG_ENTRIES),
      maxUsageBuckets: Math.min(limits.maxUsageBuckets ?? MAX_USAGE_BUCKETS, MAX_USAGE_BUCKETS),
    }
    this.#log = new AccessLogRing(this.limits.maxAccessLogEntries)
  }

  record (request: FinishedRequest): void {
    const hour = Math.floor(request.startedAt / HOUR_MS) * HOUR_MS
    const last = this.#lastBucket
    if (last !== undefined && last.hour === hour && last.instanceId === request.instanceId) {
      last.bytesIn += request.bytesIn
      last.bytesOut += request.bytesOut
      last.requests++
    } else {
      this.#lastBucket = this.#add({ instanceId: request.instanceId, hour, bytesIn: request.bytesIn, bytesOut: request.bytesOut, requests: 1 })
    }
    if (this.#log.push(request.instanceId, request.startedAt, request.method, request.target, request.status, request.bytesIn, request.bytesOut, request.durationMs, request.client)) {
      this.#dropped++
    }
  }

  /** Entries waiting (tests, status). */
  get pendingEntries (): number {
    return this.#log.size
  }

  /** Everything recorded since the last take(); the recorder starts empty again. */
  take (): TrafficBatch {
    const usage = [...this.#buckets.values()].map(b => ({
      instanceId: b.instanceId, hour: new Date(b.hour).toISOString(), bytesIn: b.bytesIn, bytesOut: b.bytesOut, requests: b.requests,
    }))
    const batch = { usage, accessLog: this.#log.drain(), accessLogDropped: this.#dropped }
    this.#buckets.clear()
    this.#lastBucket = undefined
    this.#dropped = 0
    return batch
  }

  /** A batch control did not accept: merged back (older than anything recorded since), within the bounds. */
  restore (batch: TrafficBatch): void {
    this.#lastBucket = undefined
    for (const u of batch.usage) {
      this.#add({ instanceId: u.instanceId, hour: Date.parse(u.hour), bytesIn: u.bytesIn, bytesOut: u.bytesOut, requests: u.requests })
    }
    const newer = this.#log.drain()
    let excess = 0
    for (const entries of [batch.accessLog, newer]) {
      for (const e of entries) {
        // A report entry's path has no query and is within bounds: pathOf gives it back unchanged.
        if (this.#log.push(e.instanceId, Date.parse(e.at), e.method, e.path, e.status, e.bytesIn, e.bytesOut, e.durationMs, e.client)) excess++
      }
    }
    this.#dropped += batch.accessLogDropped + excess
  }

  /** Adds to the bucket of `b`'s instance and hour; returns it (undefined: no room, dropped). */
  #add (b: Bucket): Bucket | undefined {
    const key = `${b.instanceId}\u0000${b.hour}`
    const existing = this.#buckets.get(key)
    if (existing !== undefined) {
      existing.bytesIn += b.bytesIn
      existing.bytesOut += b.bytesOut
      existing.requests += b.requests
      return existing
    }
    if (this.#buckets.size >= this.limits.maxUsageBuckets && !this.#evictOlderThan(b.hour)) {
      this.droppedUsageBuckets++
      return undefined
    }
    const bucket = { ...b }
    this.#buckets.set(key, bucket)
    return bucket
  }

  /** Drops one bucket of the oldest hour, if it is older than `hour`; answers whether room was made. */
  #evictOlderThan (hour: number): boolean {
    let oldestKey: string | undefined
    let oldest = hour
    for (const [key, bucket] of this.#buckets) {
      if (bucket.hour < oldest) { oldest = bucket.hour; oldestKey = key }
    }
    if (oldestKey === undefined) return false
    this.#buckets.delete(oldestKey)
    this.droppedUsageBuckets++
    return true
  }
}

/**
 * The access log between two reports: a ring of `capacity` entries in columns, allocated on the
 * first entry. Strings are the request's own (no copies); numbers sit in typed arrays. Full, a new
 * entry takes the oldest one's place.
 */
class AccessLogRing {
  #start = 0
  #size = 0
  #instanceId: string[] = []
  #method: string[] = []
  #target: string[] = []
  #client: string[] = []
  #startedAt = new Float64Array(0)
  #bytesIn = new Float64Array(0)
  #bytesOut = new Float64Array(0)
  #durationMs = new Float64Array(0)
  #status = new Uint16Array(0)

  constructor (readonly capacity: number) {}

  get size (): number {
    return this.#size
  }

  /** Appends an entry; true when it displaced the oldest. */
  push (instanceId: string, startedAt: number, method: string, target: string, status: number, bytesIn: number, bytesOut: number, durationMs: number, client: string): boolean {
    const capacity = this.capacity
    if (capacity === 0) return true
    if (this.#startedAt.length === 0) this.#allocate()
    const full = this.#size === capacity
    let i = this.#start + this.#size
    if (full) {
      i = this.#start
      this.#start = this.#start + 1 === capacity ? 0 : this.#start + 1
    } else {
      if (i >= capacity) i -= capacity
      this.#size++
    }
    this.#instanceId[i] = instanceId
    this.#method[i] = method
    this.#target[i] = target
    this.#client[i] = client
    this.#startedAt[i] = startedAt
    this.#bytesIn[i] = bytesIn
    this.#bytesOut[i] = bytesOut
    this.#durationMs[i] = durationMs
    this.#status[i] = status
    return full
  }

  /** The entries as report objects, oldest first; the ring is empty afterwards. */
  drain (): AccessLogReport[] {
    const out = new Array<AccessLogReport>(this.#size)
    const times = new IsoTimes()
    for (let n = 0, i = this.#start; n < this.#size; n++, i = i + 1 === this.capacity ? 0 : i + 1) {
      out[n] = {
        instanceId: this.#instanceId[i],
        at: times.format(this.#startedAt[i]),
        method: this.#method[i],
        path: pathOf(this.#target[i]),
        status: this.#status[i],
        bytesIn: this.#bytesIn[i],
        bytesOut: this.#bytesOut[i],
        durationMs: Math.max(0, Math.round(this.#durationMs[i])),
        client: this.#client[i],
      }
      // Let go of the request's strings now rather than when the slot is reused.
      this.#target[i] = ''
    }
    this.#start = 0
    this.#size = 0
    return out
  }

  #allocate (): void {
    const n = this.capacity
    this.#instanceId = new Array<string>(n).fill('')
    this.#method = new Array<string>(n).fill('')
    this.#target = new Array<string>(n).fill('')
    this.#client = new Array<string>(n).fill('')
    this.#startedAt = new Float64Array(n)
    this.#bytesIn = new Float64Array(n)
    this.#bytesOut = new Float64Array(n)
    this.#durationMs = new Float64Array(n)
    this.#status = new Uint16Array(n)
  }
}

/**
 * `Date.prototype.toISOString` for runs of nearby times: the text up to the second is reused
 * while the second stays the same (a report's entries are in time order, thousands per second).
 */
class IsoTimes {
  #second = NaN
  #prefix = ''

  format (ms: number): string {
    const t = Math.trunc(ms) // as a Date's time value (ECMA-262 TimeClip)
    const second = Math.floor(t / 1000)
    if (second !== this.#second) {
      const iso = new Date(second * 1000).toISOString()
      this.#second = second
      this.#prefix = iso.slice(0, -4) // without 'mmmZ'
    }
    const milli = t - second * 1000
    return `${this.#prefix}${milli < 10 ? '00' : milli < 100 ? '0' : ''}${milli}Z`
  }
}
