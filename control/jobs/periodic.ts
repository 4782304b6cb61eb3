/**
 * Periodic jobs that run once per period across control replicas. Each replica keeps its own
 * timer; at a tick, on Postgres, the job runs only if this replica (1) takes the job's session
 * advisory lock without waiting (`pg_try_advisory_lock`, held on a dedicated connection for the
 * whole run, so two replicas never run it at once; a replica that dies mid-run loses the lock with
 * its connection) and (2) claims the period in `control_job_runs` (no replica started the job
 * within the last 0.9 interval, by the database's clock, so replicas' clocks do not matter and
 * timers in different phases still give one run per period). On PGlite control is one process:
 * every tick runs.
 */
import type { Logger } from 'pino'
import { isPostgres, type Db } from '../db/knex.ts'

/** First key of the jobs' two-key advisory locks ("CJ"); the second is a hash of schema and job. */
export const JOB_LOCK_CLASS = 0x434a

/** A tick closer than this share of the interval to the last run (any replica's) skips. */
const PERIOD_SLACK = 0.9

export interface PeriodicJobOptions {
  /** Unique per job: names the lock and the `control_job_runs` row. */
  name: string
  db: Db
  intervalMs: number
  run: () => Promise<void>
  logger: Logger
}

/**
 * Runs `run` if it is this replica's turn; answers whether it ran. Errors of `run` propagate (the
 * period counts as used: the next period tries again).
 */
export async function runOncePerPeriod (db: Db, name: string, intervalMs: number, run: () => Promise<void>): Promise<boolean> {
  if (!isPostgres(db)) {
    await run()
    return true
  }
  const connection = await db.client.acquireConnection() as unknown
  try {
    const lockKey = [JOB_LOCK_CLASS, `${name}`]
    const locked = await db.raw('select pg_try_advisory_lock(?, hashtext(current_schema() || \':\' || ?)) as locked', lockKey).connection(connection) as { rows: Array<{ locked: boolean }> }
    if (!locked.rows[0].locked) return false
    try {
      const claimed = await db.raw(`
        insert into control_job_runs as r (name, last_run_at, runs) values (?, clock_timestamp(), 1)
        on conflict (name) do update set last_run_at = excluded.last_run_at, runs = r.runs + 1
        where r.last_run_at <= clock_timestamp() - make_interval(secs => ?)
        returning runs`, [name, intervalMs * PERIOD_SLACK / 1000]).connection(connection) as { rows: unknown[] }
      if (claimed.rows.length === 0) return false
      await run()
      return true
    } finally {
      await db.raw('select pg_advisory_unlock(?, hashtext(current_schema() || \':\' || ?))', lockKey).connection(connection)
    }
  } finally {
    await db.client.releaseConnection(connection)
  }
}

/** What a job's start function takes besides its own services: the database, a logger, its interval. */
export interface JobOptions {
  db: Db
  logger: Logger
  intervalMs?: number
}

/**
 * A job's start function: `run(options)` every `options.intervalMs` (default `defaultIntervalMs`),
 * once per period across replicas; stop() ends it.
 */
export function periodicJob<O extends JobOptions> (name: string, defaultIntervalMs: number, run: (options: O) => Promise<void>): (options: O) => { stop (): void } {
  return options => startPeriodicJob({
    name,
    db: options.db,
    intervalMs: options.intervalMs ?? defaultIntervalMs,
    logger: options.logger,
    run: async () => { await run(options) },
  })
}

/** Ticks every `intervalMs` (the first after one interval); a tick still running skips the next. */
export function startPeriodicJob (options: PeriodicJobOptions): { stop (): void } {
  let running = false
  const timer = setInterval(() => {
    if (running) return
    running = true
    runOncePerPeriod(options.db, options.name, options.intervalMs, options.run).catch(err => {
      options.logger.warn({ job: options.name, err: (err as Error).message }, 'periodic job failed')
    }).finally(() => { running = false })
  }, options.intervalMs)
  timer.unref()
  return { stop () { clearInterval(timer) } }
}
