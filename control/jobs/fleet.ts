/**
 * The fleet sweep (rpc/placement.ts): publishes which gateways are alive and which sessions live,
 * re-places instances of gateways that stopped reporting, fills missing backups. Runs every report
 * interval, once per period across control replicas (jobs/periodic.ts), so a lapse shows in
 * snapshots within one interval of the alive window ending. The work is one function
 * (RpcService.sweep) that tests call with their own clock.
 */
import type { Logger } from 'pino'
import type { Db } from '../db/knex.ts'
import type { RpcService } from '../rpc/service.ts'
import { startPeriodicJob } from './periodic.ts'

export interface FleetSweepOptions {
  db: Db
  rpc: Pick<RpcService, 'sweep'>
  intervalMs: number
  logger: Logger
}

/** Runs rpc.sweep() every intervalMs (first run after one interval); stop() ends it. */
export function startFleetSweep (options: FleetSweepOptions): { stop (): void } {
  return startPeriodicJob({
    name: 'fleet-sweep',
    db: options.db,
    intervalMs: Math.max(options.intervalMs, 1_000),
    logger: options.logger,
    run: async () => {
      const result = await options.rpc.sweep()
      if (result.version !== null) options.logger.info(result, 'fleet placements and sessions updated')
    },
  })
}
