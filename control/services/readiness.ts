/**
 * GET /ready: one check per component, each run with its own time limit so one stuck check cannot
 * hold the answer; concurrent requests share one round of checks. A component is ready when `ok`
 * or `not_configured`. `checked_at` is this process's last check that found it `ok`.
 *
 *   database         a ping
 *   gateways         fresh hello/report times against the alive window (rpc/placement.ts);
 *                    gateways silent for a day count as retired, not down
 *   stripe_webhooks  last processed event; webhook failures of the last hour not resolved by a retry
 *   certificates     what gateways' certificate managers report (certificate_states): names in
 *                    `failing` state, names expiring within READY_CERTIFICATE_EXPIRY_DAYS
 *   wireguard, https the in-process gateway's listeners (`start` adds them with addProbe)
 *
 * Details hold counts, gateway ids, hostnames and times, never error text (the route is public).
 */
import type { Logger } from 'pino'
import {
  GATEWAY_LISTENER_COMPONENTS, READY_CERTIFICATE_EXPIRY_DAYS, READY_COMPONENTS, READY_GATEWAY_RETIRED_AFTER_SECONDS, READY_WEBHOOK_FAILURE_WINDOW_SECONDS,
  type ComponentReadiness, type ComponentStatus, type Readiness, type ReadyComponent,
} from '../../proto/api/health.ts'
import { ping, type Db } from '../db/knex.ts'
import { lastHeardSql } from '../db/gateways.ts'
import { isoSeconds } from '../time.ts'

export interface Check {
  status: ComponentStatus
  detail: string
}

export type Probe = () => Check | Promise<Check>

export interface ReadinessOptions {
  db: Db
  now: () => Date
  logger: Logger
  /** A Stripe key is set: webhooks are checked. */
  stripeConfigured: boolean
  /** How recent a gateway's hello or report must be to count as reporting (rpc/placement.ts aliveWindowMs). */
  gatewayAliveWindowMs: number
  /** Control serves the RPC listener gateways say hello to: none ever saying hello is a failure. */
  gatewayListener: boolean
  /** Per check (default CHECK_TIMEOUT_MS). */
  checkTimeoutMs?: number
}

export const CHECK_TIMEOUT_MS = 3_000
/** Names listed in a detail at most; the rest are counted. */
const NAMES_SHOWN = 5
const DAY_MS = 24 * 3600 * 1000
const COMPONENT_ORDER: readonly ReadyComponent[] = [...READY_COMPONENTS, ...GATEWAY_LISTENER_COMPONENTS]

function listed (names: string[], total: number): string {
  const more = total - names.length
  return names.join(', ') + (more > 0 ? ` and ${more} more` : '')
}

function seconds (ms: number): string {
  return `${Math.round(ms / 1000)} s`
}

export class ReadinessService {
  readonly #o: ReadinessOptions
  readonly #probes = new Map<ReadyComponent, Probe>()
  readonly #lastOk = new Map<ReadyComponent, Date>()
  #round: Promise<Readiness> | undefined

  constructor (options: ReadinessOptions) {
    this.#o = options
    this.#probes.set('database', async () => { await ping(this.#o.db); return { status: 'ok', detail: 'the database answers' } })
    this.#probes.set('gateways', async () => await this.#gateways())
    this.#probes.set('stripe_webhooks', async () => await this.#stripeWebhooks())
    this.#probes.set('certificates', async () => await this.#certificates())
  }

