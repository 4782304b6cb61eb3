/**
 * Billing (spec "Billing Endpoints", "Subscription Plans"): which plan each account is on, from our
 * copy of its Stripe subscriptions; Checkout and Customer Portal sessions; and plan enforcement.
 *
 * - Entitlement: `active`/`trialing` grant the subscription's plan; `past_due` keeps it for the
 *   grace period counted from the start of the unpaid period (a timestamp of the subscription
 *   itself, not of when we heard about it); anything else is Free.
 * - Subscription rows change only through `storeSnapshot`, which keeps whichever snapshot sorts
 *   last (ended first, then the Stripe event's `created`, a status rank, the event id): the same
 *   set of webhook deliveries gives the same row in any order and any number of times.
 * - Enforcement: an account over its plan keeps its oldest instances (and each instance its oldest
 *   domains) up to the limits; the rest are suspended, never deleted, and come back when the plan
 *   allows them again. Suspended instances and domains are not routed.
 */
import type { Logger } from 'pino'
import { CHECKOUT_POLL_INTERVAL_MS, type CheckoutResponse, type PaidPlan, type PortalResponse, type SubscriptionResponse } from '../../proto/api/billing.ts'
import type { SubscriptionPlan, SubscriptionStatus } from '../../proto/api/user.ts'
import type { BillingConfig } from '../config.ts'
import type { Db, Queryable } from '../db/knex.ts'
import { apiError } from '../errors.ts'
import { isoSeconds } from '../time.ts'
import type { MailMessage } from './mail.ts'
import { limitsBody, planUsage, type PlanService, type Subscription, type SubscriptionSource } from './plans.ts'
import type { PaymentMethodCard, StripeClient, StripeSubscription } from './stripe-client.ts'
import { bumpConfigVersion } from '../db/notify.ts'

/** How long processed webhook event ids are kept (Stripe retries for up to three days). */
export const EVENT_RETENTION_DAYS = 30

export const PLAN_RANK: Record<SubscriptionPlan, number> = { free: 0, pro: 1, business: 2 }

/** Stripe statuses after which a subscription never grants anything again. */
const ENDED = new Set(['canceled', 'incomplete_expired'])
/** Statuses of a subscription that still bills (a new Checkout would double-charge). */
const LIVE = new Set(['active', 'trialing', 'past_due', 'unpaid', 'paused'])
/** Tie-break between snapshots of the same second: the later stage of the life cycle wins. */
const STATUS_RANK: Record<string, number> = { incomplete: 0, trialing: 1, active: 2, past_due: 3, unpaid: 4, paused: 5, incomplete_expired: 6, canceled: 7 }

/** Stripe's statuses in the contract's vocabulary (it has no `incomplete_expired` nor `paused`). */
export function reportedStatus (stripeStatus: string): SubscriptionStatus {
  switch (stripeStatus) {
    case 'active': case 'trialing': case 'past_due': case 'canceled': case 'incomplete': case 'unpaid': return stripeStatus
    case 'incomplete_expired': return 'canceled'
    default: return 'unpaid'
  }
}

export interface SubscriptionRow {
  id: string
  user_id: string
  customer_id: string
  status: string
  plan: SubscriptionPlan | null
  price_id: string | null
  current_period_start: Date | null
  current_period_end: Date | null
  cancel_at_period_end: boolean
  canceled_at: Date | null
  ended_at: Date | null
  payment_method_id: string | null
  payment_method_brand: string | null
  payment_method_last4: string | null
  version_ended: boolean
  version_created: string | number
  version_rank: number
  version_event: string
}

export interface Entitlement extends Subscription {
  /** The subscription the answer comes from (undefined: never subscribed). */
  row?: SubscriptionRow
}

function isEntitled (row: SubscriptionRow, now: Date, graceSeconds: number): boolean {
  if (row.plan === null || row.plan === 'free') return false
  if (row.status === 'active' || row.status === 'trialing') return true
  if (row.status !== 'past_due') return false
  const since = row.current_period_start === null ? now.getTime() : new Date(row.current_period_start).getTime()
  return now.getTime() < since + graceSeconds * 1000
}

function newer (a: SubscriptionRow, b: SubscriptionRow): boolean {
  const ka = [Number(a.version_created), a.version_rank, a.version_event] as const
  const kb = [Number(b.version_created), b.version_rank, b.version_event] as const
  for (let i = 0; i < ka.length; i++) if (ka[i] !== kb[i]) return ka[i] > kb[i]
  return false
}

