/**
 * The alert job: owner mails for instances offline and back (services/instance-alerts.ts) and the
 * operator webhook's events (services/operator-events.ts). Every CC_ALERT_INTERVAL, once per period
 * across control replicas (jobs/periodic.ts); each mail and event is also claimed in the database,
 * so even two overlapping passes send it once. One part failing does not stop the other.
 */
import type { Logger } from 'pino'
import type { Db } from '../db/knex.ts'
import type { InstanceAlertService } from '../services/instance-alerts.ts'
import type { OperatorEventService } from '../services/operator-events.ts'
import { startPeriodicJob } from './periodic.ts'

export interface AlertJobOptions {
  db: Db
  instanceAlerts: InstanceAlertService
  /** Undefined when CC_OPERATOR_WEBHOOK_URL is not set. */
  operatorEvents: OperatorEventService | undefined
  logger: Logger
  intervalMs: number
}

/** One pass of both parts; errors are logged, not thrown. */
export async function runAlerts (options: Omit<AlertJobOptions, 'db' | 'intervalMs'>): Promise<void> {
  try {
    await options.instanceAlerts.run()
  } catch (err) {
    options.logger.warn({ err: (err as Error).message }, 'instance alerts failed')
  }
  try {
    const sent = await options.operatorEvents?.run() ?? 0
    if (sent > 0) options.logger.info({ events: sent }, 'operator events queued')
  } catch (err) {
    options.logger.warn({ err: (err as Error).message }, 'operator events failed')
  }
}

export function startAlerts (options: AlertJobOptions): { stop (): void } {
  return startPeriodicJob({
    name: 'alerts',
    db: options.db,
    intervalMs: options.intervalMs,
    logger: options.logger,
    run: async () => { await runAlerts(options) },
  })
}
