/**
 * The operator webhook (CC_OPERATOR_WEBHOOK_URL): events POSTed as JSON when something needs the
 * operator, and again when it clears.
 *
 *   gateway.down          a gateway stopped reporting (no hello or report within the alive
 *                         window; gateways silent for a day count as retired and raise nothing)
 *   gateway.recovered     it reports again
 *   certificate.failing   a hostname's certificate issuance has been failing (gateways report it,
 *                         rpc/reports.ts) in every check for CC_ALERT_CERTIFICATE_FAILING_AFTER
 *   certificate.recovered it is no longer failing
 *   webhooks.failing      Stripe webhook events failed in the last hour and no retry succeeded yet
 *                         (the same count as GET /ready's stripe_webhooks)
 *   webhooks.recovered    none left
 *
 * Each open condition is a row of operator_alerts; the event is claimed there (notified_at)
 * before it is queued, so it is sent once per occurrence whatever the number of replicas. A
 * condition whose subject disappears (gateway retired, hostname no longer served) is dropped
 * without an event. Delivery (OperatorWebhook) never blocks the job: a bounded queue, a timeout
 * per attempt and a bounded number of retries; an event still undelivered then is logged and lost.
 */
import { randomUUID } from 'node:crypto'
import type { Logger } from 'pino'
import { READY_GATEWAY_RETIRED_AFTER_SECONDS, READY_WEBHOOK_FAILURE_WINDOW_SECONDS } from '../../proto/api/health.ts'
import type { Db } from '../db/knex.ts'
import { lastHeardSql } from '../db/gateways.ts'
import { isoSeconds } from '../time.ts'

export type OperatorEventName =
  | 'gateway.down' | 'gateway.recovered'
  | 'certificate.failing' | 'certificate.recovered'
  | 'webhooks.failing' | 'webhooks.recovered'

/** The JSON body of every POST. */
export interface OperatorEvent {
  /** Unique per delivery (the same on its retries): receivers can drop duplicates. */
  id: string
  event: OperatorEventName
  /** What it is about: a gateway id, a hostname, or `stripe`. */
  subject: string
  /** When the condition began (for a recovery: when it had begun). */
  since: string
  occurred_at: string
  details: Record<string, unknown>
}

export interface OperatorWebhookOptions {
  url: string
  logger: Logger
  timeoutMs: number
  /** Attempts per event (default 3). */
  attempts?: number
  /** Wait before the second attempt, doubled for each further one (default 1 s). */
  retryDelayMs?: number
  /** Events queued at most; more are logged and dropped (default 100). */
  maxPending?: number
}

/** Retried: the receiver may be restarting. Other 4xx answers will not change on a retry. */
function retryable (status: number): boolean {
  return status >= 500 || status === 408 || status === 429
}

export class OperatorWebhook {
  readonly #o: OperatorWebhookOptions
  readonly #pending = new Set<Promise<void>>()

  constructor (options: OperatorWebhookOptions) {
    this.#o = options
  }

  /** Queues the event; never throws, never waits for the receiver. */
  send (event: OperatorEvent): void {
    if (this.#pending.size >= (this.#o.maxPending ?? 100)) {
      this.#o.logger.error({ event: event.event, subject: event.subject }, 'operator webhook queue full: event dropped')
      return
    }
    const p = this.#deliver(event).finally(() => { this.#pending.delete(p) })
    this.#pending.add(p)
  }

