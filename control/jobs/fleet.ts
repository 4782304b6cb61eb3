/**
 * The fleet sweep (rpc/placement.ts): publishes which gateways are alive and which sessions live,
 * re-places instances of gateways that stopped reporting, fills missing backups. Runs every report
 * interval, so a lapse shows in snapshots within one interval of the alive window ending. The work
 * is one function (RpcService.sweep) that tests call with their own clock.
 */
import type { Logger } from 'pino'
import type { RpcService } from '../rpc/service.ts'

export interface FleetSweepOptions {
  rpc: Pick<RpcService, 'sweep'>
  intervalMs: number
  logger: Logger
}

/** Runs rpc.sweep() every intervalMs (first run after one interval); stop() ends it. */
export function startFleetSweep (options: FleetSweepOptions): { stop (): void } {
  let running = false
  const timer = setInterval(() => {
    if (running) return
    running = true
    options.rpc.sweep().then(result => {
      if (result.version !== null) options.logger.info(result, 'fleet placements and sessions updated')
    }, err => {
      options.logger.warn({ err: (err as Error).message }, 'the fleet sweep failed')
    }).finally(() => { running = false })
  }, Math.max(options.intervalMs, 1_000))
  timer.unref()
  return { stop () { clearInterval(timer) } }
}