  /** Liveness (GET /health): the database answers; throws when it does not. */
  async live (): Promise<void> {
    await ping(this.#o.db)
  }

  /** Adds (or replaces) a component's check, e.g. the in-process gateway's listeners. */
  addProbe (name: ReadyComponent, probe: Probe): void {
    this.#probes.set(name, probe)
  }

  async check (): Promise<Readiness> {
    this.#round ??= this.#run().finally(() => { this.#round = undefined })
    return await this.#round
  }

  async #run (): Promise<Readiness> {
    const names = [...this.#probes.keys()]
    const results = await Promise.all(names.map(async name => await this.#checkOne(name, this.#probes.get(name)!)))
    const components: Readiness['components'] = {}
    for (const [i, name] of names.entries()) components[name] = results[i]
    const order = (n: ReadyComponent): number => COMPONENT_ORDER.indexOf(n)
    const failing = names.filter(n => components[n]!.status === 'failing').sort((a, b) => order(a) - order(b))
    return { status: failing.length === 0 ? 'ready' : 'not_ready', failing, components }
  }

  async #checkOne (name: ReadyComponent, probe: Probe): Promise<ComponentReadiness> {
    const limit = this.#o.checkTimeoutMs ?? CHECK_TIMEOUT_MS
    let timer: NodeJS.Timeout | undefined
    let result: Check
    try {
      result = await Promise.race([
        Promise.resolve().then(probe),
        new Promise<Check>(resolve => { timer = setTimeout(() => { resolve({ status: 'failing', detail: `no answer within ${seconds(limit)}` }) }, limit) }),
      ])
    } catch (err) {
      this.#o.logger.warn({ component: name, err: (err as Error).message }, 'readiness check failed')
      result = { status: 'failing', detail: name === 'database' ? 'the database does not answer' : 'the database does not answer this check' }
    } finally {
      clearTimeout(timer)
    }
    if (result.status === 'ok') this.#lastOk.set(name, this.#o.now())
    const last = this.#lastOk.get(name)
    return { status: result.status, detail: result.detail, checked_at: last === undefined ? null : isoSeconds(last) }
  }

  async #gateways (): Promise<Check> {
    const { db, gatewayAliveWindowMs: windowMs } = this.#o
    const now = this.#o.now().getTime()
    const aliveSince = new Date(now - windowMs)
    const retiredBefore = new Date(now - READY_GATEWAY_RETIRED_AFTER_SECONDS * 1000)
    const lastHeard = lastHeardSql()
    const [counts] = await db('gateways').select(
      db.raw('count(*) as total'),
      db.raw(`count(*) filter (where ${lastHeard} >= ?) as reporting`, [aliveSince]),
      db.raw(`count(*) filter (where ${lastHeard} >= ?) as recent`, [retiredBefore]),
    ) as Array<{ total: string | number, reporting: string | number, recent: string | number }>
    const total = Number(counts.total)
    const reporting = Number(counts.reporting)
    const recent = Number(counts.recent)
    const window = `alive window ${seconds(windowMs)}`
    if (total === 0) {
      return this.#o.gatewayListener
        ? { status: 'failing', detail: 'no gateway has said hello to the RPC listener' }
        : { status: 'not_configured', detail: 'no gateway RPC on this control and no gateway has said hello' }
    }
    const retired = total - recent
    const retiredNote = retired > 0 ? `; ${retired} silent for over ${READY_GATEWAY_RETIRED_AFTER_SECONDS / 3600} h counted as retired` : ''
    if (recent === 0) return { status: 'failing', detail: `no gateway has reported within ${READY_GATEWAY_RETIRED_AFTER_SECONDS / 3600} h (${total} known)` }
    if (reporting >= recent) return { status: 'ok', detail: `${reporting}/${recent} gateways reporting (${window})${retiredNote}` }
    const stopped = await db('gateways')
      .whereRaw(`${lastHeard} < ?`, [aliveSince]).whereRaw(`${lastHeard} >= ?`, [retiredBefore])
      .orderByRaw(`${lastHeard} desc`).orderBy('id').limit(NAMES_SHOWN)
      .select('id', db.raw(`${lastHeard} as last_heard`)) as Array<{ id: string, last_heard: Date | string }>
    const names = stopped.map(g => `${g.id} (last heard ${seconds(now - new Date(g.last_heard).getTime())} ago)`)
    return { status: 'failing', detail: `${reporting}/${recent} gateways reporting (${window}); stopped reporting: ${listed(names, recent - reporting)}${retiredNote}` }
  }

  async #stripeWebhooks (): Promise<Check> {
    if (!this.#o.stripeConfigured) return { status: 'not_configured', detail: 'billing is off: CC_STRIPE_SECRET_KEY is not set' }
    const { db } = this.#o
    const since = new Date(this.#o.now().getTime() - READY_WEBHOOK_FAILURE_WINDOW_SECONDS * 1000)
    const [last, failures, unresolved] = await Promise.all([
      db('stripe_events').max('processed_at as at').first() as Promise<{ at: Date | string | null } | undefined>,
      db('stripe_webhook_failures').where('last_failed_at', '>=', since).count('* as n').first() as Promise<{ n: string | number } | undefined>,
      db('stripe_webhook_failures').where('last_failed_at', '>=', since).whereNull('resolved_at')
        .orderBy([{ column: 'last_failed_at', order: 'desc' }, { column: 'event_id' }]).limit(NAMES_SHOWN)
        .select('event_id', 'event_type') as Promise<Array<{ event_id: string, event_type: string }>>,
    ])
    const lastText = last?.at == null ? 'no event processed yet' : `last event processed ${isoSeconds(new Date(last.at))}`
    const failed = Number(failures?.n ?? 0)
    const window = `${READY_WEBHOOK_FAILURE_WINDOW_SECONDS / 60} min`
    if (unresolved.length === 0) return { status: 'ok', detail: `${lastText}; ${failed} failed in the last ${window}, none left unresolved` }
    const [{ n: open }] = await db('stripe_webhook_failures').where('last_failed_at', '>=', since).whereNull('resolved_at').count('* as n') as Array<{ n: string | number }>
    const names = unresolved.map(f => `${f.event_id} (${f.event_type})`)
    return { status: 'failing', detail: `${lastText}; ${Number(open)} event(s) failed in the last ${window} and not yet processed: ${listed(names, Number(open))}` }
  }

  async #certificates (): Promise<Check> {
    const { db } = this.#o
    const now = this.#o.now().getTime()
    const soon = new Date(now + READY_CERTIFICATE_EXPIRY_DAYS * DAY_MS)
    const [counts] = await db('certificate_states').select(
      db.raw('count(*) as total'),
      db.raw("count(*) filter (where state = 'failing') as failing"),
      db.raw('count(*) filter (where not_after <= ?) as expiring', [soon]),
    ) as Array<{ total: string | number, failing: string | number, expiring: string | number }>
    const total = Number(counts.total)
    const failing = Number(counts.failing)
    const expiring = Number(counts.expiring)
    if (total === 0) return { status: 'ok', detail: 'no certificate reported yet' }
    if (failing === 0 && expiring === 0) return { status: 'ok', detail: `${total} certificate(s) reported, none failing, none expiring within ${READY_CERTIFICATE_EXPIRY_DAYS} days` }
    const [failingRows, expiringRows] = await Promise.all([
      failing === 0 ? [] : db('certificate_states').where({ state: 'failing' }).orderBy('reported_at', 'desc').orderBy('hostname').limit(NAMES_SHOWN).pluck('hostname') as Promise<string[]>,
      expiring === 0 ? [] : db('certificate_states').where('not_after', '<=', soon).orderBy('not_after').orderBy('hostname').limit(NAMES_SHOWN)
        .select('hostname', 'not_after') as Promise<Array<{ hostname: string, not_after: Date | string }>>,
    ])
    const parts: string[] = []
    if (failing > 0) parts.push(`${failing} failing: ${listed(failingRows, failing)}`)
    if (expiring > 0) {
      const names = expiringRows.map(c => {
        const left = new Date(c.not_after).getTime() - now
        return left <= 0 ? `${c.hostname} (expired)` : `${c.hostname} (expires in ${Math.max(1, Math.round(left / DAY_MS))} days)`
      })
      parts.push(`${expiring} expiring within ${READY_CERTIFICATE_EXPIRY_DAYS} days: ${listed(names, expiring)}`)
    }
    return { status: 'failing', detail: `${total} certificate(s) reported; ${parts.join('; ')}` }
  }
}
