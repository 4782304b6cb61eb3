/**
 * Housekeeping of what gateways reported: certificate states of hostnames no instance serves any
 * more, and gateways silent for `gatewayRetentionMs` (so a retired gateway's key stops being
 * handed out once a live one has said hello). Status needs no sweep: it is derived from the last
 * handshake and the clock whenever it is read (services/tunnel.ts instanceStatus).
 */
import type { Logger } from 'pino'
import type { Db } from '../db/knex.ts'
import type { TunnelService } from '../services/tunnel.ts'
import { periodicJob } from './periodic.ts'

export interface SweepOptions {
  db: Db
  tunnel: TunnelService
  logger: Logger
  now: () => Date
  /** Default 10 minutes. */
  intervalMs?: number
  /** Default 30 days. */
  gatewayRetentionMs?: number
}

export interface SweepResult { certificates: number, gateways: number }

/** One pass; safe to run from several control replicas at once (startSweep runs it once per period). */
export async function sweepReports (options: SweepOptions): Promise<SweepResult> {
  const { db } = options
  const served = new Set((await options.tunnel.listPeers()).flatMap(p => p.hostnames))
  const reported = await db('certificate_states').pluck('hostname') as string[]
  const stale = reported.filter(h => !served.has(h))
  let certificates = 0
  for (let i = 0; i < stale.length; i += 500) {
    certificates += affected(await db('certificate_states').whereIn('hostname', stale.slice(i, i + 500)).delete())
  }
  const cutoff = new Date(options.now().getTime() - (options.gatewayRetentionMs ?? 30 * 24 * 3600_000))
  // Keep the newest gateway whatever its age: it is the one containers are told about.
  const newest = await db('gateways').orderBy('hello_at', 'desc').first('id') as { id: string } | undefined
  const gateways = affected(await db('gateways')
    .where('hello_at', '<', cutoff)
    .andWhere(q => { void q.whereNull('report_at').orWhere('report_at', '<', cutoff) })
    .modify(q => { if (newest !== undefined) void q.whereNot('id', newest.id) })
    .delete())
  return { certificates, gateways }
}

/** Rows a delete touched: pg answers a number, the PGlite dialect a result object. */
function affected (result: unknown): number {
  if (typeof result === 'number') return result
  const r = result as { rowCount?: number, affectedRows?: number } | null
  return r?.rowCount ?? r?.affectedRows ?? 0
}

/** Runs sweepReports every intervalMs (first run after one interval), once per period across replicas; stop() ends it. */
export const startSweep = periodicJob<SweepOptions>('report-sweep', 10 * 60_000, async options => {
  const result = await sweepReports(options)
  if (result.certificates > 0 || result.gateways > 0) options.logger.info(result, 'swept stale gateway reports')
})
