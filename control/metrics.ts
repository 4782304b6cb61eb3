/**
 * Control's Prometheus metrics (spec "Metrics to Track"), on a prom-client registry of the app's own
 * unless `start` hands in the one it shares with the gateway:
 *
 *   cc_api_request_duration_seconds{route,method,status_class}  histogram, route = Hapi's template
 *   cc_api_requests_total{status}                                 counter
 *   cc_tunnel_failed_attempts_total{reason}                       POST /v1/tunnel/register refused
 *   cc_business_*                                                 gauges from the database
 *
 * The business gauges come from one query, run at scrape time and kept for BUSINESS_CACHE_MS so
 * that several gauges, and scrapes close together, cost one round trip. `serveMetrics` is the
 * CC_METRICS_LISTEN listener of `cloud-connect control` (under `start` the gateway's serves both).
 */
import http from 'node:http'
import type { Plugin, Request } from '@hapi/hapi'
import type { Logger } from 'pino'
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import { TUNNEL_FAILED_ATTEMPTS, exposition, sharedCounter, type TunnelFailureReason } from '../proto/metrics.ts'
import { API_PREFIX } from '../proto/api/index.ts'
import type { Queryable } from './db/knex.ts'
import { startListening } from '../proto/net/listen.ts'

/** How long one business query answers scrapes (a typical scrape interval). */
export const BUSINESS_CACHE_MS = 15_000
/** The churn window: cancellations in the last 30 days over accounts paying 30 days ago. */
export const CHURN_WINDOW_DAYS = 30

const API_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const REGISTER_PATH = `${API_PREFIX}/tunnel/register`
const REGISTER_REFUSED = new Set([401, 402, 409, 422])

export interface BusinessSnapshot {
  signups: number
  verified: number
  paying: { pro: number, business: number }
  /** Accounts that were paying at the start of the churn window. */
  payingAtWindowStart: number
  /** Accounts whose paid subscription ended within the window and that pay for none now. */
  cancellations: number
}

export interface ControlMetricsOptions {
  db: Queryable
  now: () => Date
  /** A past_due subscription still counts as paying this long (config.billing.pastDueGraceSeconds). */
  pastDueGraceSeconds: number
  logger: Logger
  registry?: Registry
  businessCacheMs?: number
}

export class ControlMetrics {
  readonly registry: Registry
  readonly #o: ControlMetricsOptions
  readonly #duration: Histogram<'route' | 'method' | 'status_class'>
  readonly #requests: Counter<'status'>
  readonly #failed: Counter<'reason'>
  #cached: { at: number, value: Promise<BusinessSnapshot> } | null = null