/** The plan in force for an account with these subscriptions: a pure function of rows and time. */
export function entitlementOf (rows: SubscriptionRow[], now: Date, graceSeconds: number): Entitlement {
  let best: SubscriptionRow | undefined
  for (const row of rows) {
    if (!isEntitled(row, now, graceSeconds)) continue
    if (best === undefined || PLAN_RANK[row.plan!] > PLAN_RANK[best.plan!] || (row.plan === best.plan && newer(row, best))) best = row
  }
  if (best !== undefined) return { plan: best.plan!, status: reportedStatus(best.status), row: best }
  let latest: SubscriptionRow | undefined
  for (const row of rows) if (latest === undefined || newer(row, latest)) latest = row
  if (latest === undefined) return { plan: 'free', status: 'none' }
  return { plan: 'free', status: reportedStatus(latest.status), row: latest }
}

async function subscriptionRows (db: Queryable, userId: string): Promise<SubscriptionRow[]> {
  return await db('billing_subscriptions').where({ user_id: userId }) as SubscriptionRow[]
}

/** PlanService's source of truth once billing exists. */
export function billingSubscriptionSource (graceSeconds: number, now: () => Date): SubscriptionSource {
  return async (db, userId) => {
    const { plan, status } = entitlementOf(await subscriptionRows(db, userId), now(), graceSeconds)
    return { plan, status }
  }
}

/** What storeSnapshot stores: one Stripe subscription as seen by one event. */
export interface SubscriptionSnapshot {
  id: string
  customerId: string
  status: string
  plan: SubscriptionPlan | null
  priceId: string | null
  periodStart: Date | null
  periodEnd: Date | null
  cancelAtPeriodEnd: boolean
  canceledAt: Date | null
  endedAt: Date | null
  /** Stripe's start_date (else created): when the subscription began. */
  startedAt: Date | null
  paymentMethod: PaymentMethodCard | null
  /** The event the snapshot came with: its `created` (seconds) and id order snapshots. */
  event: { id: string, created: number }
}

function fromSeconds (value: number | null | undefined): Date | null {
  return typeof value === 'number' && Number.isFinite(value) ? new Date(value * 1000) : null
}

/** The parts of a Stripe subscription we keep. The period lives on the item since API 2025-03-31. */
export function snapshotOf (sub: StripeSubscription, prices: { pro: string, business: string }, event: { id: string, created: number }, paymentMethod: PaymentMethodCard | null): SubscriptionSnapshot {
  const item = sub.items?.data?.[0] as (StripeSubscription['items']['data'][number] & { current_period_start?: number, current_period_end?: number }) | undefined
  const legacy = sub as unknown as { current_period_start?: number, current_period_end?: number }
  const priceId = item?.price?.id ?? null
  const plan: SubscriptionPlan | null = priceId === prices.pro ? 'pro' : priceId === prices.business ? 'business' : null
  return {
    id: sub.id,
    customerId: typeof sub.customer === 'string' ? sub.customer : sub.customer.id,
    status: sub.status,
    plan,
    priceId,
    periodStart: fromSeconds(item?.current_period_start ?? legacy.current_period_start),
    periodEnd: fromSeconds(item?.current_period_end ?? legacy.current_period_end),
    cancelAtPeriodEnd: sub.cancel_at_period_end === true,
    canceledAt: fromSeconds(sub.canceled_at),
    endedAt: fromSeconds(sub.ended_at),
    startedAt: fromSeconds(sub.start_date ?? sub.created),
    paymentMethod,
    event,
  }
}

/**
 * Inserts or replaces the subscription row when `snap` sorts after the stored one (row comparison
 * in SQL, so concurrent deliveries cannot interleave a read and a write). Returns true if stored.
 */
