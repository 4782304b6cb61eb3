/**
 * Billing (spec "Billing Endpoints"): Checkout and Customer Portal sessions, the subscription as the
 * API reports it, and the upkeep around them (processed webhook events, due plan enforcement). Which
 * plan an account is on: entitlements.ts; our copy of the subscriptions: subscriptions.ts; what a
 * plan change suspends: plan-enforcement.ts.
 */
import type { Logger } from 'pino'
import { CHECKOUT_POLL_INTERVAL_MS, type CheckoutResponse, type PaidPlan, type PortalResponse, type SubscriptionResponse } from '../../proto/api/billing.ts'
import type { BillingConfig } from '../config.ts'
import type { Db, Queryable } from '../db/knex.ts'
import { apiError } from '../errors.ts'
import { isoSeconds } from '../time.ts'
import { entitlementOf, LIVE_STATUSES, PLAN_RANK, type Entitlement } from './entitlements.ts'
import { enforcePlanLimits } from './plan-enforcement.ts'
import { limitsBody, planUsage, type PlanService } from './plans.ts'
import { isAllowedReturnUrl } from './return-urls.ts'
import type { StripeClient } from './stripe-client.ts'
import { subscriptionRows } from './subscriptions.ts'

/** How long processed webhook event ids are kept (Stripe retries for up to three days). */
export const EVENT_RETENTION_DAYS = 30

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
    const live = rows.filter(r => LIVE_STATUSES.has(r.status)).sort((a, b) => PLAN_RANK[b.plan ?? 'free'] - PLAN_RANK[a.plan ?? 'free'])[0]
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
