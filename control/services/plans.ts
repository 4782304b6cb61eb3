/**
 * Subscription plans and their limits (spec: "Subscription Plans"). Which plan a user is on comes
 * from a SubscriptionSource; until billing lands every account is on Free with status `none`.
 * Billing replaces the source, nothing else changes.
 */
import type { PlanLimitsBody, PlansResponse, PlanUsage } from '../../proto/api/billing.ts'
import type { SubscriptionPlan, SubscriptionStatus } from '../../proto/api/user.ts'
import type { Queryable } from '../db/knex.ts'

export interface PlanLimits {
  instances: number
  customDomainsPerInstance: number
}

/** Spec table: Free 1 instance / no custom domain; Pro 3 / 1 per instance; Business 10 / 5 per instance. */
export const PLAN_LIMITS: Record<SubscriptionPlan, PlanLimits> = {
  free: { instances: 1, customDomainsPerInstance: 0 },
  pro: { instances: 3, customDomainsPerInstance: 1 },
  business: { instances: 10, customDomainsPerInstance: 5 },
}

/** A plan's limits as the API publishes them. */
export function limitsBody (plan: SubscriptionPlan): PlanLimitsBody {
  return { instances: PLAN_LIMITS[plan].instances, custom_domains_per_instance: PLAN_LIMITS[plan].customDomainsPerInstance }
}

/** GET /billing/plans: the table above, cheapest first. */
export function plansBody (): PlansResponse {
  return { plans: (['free', 'pro', 'business'] as const).map(plan => ({ plan, ...limitsBody(plan) })) }
}

/** What `userId` holds, counted the way instance and domain creation count it against the limits. */
export async function planUsage (db: Queryable, userId: string): Promise<PlanUsage> {
  const instances = await db('instances').where({ user_id: userId }).count('* as n').first() as { n: string | number }
  const domains = await db('custom_domains').where({ user_id: userId }).groupBy('instance_id').select('instance_id').count('* as n') as Array<{ n: string | number }>
  const counts = domains.map(row => Number(row.n))
  return {
    instances: Number(instances.n),
    custom_domains: counts.reduce((sum, n) => sum + n, 0),
    custom_domains_max_per_instance: counts.reduce((max, n) => Math.max(max, n), 0),
  }
}

export interface Subscription {
  plan: SubscriptionPlan
  status: SubscriptionStatus
}

export type SubscriptionSource = (db: Queryable, userId: string) => Promise<Subscription>

/** Statuses under which a paid plan's limits apply; anything else falls back to Free. */
const ENTITLED: ReadonlySet<SubscriptionStatus> = new Set(['active', 'trialing', 'past_due'])

export const freeForEveryone: SubscriptionSource = async () => ({ plan: 'free', status: 'none' })

export class PlanService {
  readonly #db: Queryable
  readonly #source: SubscriptionSource

  constructor (db: Queryable, source: SubscriptionSource = freeForEveryone) {
    this.#db = db
    this.#source = source
  }

  async subscriptionOf (userId: string, db: Queryable = this.#db): Promise<Subscription> {
    return await this.#source(db, userId)
  }

  /** The limits in force: the paid plan's while the subscription entitles, else Free's. */
  async limitsOf (userId: string, db: Queryable = this.#db): Promise<PlanLimits & { plan: SubscriptionPlan }> {
    const sub = await this.subscriptionOf(userId, db)
    const plan = sub.plan !== 'free' && ENTITLED.has(sub.status) ? sub.plan : 'free'
    return { plan, ...PLAN_LIMITS[plan] }
  }
}
