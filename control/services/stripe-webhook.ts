/**
 * POST /billing/webhook: Stripe events, verified and applied exactly once.
 *
 * 1. The signature is checked on the raw body (StripeClient.verifyEvent).
 * 2. An event id already in stripe_events is answered 200 at once (Stripe redelivers for days).
 * 3. Whatever needs Stripe's API (the subscription behind a Checkout session, a card's brand and
 *    last4) is fetched before the transaction, so no lock waits on the network.
 * 4. One transaction inserts the event id and applies its effect; a duplicate racing us blocks on
 *    the id's unique index and then finds it taken. Any database error propagates: the route
 *    answers 5xx and Stripe retries. 2xx is only ever sent after the commit.
 *
 * Events (spec "Billing Endpoints"): checkout.session.completed and customer.subscription.* carry
 * a subscription snapshot (billing.ts storeSnapshot decides from the snapshot's own order, not
 * arrival order), followed by plan enforcement; invoice.payment_failed records the failure and
 * mails the owner. Other types are recorded and ignored.
 */
import type { Logger } from 'pino'
import type { WebhookResponse } from '../../proto/api/billing.ts'
import type { BillingConfig } from '../config.ts'
import type { Db, Queryable } from '../db/knex.ts'
import { apiError } from '../errors.ts'
import { paymentFailedMail } from './billing-mail.ts'
import { enforcePlanLimits } from './plan-enforcement.ts'
import { snapshotOf, storeSnapshot, type SubscriptionSnapshot } from './subscriptions.ts'
import type { MailMessage, Mailer } from './mail.ts'
import type { PlanService } from './plans.ts'
import { cardOf, type PaymentMethodCard, type StripeCheckoutSession, type StripeClient, type StripeEvent, type StripeInvoice, type StripeSubscription } from './stripe-client.ts'

export interface StripeWebhookOptions {
  db: Db
  stripe: StripeClient | undefined
  config: BillingConfig
  plans: PlanService
  mailer: Mailer
  now: () => Date
  logger: Logger
}

/** What an event will do, worked out before the transaction. */
type Prepared =
  | { kind: 'subscription', snapshot: SubscriptionSnapshot, userHint: string | undefined }
  | { kind: 'payment_failed', failure: PaymentFailure }
  | { kind: 'ignore', why: string }

interface PaymentFailure {
  invoiceId: string
  customerId: string
  subscriptionId: string | null
  attemptCount: number
  amountDue: number | null
  currency: string | null
  failedAt: Date
  nextAttemptAt: Date | null
  userHint: string | undefined
}

interface Outcome {
  duplicate: boolean
  mail: MailMessage[]
}

function isObject (value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value)
}

function idOf (value: unknown): string | undefined {
  if (typeof value === 'string') return value
  if (isObject(value) && typeof value.id === 'string') return value.id
  return undefined
}

function looksLikeSubscription (value: unknown): value is StripeSubscription {
  return isObject(value) && value.object === 'subscription' && typeof value.id === 'string' && typeof value.status === 'string' &&
    idOf(value.customer) !== undefined && isObject(value.items) && Array.isArray(value.items.data)
}

function metadataUserId (value: unknown): string | undefined {
  const id = isObject(value) && isObject(value.metadata) ? value.metadata.user_id : undefined
  return typeof id === 'string' ? id : undefined
}

/**
 * One line for the operator: knex prefixes a database error with its SQL (and bindings could hold
 * customer data), so only the driver's own message after the last " - " is kept.
 */
function failureSummary (err: unknown): string {
  const raw = err instanceof Error ? err.message : String(err)
  const sqlState = typeof (err as { code?: unknown })?.code === 'string' ? (err as { code: string }).code : undefined
  const text = sqlState !== undefined && raw.includes(' - ') ? raw.slice(raw.lastIndexOf(' - ') + 3) : raw
  const line = text.replace(/[\u0000-\u001f\u007f-\u009f]+/g, ' ').trim().slice(0, 300)
  const summary = sqlState !== undefined ? `${sqlState}: ${line}` : line
  return summary === '' ? 'unknown error' : summary
}

export class StripeWebhookProcessor {
  readonly #o: StripeWebhookOptions

  constructor (options: StripeWebhookOptions) {
    this.#o = options
  }

