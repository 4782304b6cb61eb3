/**
 * Retention of per-instance traffic (services/usage.ts prune): hourly usage past
 * CC_USAGE_RETENTION_DAYS and access-log rows past CC_ACCESS_LOG_RETENTION_DAYS are deleted.
 * Run once per period across control replicas (jobs/periodic.ts).
 */
import type { Logger } from 'pino'
import type { Db } from '../db/knex.ts'
import type { UsageService } from '../services/usage.ts'
import { periodicJob } from './periodic.ts'

export interface TrafficRetentionOptions {
  db: Db
  usage: UsageService
  logger: Logger
  /** Default 1 hour. */
  intervalMs?: number
}

export const startTrafficRetention = periodicJob<TrafficRetentionOptions>('traffic-retention', 3_600_000, async ({ usage, logger }) => {
  const pruned = await usage.prune()
  if (pruned.usage > 0 || pruned.accessLog > 0) logger.info(pruned, 'pruned instance usage and access log past their retention')
})
