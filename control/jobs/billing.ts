/**
 * Periodic plan enforcement (services/billing.ts enforceDue): a past_due subscription's grace
 * period runs out with no webhook to say so, and room can appear when an owner deletes an
 * instance; both are picked up here. Also forgets old webhook event ids. Idempotent and safe
 * with several control replicas.
 */
import type { Logger } from 'pino'
import type { BillingService } from '../services/billing.ts'

export interface BillingJobOptions {
  billing: BillingService
  logger: Logger
  /** Default 5 minutes. */
  intervalMs?: number
}

export function startBillingEnforcement (options: BillingJobOptions): { stop (): void } {
  let running = false
  const timer = setInterval(() => {
    if (running) return
    running = true
    options.billing.enforceDue().then(async () => await options.billing.pruneEvents()).catch(err => {
      options.logger.warn({ err: (err as Error).message }, 'plan enforcement pass failed')
    }).finally(() => { running = false })
  }, options.intervalMs ?? 5 * 60_000)
  timer.unref()
  return { stop () { clearInterval(timer) } }
}