  constructor (options: ControlMetricsOptions) {
    this.#o = options
    const registry = this.registry = options.registry ?? new Registry()
    const registers = [registry]
    this.#duration = new Histogram({
      name: 'cc_api_request_duration_seconds',
      help: 'Control API requests: time from receipt to the response sent, by route template, method and status class',
      labelNames: ['route', 'method', 'status_class'],
      buckets: API_BUCKETS,
      registers,
    })
    this.#requests = new Counter({ name: 'cc_api_requests_total', help: 'Control API responses, by status code', labelNames: ['status'], registers })
    this.#failed = sharedCounter(registry, TUNNEL_FAILED_ATTEMPTS)
    // The counts behind conversion and churn are exposed too: a ratio alone hides its size.
    const gauges: Array<[string, string, (b: BusinessSnapshot) => number]> = [
      ['cc_business_signups', 'Accounts signed up (users)', b => b.signups],
      ['cc_business_verified_accounts', 'Accounts with a verified email address', b => b.verified],
      ['cc_business_conversion_ratio', 'Paying accounts / verified accounts (0 without verified accounts)', b => ratio(b.paying.pro + b.paying.business, b.verified)],
      ['cc_business_churn_ratio', `Accounts whose paid subscription ended in the last ${CHURN_WINDOW_DAYS} days / accounts paying ${CHURN_WINDOW_DAYS} days ago (0 without any)`, b => ratio(b.cancellations, b.payingAtWindowStart)],
      ['cc_business_cancellations_30d', `Accounts whose paid subscription ended in the last ${CHURN_WINDOW_DAYS} days and that pay for none now`, b => b.cancellations],
      ['cc_business_paying_accounts_30d_ago', `Accounts that were paying ${CHURN_WINDOW_DAYS} days ago`, b => b.payingAtWindowStart],
    ]
    const business = async (): Promise<BusinessSnapshot | null> => await this.business().catch(err => {
      options.logger.warn({ err: (err as Error).message }, 'metrics: the business query failed; the last values stay')
      return null
    })
    for (const [name, help, value] of gauges) {
      new Gauge({ name, help, registers, async collect () { const b = await business(); if (b !== null) this.set(value(b)) } })
    }
    new Gauge({
      name: 'cc_business_paying_accounts',
      help: 'Accounts on a paid plan now (active, trialing, or past_due within the grace period), by plan',
      labelNames: ['plan'],
      registers,
      async collect () {
        const b = await business()
        if (b === null) return
        this.set({ plan: 'pro' }, b.paying.pro)
        this.set({ plan: 'business' }, b.paying.business)
      },
    })
  }

  /** One finished request (the Hapi `response` event). */
  observe (request: Request): void {
    const status = statusOf(request)
    const route = request.route.path
    const seconds = ((request.info.completed === 0 ? Date.now() : request.info.completed) - request.info.received) / 1000
    this.#duration.observe({ route, method: request.method.toUpperCase(), status_class: `${Math.floor(status / 100)}xx` }, Math.max(0, seconds))
    this.#requests.inc({ status: String(status) })
    if (route === REGISTER_PATH && request.method === 'post' && REGISTER_REFUSED.has(status)) {
      this.#failed.inc({ reason: `register_refused_${status}` as TunnelFailureReason })
    }
  }

  /** The business counts, from the cache while it is fresh. */
  async business (): Promise<BusinessSnapshot> {
    const now = Date.now()
    const cacheMs = this.#o.businessCacheMs ?? BUSINESS_CACHE_MS
    if (this.#cached !== null && now - this.#cached.at < cacheMs) return await this.#cached.value
    const value = queryBusiness(this.#o.db, this.#o.now(), this.#o.pastDueGraceSeconds)
    const entry = { at: now, value }
    this.#cached = entry
    value.catch(() => { if (this.#cached === entry) this.#cached = null })
    return await value
  }
}

function ratio (part: number, whole: number): number {
  return whole === 0 ? 0 : part / whole
}

function statusOf (request: Request): number {
  const response = request.response as { isBoom?: boolean, output?: { statusCode: number }, statusCode?: number } | null
  if (response?.isBoom === true) return response.output!.statusCode
  return response?.statusCode ?? request.raw.res.statusCode
}

/** Stripe statuses after which a subscription is over; its end is ended_at (else when it was canceled). */
const ENDED_AT = `(case when status in ('canceled', 'incomplete_expired') then coalesce(ended_at, canceled_at, updated_at) end)`

/** Every business count in one statement (Postgres and PGlite). */
export async function queryBusiness (db: Queryable, now: Date, pastDueGraceSeconds: number): Promise<BusinessSnapshot> {
  const graceStart = new Date(now.getTime() - pastDueGraceSeconds * 1000)
  const windowStart = new Date(now.getTime() - CHURN_WINDOW_DAYS * 86400_000)
  const result = await db.raw(`
    with paying_now as (
      select user_id, max(case when plan = 'business' then 2 else 1 end) as tier
      from billing_subscriptions
      where plan in ('pro', 'business')
        and (status in ('active', 'trialing') or (status = 'past_due' and coalesce(current_period_start, ?) > ?))
      group by user_id
    ), paying_then as (
      select distinct user_id from billing_subscriptions
      where plan in ('pro', 'business') and status not in ('incomplete', 'incomplete_expired')
        and coalesce(started_at, current_period_start) <= ?
        and (${ENDED_AT} is null or ${ENDED_AT} > ?)
    ), churned as (
      select distinct user_id from billing_subscriptions
      where plan in ('pro', 'business') and status = 'canceled'
        and ${ENDED_AT} > ? and ${ENDED_AT} <= ?
        and user_id not in (select user_id from paying_now)
    )
    select
      (select count(*) from users) as signups,
      (select count(*) from users where email_verified_at is not null) as verified,
      (select count(*) from paying_now where tier = 1) as pro,
      (select count(*) from paying_now where tier = 2) as business,
      (select count(*) from paying_then) as paying_then,
      (select count(*) from churned) as cancellations`,
  [now, graceStart, windowStart, windowStart, windowStart, now]) as { rows: Array<Record<string, string | number>> }
  const row = result.rows[0]
  return {
    signups: Number(row.signups),
    verified: Number(row.verified),
    paying: { pro: Number(row.pro), business: Number(row.business) },
    payingAtWindowStart: Number(row.paying_then),
    cancellations: Number(row.cancellations),
  }
}

/** Counts every response of the app into `metrics`. */
export const metricsPlugin: Plugin<ControlMetrics> = {
  name: 'cc-metrics',
  register (server, metrics) {
    server.events.on('response', request => { metrics.observe(request) })
  },
}

/** CC_METRICS_LISTEN: GET /metrics (Prometheus text, with the process metrics); anything else 404. */
export async function serveMetrics (registry: Registry, listen: { host: string, port: number }, logger: Logger): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET' }).end()
      return
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n')
      return
    }
    exposition(registry).then(({ contentType, text }) => {
      res.writeHead(200, { 'content-type': contentType }).end(text)
    }, err => {
      logger.error({ err }, 'metrics request failed')
      res.writeHead(500).end()
    })
  })
  await startListening(server, listen.port, listen.host)
  return server
}

/** "address:port" a listener is bound to. */
export function boundAddress (server: http.Server): string {
  const a = server.address()
  if (a === null || typeof a === 'string') return String(a)
  return a.family === 'IPv6' ? `[${a.address}]:${a.port}` : `${a.address}:${a.port}`
}
