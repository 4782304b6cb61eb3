/**
 * Subscription plans and their limits (spec: "Subscription Plans"). Which plan a user is on comes
 * from a SubscriptionSource; until billing lands every account is on Free with status `none`.
 * Billing replaces the source, nothing else changes.
 */
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