export async function storeSnapshot (db: Queryable, userId: string, snap: SubscriptionSnapshot, now: Date): Promise<boolean> {
  const result = await db.raw(`
    insert into billing_subscriptions as s (id, user_id, customer_id, status, plan, price_id, current_period_start, current_period_end,
      cancel_at_period_end, canceled_at, ended_at, payment_method_id, payment_method_brand, payment_method_last4,
      version_ended, version_created, version_rank, version_event, updated_at, started_at)
    values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    on conflict (id) do update set
      user_id = excluded.user_id, customer_id = excluded.customer_id, status = excluded.status, plan = excluded.plan,
      price_id = excluded.price_id, current_period_start = excluded.current_period_start, current_period_end = excluded.current_period_end,
      cancel_at_period_end = excluded.cancel_at_period_end, canceled_at = excluded.canceled_at, ended_at = excluded.ended_at,
      payment_method_id = excluded.payment_method_id, payment_method_brand = excluded.payment_method_brand,
      payment_method_last4 = excluded.payment_method_last4, version_ended = excluded.version_ended,
      version_created = excluded.version_created, version_rank = excluded.version_rank, version_event = excluded.version_event,
      updated_at = excluded.updated_at, started_at = coalesce(excluded.started_at, s.started_at)
    where (excluded.version_ended, excluded.version_created, excluded.version_rank, excluded.version_event)
        > (s.version_ended, s.version_created, s.version_rank, s.version_event)
    returning id`, [
    snap.id, userId, snap.customerId, snap.status, snap.plan, snap.priceId, snap.periodStart, snap.periodEnd,
    snap.cancelAtPeriodEnd, snap.canceledAt, snap.endedAt, snap.paymentMethod?.id ?? null, snap.paymentMethod?.brand ?? null, snap.paymentMethod?.last4 ?? null,
    ENDED.has(snap.status), snap.event.created, STATUS_RANK[snap.status] ?? 0, snap.event.id, now, snap.startedAt,
  ]) as { rows: unknown[] }
  return result.rows.length > 0
}

export interface EnforcementResult {
  plan: SubscriptionPlan
  suspendedInstances: string[]
  restoredInstances: string[]
  suspendedDomains: string[]
  restoredDomains: string[]
}

/**
 * Suspends what is over the account's limits and restores what fits again, oldest first. Locks
 * the user row, as instance creation does, so a create cannot slip past a downgrade. Bumps the
 * gateway configuration version when the routed set changed. Call inside a transaction.
 */
export async function enforcePlanLimits (trx: Queryable, userId: string, plans: PlanService, now: Date): Promise<EnforcementResult> {
  const owner = await trx('users').where({ id: userId }).forUpdate().first('id')
  const limits = await plans.limitsOf(userId, trx)
  const out: EnforcementResult = { plan: limits.plan, suspendedInstances: [], restoredInstances: [], suspendedDomains: [], restoredDomains: [] }
  if (owner === undefined) return out

  const instances = await trx('instances').where({ user_id: userId }).orderBy([{ column: 'created_at' }, { column: 'id' }])
    .select('id', 'suspended_at') as Array<{ id: string, suspended_at: Date | null }>
  instances.forEach((row, index) => {
    const over = index >= limits.instances
    if (over && row.suspended_at === null) out.suspendedInstances.push(row.id)
    if (!over && row.suspended_at !== null) out.restoredInstances.push(row.id)
  })
  const domains = await trx('custom_domains').where({ user_id: userId }).orderBy([{ column: 'instance_id' }, { column: 'created_at' }, { column: 'domain' }])
    .select('domain', 'instance_id', 'suspended_at') as Array<{ domain: string, instance_id: string, suspended_at: Date | null }>
  const perInstance = new Map<string, number>()
  for (const row of domains) {
    const index = perInstance.get(row.instance_id) ?? 0
    perInstance.set(row.instance_id, index + 1)
    const over = index >= limits.customDomainsPerInstance
    if (over && row.suspended_at === null) out.suspendedDomains.push(row.domain)
    if (!over && row.suspended_at !== null) out.restoredDomains.push(row.domain)
  }

  if (out.suspendedInstances.length > 0) await trx('instances').whereIn('id', out.suspendedInstances).update({ suspended_at: now, updated_at: now })
  if (out.restoredInstances.length > 0) await trx('instances').whereIn('id', out.restoredInstances).update({ suspended_at: null, updated_at: now })
  if (out.suspendedDomains.length > 0) await trx('custom_domains').whereIn('domain', out.suspendedDomains).update({ suspended_at: now, updated_at: now })
  if (out.restoredDomains.length > 0) await trx('custom_domains').whereIn('domain', out.restoredDomains).update({ suspended_at: null, updated_at: now })
  const changed = out.suspendedInstances.length + out.restoredInstances.length + out.suspendedDomains.length + out.restoredDomains.length
  if (changed > 0) await bumpConfigVersion(trx)
  return out
}