  async handle (rawBody: Buffer, signature: string | undefined): Promise<WebhookResponse> {
    const stripe = this.#o.stripe
    if (stripe === undefined) throw apiError('BILLING_NOT_CONFIGURED', 'Billing is not configured on this server: every account is on the free plan')
    const event = stripe.verifyEvent(rawBody, signature, this.#o.config.webhookToleranceSeconds, this.#o.now())
    if (typeof event.id !== 'string' || typeof event.type !== 'string' || typeof event.created !== 'number' || !isObject(event.data?.object)) {
      throw apiError('BAD_REQUEST', 'The webhook body is not a Stripe event')
    }
    if (await this.#o.db('stripe_events').where({ id: event.id }).first('id') !== undefined) return { received: true, duplicate: true }

    let prepared: Prepared
    let outcome: Outcome
    try {
      prepared = await this.#prepare(stripe, event)
      outcome = await this.#o.db.transaction(async (trx): Promise<Outcome> => {
        const now = this.#o.now()
        const inserted = await trx('stripe_events').insert({ id: event.id, type: event.type, created: event.created, processed_at: now }).onConflict('id').ignore().returning('id') as unknown[]
        if (inserted.length === 0) return { duplicate: true, mail: [] }
        const mail = await this.#apply(trx, event, prepared, now)
        await trx('stripe_webhook_failures').where({ event_id: event.id }).whereNull('resolved_at').update({ resolved_at: now })
        return { duplicate: false, mail }
      })
    } catch (err) {
      await this.#recordFailure(event, err)
      throw err
    }
    // After the commit: a mail never goes out for an effect that was rolled back.
    for (const message of outcome.mail) this.#o.mailer.send(message)
    if (!outcome.duplicate && prepared.kind === 'ignore') this.#o.logger.debug({ event: event.id, type: event.type, why: prepared.why }, 'stripe event ignored')
    return { received: true, duplicate: outcome.duplicate }
  }

