/**
 * Entitlement (spec "Subscription Plans"): which plan each account is on, from our copy of its Stripe
 * subscriptions, as a pure function of rows and time. `active`/`trialing` grant the subscription's
 * plan; `past_due` keeps it for the grace period counted from the start of the unpaid period (a
 * timestamp of the subscription itself, not of when we heard about it); anything else is Free.
 */
import type { SubscriptionPlan, SubscriptionStatus } from '../../proto/api/user.ts'
import type { Subscription, SubscriptionSource } from './plans.ts'
import { subscriptionRows, type SubscriptionRow } from './subscriptions.ts'

export const PLAN_RANK: Record<SubscriptionPlan, number> = { free: 0, pro: 1, business: 2 }

/** Statuses of a subscription that still bills (a new Checkout would double-charge). */
export const LIVE_STATUSES = new Set(['active', 'trialing', 'past_due', 'unpaid', 'paused'])

/** Stripe's statuses in the contract's vocabulary (it has no `incomplete_expired` nor `paused`). */
export function reportedStatus (stripeStatus: string): SubscriptionStatus {
  switch (stripeStatus) {
    case 'active': case 'trialing': case 'past_due': case 'canceled': case 'incomplete': case 'unpaid': return stripeStatus
    case 'incomplete_expired': return 'canceled'
    default: return 'unpaid'
  }
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

/** PlanService's source of truth once billing exists. */
export function billingSubscriptionSource (graceSeconds: number, now: () => Date): SubscriptionSource {
  return async (db, userId) => {
    const { plan, status } = entitlementOf(await subscriptionRows(db, userId), now(), graceSeconds)
    return { plan, status }
  }
}