export interface BillingServiceOptions {
  db: Db
  config: BillingConfig
  /** Public base URL: Checkout returns to <publicUrl>/billing/success and /billing/cancel. */
  publicUrl: string
  plans: PlanService
  /** undefined: billing is not configured. */
  stripe: StripeClient | undefined
  now: () => Date
  logger: Logger
}

function notConfigured (): Error {
  return apiError('BILLING_NOT_CONFIGURED', 'Billing is not configured on this server: every account is on the free plan')
}

/** Is `url` under one of `allowed` (same origin, path at or below the entry's path)? */
export function isAllowedReturnUrl (url: string, allowed: string[]): boolean {
  let target: URL
  try { target = new URL(url) } catch { return false }
  if (!['http:', 'https:'].includes(target.protocol) || target.username !== '' || target.password !== '') return false
  return allowed.some(entry => {
    const base = new URL(entry)
    if (base.origin !== target.origin) return false
    const prefix = base.pathname.endsWith('/') ? base.pathname : `${base.pathname}/`
    return target.pathname === base.pathname || target.pathname.startsWith(prefix)
  })
}

export class BillingService {
  readonly #o: BillingServiceOptions

  constructor (options: BillingServiceOptions) {
    this.#o = options
  }

  get configured (): boolean {
    return this.#o.stripe !== undefined
  }

