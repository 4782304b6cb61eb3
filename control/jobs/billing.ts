/**
 * Periodic plan enforcement (services/billing.ts enforceDue): a past_due subscription's grace
 * period runs out with no webhook to say so, and room can appear when an owner deletes an
 * instance; both are picked up here. Also forgets old webhook event ids. Idempotent, and run
 * once per period across control replicas (jobs/periodic.ts).
 */
import type { Logger } from 'pino'
import type { Db } from '../db/knex.ts'
import type { BillingService } from '../services/billing.ts'
import { periodicJob } from './periodic.ts'

export interface BillingJobOptions {
  db: Db
  billing: BillingService
  logger: Logger
  /** Default 5 minutes. */
  intervalMs?: number
}

export const startBillingEnforcement = periodicJob<BillingJobOptions>('billing-enforcement', 5 * 60_000, async ({ billing }) => {
  await billing.enforceDue()
  await billing.pruneEvents()
})