  async drain (): Promise<void> {
    while (this.#pending.size > 0) await Promise.all([...this.#pending])
  }

  async #deliver (event: OperatorEvent): Promise<void> {
    const attempts = this.#o.attempts ?? 3
    const body = JSON.stringify(event)
    let why = ''
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (attempt > 1) await new Promise(resolve => setTimeout(resolve, (this.#o.retryDelayMs ?? 1000) * 2 ** (attempt - 2)))
      try {
        const res = await fetch(this.#o.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'user-agent': 'erugo-cloud-connect' },
          body,
          redirect: 'manual',
          signal: AbortSignal.timeout(this.#o.timeoutMs),
        })
        await res.body?.cancel()
        if (res.status >= 200 && res.status < 300) {
          this.#o.logger.info({ event: event.event, subject: event.subject, attempt }, 'operator webhook delivered')
          return
        }
        why = `HTTP ${res.status}`
        if (!retryable(res.status)) break
      } catch (err) {
        why = (err as Error).name === 'TimeoutError' ? `no answer within ${this.#o.timeoutMs} ms` : (err as Error).message
      }
    }
    this.#o.logger.error({ event: event.event, subject: event.subject, why }, 'operator webhook not delivered')
  }
}

/** A condition found failing now. */
interface Condition {
  key: string
  subject: string
  /** When it began, if the data says; else the first check that saw it. */
  since?: Date
  details: Record<string, unknown>
}

interface OpenAlert {
  key: string
  event: string
  subject: string
  since: Date
  notified_at: Date | null
}

interface ConditionCheck {
  raise: OperatorEventName
  recover: OperatorEventName
  /** How long a condition must last before it is raised. */
  holdMs: number
  /** Failing conditions now, and which of `open` are healthy again (the rest vanished). */
  evaluate (open: OpenAlert[], now: Date): Promise<{ failing: Condition[], healthy: Set<string> }>
}

export interface OperatorEventOptions {
  db: Db
  webhook: OperatorWebhook
  now: () => Date
  logger: Logger
  /** rpc/placement.ts aliveWindowMs of the report interval. */
  gatewayAliveWindowMs: number
  /** CC_ALERT_CERTIFICATE_FAILING_AFTER in ms. */
  certificateFailingAfterMs: number
}

/** Rows looked at per check. */
const CHECK_LIMIT = 1000
const LAST_ERROR_CHARS = 300

export class OperatorEventService {
  readonly #o: OperatorEventOptions
  readonly #checks: ConditionCheck[]

  constructor (options: OperatorEventOptions) {
    this.#o = options
    this.#checks = [
      { raise: 'gateway.down', recover: 'gateway.recovered', holdMs: 0, evaluate: async (open, now) => await this.#gateways(open, now) },
      { raise: 'certificate.failing', recover: 'certificate.recovered', holdMs: options.certificateFailingAfterMs, evaluate: async open => await this.#certificates(open) },
      { raise: 'webhooks.failing', recover: 'webhooks.recovered', holdMs: 0, evaluate: async (_open, now) => await this.#webhooks(now) },
    ]
  }

  /** One pass over every condition; answers the events queued. */
  async run (): Promise<number> {
    let sent = 0
    for (const check of this.#checks) sent += await this.#runCheck(check)
    return sent
  }

  async #runCheck (check: ConditionCheck): Promise<number> {
    const { db } = this.#o
    const now = this.#o.now()
    const open = (await db('operator_alerts').where({ event: check.raise }).select()) as OpenAlert[]
    const { failing, healthy } = await check.evaluate(open, now)
    const openByKey = new Map(open.map(a => [a.key, a]))
    let sent = 0
    for (const c of failing) {
      let row = openByKey.get(c.key)
      openByKey.delete(c.key)
      if (row === undefined) {
        row = { key: c.key, event: check.raise, subject: c.subject, since: c.since ?? now, notified_at: null }
        await db('operator_alerts').insert(row).onConflict('key').ignore()
      }
      if (row.notified_at !== null || now.getTime() - new Date(row.since).getTime() < check.holdMs) continue
      const claimed = await db('operator_alerts').where({ key: c.key }).whereNull('notified_at').update({ notified_at: now }).returning('key') as unknown[]
      if (claimed.length === 0) continue
      this.#o.webhook.send({ id: randomUUID(), event: check.raise, subject: c.subject, since: isoSeconds(row.since), occurred_at: isoSeconds(now), details: c.details })
      sent++
    }
    for (const row of openByKey.values()) {
      const gone = await db('operator_alerts').where({ key: row.key }).delete().returning('notified_at') as Array<{ notified_at: Date | null }>
      if (gone.length === 0 || gone[0].notified_at === null || !healthy.has(row.key)) continue
      this.#o.webhook.send({ id: randomUUID(), event: check.recover, subject: row.subject, since: isoSeconds(row.since), occurred_at: isoSeconds(now), details: {} })
      sent++
    }
    return sent
  }

  async #gateways (open: OpenAlert[], now: Date): Promise<{ failing: Condition[], healthy: Set<string> }> {
    const { db } = this.#o
    const aliveSince = new Date(now.getTime() - this.#o.gatewayAliveWindowMs)
    const retiredBefore = new Date(now.getTime() - READY_GATEWAY_RETIRED_AFTER_SECONDS * 1000)
    const lastHeard = lastHeardSql()
    const stopped = await db('gateways')
      .whereRaw(`${lastHeard} < ?`, [aliveSince]).whereRaw(`${lastHeard} >= ?`, [retiredBefore])
      .orderBy('id').limit(CHECK_LIMIT)
      .select('id', 'region', 'endpoint', 'draining', db.raw(`${lastHeard} as last_heard`)) as Array<{ id: string, region: string | null, endpoint: string | null, draining: boolean, last_heard: Date | string }>
    const openIds = open.map(a => a.subject)
    const alive = openIds.length === 0
      ? []
      : await db('gateways').whereIn('id', openIds).whereRaw(`${lastHeard} >= ?`, [aliveSince]).pluck('id') as string[]
    return {
      failing: stopped.map(g => ({
        key: `gateway.down:${g.id}`,
        subject: g.id,
        since: new Date(g.last_heard),
        details: { gateway_id: g.id, region: g.region, endpoint: g.endpoint, draining: g.draining, last_heard_at: isoSeconds(g.last_heard), alive_window_seconds: Math.round(this.#o.gatewayAliveWindowMs / 1000) },
      })),
      healthy: new Set(alive.map(id => `gateway.down:${id}`)),
    }
  }

  async #certificates (open: OpenAlert[]): Promise<{ failing: Condition[], healthy: Set<string> }> {
    const { db } = this.#o
    const rows = await db('certificate_states').where({ state: 'failing' }).orderBy('hostname').limit(CHECK_LIMIT)
      .select('hostname', 'gateway_id', 'last_error', 'next_retry_at', 'reported_at') as Array<{ hostname: string, gateway_id: string, last_error: string | null, next_retry_at: Date | null, reported_at: Date }>
    const openNames = open.map(a => a.subject)
    const recovered = openNames.length === 0
      ? []
      : await db('certificate_states').whereIn('hostname', openNames).whereNot('state', 'failing').pluck('hostname') as string[]
    return {
      failing: rows.map(c => ({
        key: `certificate.failing:${c.hostname}`,
        subject: c.hostname,
        details: {
          hostname: c.hostname,
          gateway_id: c.gateway_id,
          last_error: c.last_error === null ? null : c.last_error.slice(0, LAST_ERROR_CHARS),
          next_retry_at: c.next_retry_at === null ? null : isoSeconds(c.next_retry_at),
          reported_at: isoSeconds(c.reported_at),
        },
      })),
      healthy: new Set(recovered.map(h => `certificate.failing:${h}`)),
    }
  }

  async #webhooks (now: Date): Promise<{ failing: Condition[], healthy: Set<string> }> {
    const { db } = this.#o
    const since = new Date(now.getTime() - READY_WEBHOOK_FAILURE_WINDOW_SECONDS * 1000)
    const rows = await db('stripe_webhook_failures').where('last_failed_at', '>=', since).whereNull('resolved_at')
      .orderBy('first_failed_at').limit(CHECK_LIMIT)
      .select('event_id', 'event_type', 'attempts', 'first_failed_at') as Array<{ event_id: string, event_type: string, attempts: number, first_failed_at: Date }>
    const key = 'webhooks.failing'
    if (rows.length === 0) return { failing: [], healthy: new Set([key]) }
    return {
      failing: [{
        key,
        subject: 'stripe',
        since: new Date(rows[0].first_failed_at),
        details: { unresolved: rows.length, events: rows.slice(0, 10).map(r => ({ id: r.event_id, type: r.event_type, attempts: r.attempts })) },
      }],
      healthy: new Set(),
    }
  }
}