  get stripe (): StripeClient {
    if (this.#o.stripe === undefined) throw notConfigured()
    return this.#o.stripe
  }

  /** Entitlement with the subscription it comes from. */
  async entitlement (userId: string, db: Queryable = this.#o.db): Promise<Entitlement> {
    return entitlementOf(await subscriptionRows(db, userId), this.#o.now(), this.#o.config.pastDueGraceSeconds)
  }

  /** GET /billing/subscription: the plan in force, Free when there is none (also without Stripe), its limits and usage. */
  async subscription (userId: string): Promise<SubscriptionResponse> {
    const { plan, status, row } = await this.entitlement(userId)
    const usage = await planUsage(this.#o.db, userId)
    return {
      status,
      plan,
      current_period_start: row?.current_period_start == null ? null : isoSeconds(row.current_period_start),
      current_period_end: row?.current_period_end == null ? null : isoSeconds(row.current_period_end),
      cancel_at_period_end: row?.cancel_at_period_end ?? false,
      payment_method: row?.payment_method_brand == null || row.payment_method_last4 == null ? null : { brand: row.payment_method_brand, last4: row.payment_method_last4 },
      limits: limitsBody(plan),
      usage,
    }
  }

  /** The user's Stripe customer, created on first need (once: our row, and Stripe's idempotency key). */
  async ensureCustomer (userId: string): Promise<string> {
    const stripe = this.stripe
    const known = await this.#o.db('billing_customers').where({ user_id: userId }).first('stripe_customer_id') as { stripe_customer_id: string } | undefined
    if (known !== undefined) return known.stripe_customer_id
    const user = await this.#o.db('users').where({ id: userId }).first('email', 'name') as { email: string, name: string } | undefined
    if (user === undefined) throw apiError('UNAUTHORIZED', 'Invalid or expired token')
    const customerId = await stripe.createCustomer(userId, user.email, user.name)
    await this.#o.db('billing_customers').insert({ user_id: userId, stripe_customer_id: customerId, created_at: this.#o.now() }).onConflict('user_id').ignore()
    const stored = await this.#o.db('billing_customers').where({ user_id: userId }).first('stripe_customer_id') as { stripe_customer_id: string }
    return stored.stripe_customer_id
  }

  async checkout (userId: string, plan: PaidPlan): Promise<CheckoutResponse> {
    const stripe = this.stripe
    const rows = await subscriptionRows(this.#o.db, userId)
    const live = rows.filter(r => LIVE.has(r.status)).sort((a, b) => PLAN_RANK[b.plan ?? 'free'] - PLAN_RANK[a.plan ?? 'free'])[0]
    if (live !== undefined) {
      const current = live.plan ?? 'unknown'
      if (live.status === 'past_due' || live.status === 'unpaid') {
        throw apiError('ALREADY_SUBSCRIBED', `Your ${current} subscription has an unpaid invoice: update your payment method in the billing portal instead of subscribing again`, { current_plan: current, requested_plan: plan, status: live.status })
      }
      if (live.plan === plan) throw apiError('ALREADY_SUBSCRIBED', `You are already on the ${plan} plan`, { current_plan: current, requested_plan: plan, status: live.status })
      throw apiError('ALREADY_SUBSCRIBED', `You already have a ${current} subscription: change plans in the billing portal (POST /v1/billing/portal)`, { current_plan: current, requested_plan: plan, status: live.status })
    }
    const customerId = await this.ensureCustomer(userId)
    const session = await stripe.createCheckoutSession({
      customerId,
      priceId: stripe.prices[plan],
      userId,
      plan,
      // Stripe fills in {CHECKOUT_SESSION_ID}; the pages only say what happened, polling does the rest.
      successUrl: `${this.#o.publicUrl}/billing/success?session_id={CHECKOUT_SESSION_ID}`,
      cancelUrl: `${this.#o.publicUrl}/billing/cancel`,
    })
    return { checkout_url: session.url, session_id: session.id, poll_interval: CHECKOUT_POLL_INTERVAL_MS }
  }

  async portal (userId: string, returnUrl: string | undefined): Promise<PortalResponse> {
    const stripe = this.stripe
    const allowed = this.#o.config.portalReturnUrls
    const target = returnUrl ?? allowed[0]
    if (!isAllowedReturnUrl(target, allowed)) {
      throw apiError('VALIDATION_ERROR', 'The request data is invalid', { fields: { return_url: [`must start with one of: ${allowed.join(', ')}`] } })
    }
    const customerId = await this.ensureCustomer(userId)
    return { portal_url: await stripe.createPortalSession(customerId, target) }
  }

  /**
   * Re-applies limits where time alone changes them (a past_due grace running out) or where room
   * may have appeared (something suspended while the owner deleted others). Returns accounts changed.
   */
  /**
   * Forgets processed event ids older than `retentionDays`: Stripe stops redelivering after three
   * days, and a delivery signed that long ago fails the timestamp check anyway.
   */
  async pruneEvents (retentionDays = EVENT_RETENTION_DAYS): Promise<number> {
    const cutoff = new Date(this.#o.now().getTime() - retentionDays * 86400_000)
    const result: unknown = await this.#o.db('stripe_events').where('processed_at', '<', cutoff).delete()
    // pg answers a number, the PGlite dialect a result object.
    if (typeof result === 'number') return result
    const r = result as { rowCount?: number, affectedRows?: number } | null
    return r?.rowCount ?? r?.affectedRows ?? 0
  }

  async enforceDue (): Promise<number> {
    const users = await this.#o.db.select('user_id').from('billing_subscriptions').where('status', 'past_due')
      .union(q => { void q.select('user_id').from('instances').whereNotNull('suspended_at') })
      .union(q => { void q.select('user_id').from('custom_domains').whereNotNull('suspended_at') }) as Array<{ user_id: string }>
    let changed = 0
    for (const { user_id: userId } of users) {
      const result = await this.#o.db.transaction(async trx => await enforcePlanLimits(trx, userId, this.#o.plans, this.#o.now()))
      if (result.suspendedInstances.length + result.restoredInstances.length + result.suspendedDomains.length + result.restoredDomains.length > 0) {
        changed++
        this.#o.logger.info({ userId, ...result }, 'plan limits applied')
      }
    }
    return changed
  }
}

/** No display name in it: see the note on message texts in mail.ts. */
export function paymentFailedMail (to: string, plan: string, nextAttempt: Date | null): MailMessage {
  const retry = nextAttempt === null ? '' : ` We will try again on ${isoSeconds(nextAttempt).slice(0, 10)}.`
  return {
    to,
    subject: 'Your Erugo Cloud payment failed',
    text: `Hello,\n\nThe latest payment for your Erugo Cloud ${plan} plan did not go through.${retry} Update your payment method from the Cloud Connect settings of your Erugo admin panel (Manage billing) to keep your plan; until then it stays active for a grace period, after which your account moves to the free plan and instances or custom domains over its limits are suspended (not deleted).\n`,
    links: [],
  }
}
