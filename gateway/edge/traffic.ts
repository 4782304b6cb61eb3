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
  /** Oldest first; entries before #head were dropped (compacted when the head grows). */
  #log: AccessLogReport[] = []
  #head = 0
  #dropped = 0
  /** Usage that did not fit (instance-hours dropped), for the operator's logs. */
  droppedUsageBuckets = 0

  constructor (limits: Partial<TrafficLimits> = {}) {
    this.limits = {
      maxAccessLogEntries: Math.min(limits.maxAccessLogEntries ?? MAX_ACCESS_LOG_ENTRIES, MAX_ACCESS_LOG_ENTRIES),
      maxUsageBuckets: Math.min(limits.maxUsageBuckets ?? MAX_USAGE_BUCKETS, MAX_USAGE_BUCKETS),
    }
  }

  record (request: FinishedRequest): void {
    const hour = Math.floor(request.startedAt / HOUR_MS) * HOUR_MS
    this.#add({ instanceId: request.instanceId, hour, bytesIn: request.bytesIn, bytesOut: request.bytesOut, requests: 1 })
    this.#append({
      instanceId: request.instanceId,
      at: new Date(request.startedAt).toISOString(),
      method: request.method,
      path: pathOf(request.target),
      status: request.status,
      bytesIn: request.bytesIn,
      bytesOut: request.bytesOut,
      durationMs: Math.max(0, Math.round(request.durationMs)),
      client: request.client,
    })
  }

  /** Entries waiting (tests, status). */
  get pendingEntries (): number {
    return this.#log.length - this.#head
  }

  /** Everything recorded since the last take(); the recorder starts empty again. */
  take (): TrafficBatch {
    const usage = [...this.#buckets.values()].map(b => ({
      instanceId: b.instanceId, hour: new Date(b.hour).toISOString(), bytesIn: b.bytesIn, bytesOut: b.bytesOut, requests: b.requests,
    }))
    const batch = { usage, accessLog: this.#log.slice(this.#head), accessLogDropped: this.#dropped }
    this.#buckets.clear()
    this.#log = []
    this.#head = 0
    this.#dropped = 0
    return batch
  }

  /** A batch control did not accept: merged back (older than anything recorded since), within the bounds. */
  restore (batch: TrafficBatch): void {
    for (const u of batch.usage) {
      this.#add({ instanceId: u.instanceId, hour: Date.parse(u.hour), bytesIn: u.bytesIn, bytesOut: u.bytesOut, requests: u.requests })
    }
    const newer = this.#log.slice(this.#head)
    const merged = [...batch.accessLog, ...newer]
    const excess = Math.max(0, merged.length - this.limits.maxAccessLogEntries)
    this.#log = excess === 0 ? merged : merged.slice(excess)
    this.#head = 0
    this.#dropped += batch.accessLogDropped + excess
  }

  #add (b: Bucket): void {
    const key = `${b.instanceId}\u0000${b.hour}`
    const existing = this.#buckets.get(key)
    if (existing !== undefined) {
      existing.bytesIn += b.bytesIn
      existing.bytesOut += b.bytesOut
      existing.requests += b.requests
      return
    }
    if (this.#buckets.size >= this.limits.maxUsageBuckets && !this.#evictOlderThan(b.hour)) {
      this.droppedUsageBuckets++
      return
    }
    this.#buckets.set(key, { ...b })
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

  #append (entry: AccessLogReport): void {
    this.#log.push(entry)
    if (this.#log.length - this.#head > this.limits.maxAccessLogEntries) {
      this.#head++
      this.#dropped++
      // Compact now and then: shifting one element per request would be O(n) each.
      if (this.#head >= 1024 && this.#head * 2 >= this.#log.length) {
        this.#log = this.#log.slice(this.#head)
        this.#head = 0
      }
    }
  }
}
