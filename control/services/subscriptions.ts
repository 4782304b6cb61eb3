/**
 * Our copy of each account's Stripe subscriptions (table billing_subscriptions). Rows change only
 * through `storeSnapshot`, which keeps whichever snapshot sorts last (ended first, then the Stripe
 * event's `created`, a status rank, the event id): the same set of webhook deliveries gives the same
 * row in any order and any number of times.
 */
import type { SubscriptionPlan } from '../../proto/api/user.ts'
import type { Queryable } from '../db/knex.ts'
import type { PaymentMethodCard, StripeSubscription } from './stripe-client.ts'

/** Stripe statuses after which a subscription never grants anything again. */
const ENDED = new Set(['canceled', 'incomplete_expired'])
/** Tie-break between snapshots of the same second: the later stage of the life cycle wins. */
const STATUS_RANK: Record<string, number> = { incomplete: 0, trialing: 1, active: 2, past_due: 3, unpaid: 4, paused: 5, incomplete_expired: 6, canceled: 7 }

/** One row of billing_subscriptions. */
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

/** Every subscription row of an account. */
export async function subscriptionRows (db: Queryable, userId: string): Promise<SubscriptionRow[]> {
  return await db('billing_subscriptions').where({ user_id: userId }) as SubscriptionRow[]
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