  /** Best effort (the database may be what failed): the operator overview lists these. */
  async #recordFailure (event: StripeEvent, err: unknown): Promise<void> {
    const now = this.#o.now()
    const message = failureSummary(err)
    try {
      await this.#o.db.raw(`
        insert into stripe_webhook_failures as f (event_id, event_type, attempts, last_error, first_failed_at, last_failed_at)
        values (?, ?, 1, ?, ?, ?)
        on conflict (event_id) do update set attempts = f.attempts + 1, last_error = excluded.last_error, last_failed_at = excluded.last_failed_at, resolved_at = null`,
      [event.id.slice(0, 255), event.type.slice(0, 255), message, now, now])
    } catch (recordErr) {
      this.#o.logger.warn({ event: event.id, err: recordErr }, 'stripe webhook failure not recorded')
    }
  }

  async #prepare (stripe: StripeClient, event: StripeEvent): Promise<Prepared> {
    const object: unknown = event.data.object
    const at = { id: event.id, created: event.created }
    if (event.type === 'checkout.session.completed') {
      const session = object as StripeCheckoutSession
      const subscriptionId = idOf(session.subscription)
      if (session.mode !== 'subscription' || subscriptionId === undefined) return { kind: 'ignore', why: 'not a subscription checkout' }
      // The session carries no subscription state: read it, as of now, and order it as this event.
      const sub = await stripe.retrieveSubscription(subscriptionId)
      const userHint = typeof session.client_reference_id === 'string' ? session.client_reference_id : metadataUserId(session)
      return { kind: 'subscription', snapshot: snapshotOf(sub, stripe.prices, at, await this.#paymentMethodOf(stripe, sub)), userHint }
    }
    if (event.type.startsWith('customer.subscription.')) {
      if (!looksLikeSubscription(object)) return { kind: 'ignore', why: 'no subscription object' }
      return { kind: 'subscription', snapshot: snapshotOf(object, stripe.prices, at, await this.#paymentMethodOf(stripe, object)), userHint: metadataUserId(object) }
    }
    if (event.type === 'invoice.payment_failed') {
      const invoice = object as StripeInvoice & { subscription?: unknown }
      const customerId = idOf(invoice.customer)
      if (typeof invoice.id !== 'string' || customerId === undefined) return { kind: 'ignore', why: 'invoice without id or customer' }
      // Since API 2025-03-31 the subscription is under parent.subscription_details.
      const subscriptionId = idOf(invoice.parent?.subscription_details?.subscription) ?? idOf(invoice.subscription) ?? null
      return {
        kind: 'payment_failed',
        failure: {
          invoiceId: invoice.id,
          customerId,
          subscriptionId,
          attemptCount: typeof invoice.attempt_count === 'number' ? invoice.attempt_count : 1,
          amountDue: typeof invoice.amount_due === 'number' ? invoice.amount_due : null,
          currency: typeof invoice.currency === 'string' ? invoice.currency : null,
          failedAt: new Date(event.created * 1000),
          nextAttemptAt: typeof invoice.next_payment_attempt === 'number' ? new Date(invoice.next_payment_attempt * 1000) : null,
          userHint: metadataUserId(invoice.parent?.subscription_details) ?? metadataUserId(invoice),
        },
      }
    }
    return { kind: 'ignore', why: 'event type not handled' }
  }

  /** brand/last4 of the subscription's default payment method: expanded, already known, or fetched. */
  async #paymentMethodOf (stripe: StripeClient, sub: StripeSubscription): Promise<PaymentMethodCard | null> {
    const pm = sub.default_payment_method
    if (pm == null) return null
    if (typeof pm !== 'string') return cardOf(pm) ?? null
    const known = await this.#o.db('billing_subscriptions').where({ payment_method_id: pm }).whereNotNull('payment_method_brand').whereNotNull('payment_method_last4')
      .first('payment_method_brand', 'payment_method_last4') as { payment_method_brand: string, payment_method_last4: string } | undefined
    if (known !== undefined) return { id: pm, brand: known.payment_method_brand, last4: known.payment_method_last4 }
    return await stripe.retrievePaymentMethod(pm) ?? null
  }

  async #apply (trx: Queryable, event: StripeEvent, prepared: Prepared, now: Date): Promise<MailMessage[]> {
    if (prepared.kind === 'ignore') return []
    if (prepared.kind === 'subscription') {
      const { snapshot } = prepared
      const userId = await this.#userFor(trx, snapshot.customerId, prepared.userHint, now)
      if (userId === undefined) {
        this.#o.logger.warn({ event: event.id, customer: snapshot.customerId, subscription: snapshot.id }, 'stripe subscription for an unknown customer: ignored')
        return []
      }
      const stored = await storeSnapshot(trx, userId, snapshot, now)
      const result = await enforcePlanLimits(trx, userId, this.#o.plans, now)
      this.#o.logger.info({ event: event.id, type: event.type, subscription: snapshot.id, status: snapshot.status, stored, plan: result.plan }, 'stripe subscription event')
      return []
    }
    const f = prepared.failure
    const userId = await this.#userFor(trx, f.customerId, f.userHint, now)
    await trx.raw(`
      insert into billing_payment_failures as p (invoice_id, user_id, subscription_id, attempt_count, amount_due, currency, failed_at, next_attempt_at)
      values (?, ?, ?, ?, ?, ?, ?, ?)
      on conflict (invoice_id) do update set
        user_id = coalesce(p.user_id, excluded.user_id),
        subscription_id = coalesce(p.subscription_id, excluded.subscription_id),
        next_attempt_at = case when excluded.attempt_count >= p.attempt_count then excluded.next_attempt_at else p.next_attempt_at end,
        attempt_count = greatest(p.attempt_count, excluded.attempt_count),
        failed_at = greatest(p.failed_at, excluded.failed_at)`,
    [f.invoiceId, userId ?? null, f.subscriptionId, f.attemptCount, f.amountDue, f.currency, f.failedAt, f.nextAttemptAt])
    if (userId === undefined) return []
    const user = await trx('users').where({ id: userId }).first('email') as { email: string } | undefined
    if (user === undefined) return []
    const sub = f.subscriptionId === null ? undefined : await trx('billing_subscriptions').where({ id: f.subscriptionId }).first('plan') as { plan: string | null } | undefined
    this.#o.logger.info({ event: event.id, invoice: f.invoiceId, attempt: f.attemptCount, userId }, 'stripe payment failed')
    return [paymentFailedMail(user.email, sub?.plan ?? 'paid', f.nextAttemptAt)]
  }

  /** The account behind a Stripe customer: our own link, else the user id we put in the metadata. */
  async #userFor (trx: Queryable, customerId: string, hint: string | undefined, now: Date): Promise<string | undefined> {
    const linked = await trx('billing_customers').where({ stripe_customer_id: customerId }).first('user_id') as { user_id: string } | undefined
    if (linked !== undefined) return linked.user_id
    if (hint === undefined || hint.length > 64) return undefined
    const user = await trx('users').where({ id: hint }).first('id')
    if (user === undefined) return undefined
    await trx('billing_customers').insert({ user_id: hint, stripe_customer_id: customerId, created_at: now }).onConflict().ignore()
    return hint
  }
}
