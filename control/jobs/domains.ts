/**
 * Periodic custom-domain re-verification (services/domains.ts recheckDue): every `intervalMs`,
 * batches of verified domains whose last check is older than CC_DOMAIN_RECHECK_INTERVAL are
 * looked up again, and pending domains older than CC_DOMAIN_PENDING_TTL are dropped. Run once per
 * period across control replicas (jobs/periodic.ts); a pass is safe even when two overlap (rows
 * are claimed with SKIP LOCKED; the drop is one statement).
 */
import type { Logger } from 'pino'
import type { Db } from '../db/knex.ts'
import type { DomainService, RecheckResult } from '../services/domains.ts'
import { periodicJob } from './periodic.ts'

export interface DomainRecheckJobOptions {
  db: Db
  domains: DomainService
  logger: Logger
  /** How often to look for due domains; default 60 s (each domain is re-checked once per interval). */
  intervalMs?: number
}

/** Runs passes until nothing is due (bounded: at most `maxBatches` per tick). */
export async function recheckDomains (domains: DomainService, maxBatches = 50): Promise<RecheckResult> {
  const total: RecheckResult = { checked: 0, failing: 0, lapsed: 0, restored: 0 }
  for (let i = 0; i < maxBatches; i++) {
    const r = await domains.recheckDue()
    total.checked += r.checked
    total.failing += r.failing
    total.lapsed += r.lapsed
    total.restored += r.restored
    if (r.checked === 0) break
  }
  return total
}

export const startDomainRecheck = periodicJob<DomainRecheckJobOptions>('domain-recheck', 60_000, async ({ domains, logger }) => {
  const result = await recheckDomains(domains)
  if (result.failing > 0 || result.lapsed > 0 || result.restored > 0) logger.info(result, 'custom domains re-checked')
  const expired = await domains.expirePending()
  if (expired > 0) logger.info({ expired }, 'unverified custom domains expired')
})
