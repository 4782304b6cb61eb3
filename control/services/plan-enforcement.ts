/**
 * Plan enforcement (spec "Subscription Plans"): an account over its plan keeps its oldest instances
 * (and each instance its oldest domains) up to the limits; the rest are suspended, never deleted,
 * and come back when the plan allows them again. Suspended instances and domains are not routed.
 */
import type { SubscriptionPlan } from '../../proto/api/user.ts'
import type { Queryable } from '../db/knex.ts'
import { bumpConfigVersion } from '../db/notify.ts'
import type { PlanService } from './plans.ts'

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
