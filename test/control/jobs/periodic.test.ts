// Periodic jobs with several control replicas on one Postgres: one run per period in all, never
// two at once (jobs/periodic.ts).
import t from 'tap'
import pino from 'pino'
import { setTimeout as sleep } from 'node:timers/promises'
import { createDb, type Db } from '../../../control/db/knex.ts'
import { migrateLatest } from '../../../control/db/migrate.ts'
import { runOncePerPeriod, startPeriodicJob } from '../../../control/jobs/periodic.ts'
import { openTestDatabase, postgresReplicaTest } from '../harness.ts'

const silent = pino({ level: 'silent' })

/** Two database handles on one schema, as two replicas have. */
async function twoReplicas (t: Parameters<Parameters<typeof postgresReplicaTest>[2]>[0], url: string): Promise<[Db, Db]> {
  const a = createDb({ url, poolMax: 4 })
  const b = createDb({ url, poolMax: 4 })
  t.teardown(async () => { await a.destroy(); await b.destroy() })
  await Promise.all([migrateLatest(a), migrateLatest(b)])
  return [a, b]
}

await postgresReplicaTest(t, 'two replicas ticking at the same moment -> the job runs once per period', async (t, database) => {
  const [a, b] = await twoReplicas(t, database.url)
  let runs = 0
  const job = async (): Promise<void> => { runs++; await sleep(20) }
  const tick = async (): Promise<boolean[]> => await Promise.all([a, b, a, b, a, b].map(async db => await runOncePerPeriod(db, 'counted', 400, job)))
  const first = await tick()
  t.equal(runs, 1, 'six ticks at once on two replicas: one run')
  t.equal(first.filter(Boolean).length, 1, 'and exactly one tick says it ran')
  t.equal(await runOncePerPeriod(b, 'counted', 400, job), false, 'within the period: nothing runs')
  t.equal(runs, 1)
  await sleep(450)
  await tick()
  t.equal(runs, 2, 'next period: one more run')
  t.equal(await runOncePerPeriod(a, 'other job', 400, job), true, 'another job has its own period')
  t.equal(runs, 3)
  const row = await a('control_job_runs').where({ name: 'counted' }).first('runs') as { runs: number }
  t.equal(row.runs, 2, 'runs recorded in the database')
})

await postgresReplicaTest(t, 'a run still going when the next period starts -> the other replica does not start a second', async (t, database) => {
  const [a, b] = await twoReplicas(t, database.url)
  let release!: () => void
  const slow = new Promise<void>(resolve => { release = resolve })
  let runs = 0
  const running = runOncePerPeriod(a, 'slow', 100, async () => { runs++; await slow })
  await sleep(250) // more than a period later
  t.equal(await runOncePerPeriod(b, 'slow', 100, async () => { runs++ }), false, 'the lock is held for the whole run')
  release()
  t.equal(await running, true)
  await sleep(120)
  t.equal(await runOncePerPeriod(b, 'slow', 100, async () => { runs++ }), true, 'once it ends, the next period runs on either replica')
  t.equal(runs, 2)
})

await postgresReplicaTest(t, 'two replicas with their own timers for two seconds -> one run per period, never overlapping', async (t, database) => {
  const [a, b] = await twoReplicas(t, database.url)
  const intervalMs = 200
  let runs = 0
  let active = 0
  let overlapped = false
  const run = async (): Promise<void> => {
    runs++
    if (++active > 1) overlapped = true
    await sleep(30)
    active--
  }
  const jobA = startPeriodicJob({ name: 'timed', db: a, intervalMs, run, logger: silent })
  await sleep(intervalMs / 2) // the two timers out of phase
  const jobB = startPeriodicJob({ name: 'timed', db: b, intervalMs, run, logger: silent })
  await sleep(2_000)
  jobA.stop()
  jobB.stop()
  await sleep(100)
  // 21 ticks in all over ~2.1 s; one run per period is at most one per 0.9 interval.
  t.ok(runs >= 4 && runs <= 12, `runs ${runs}: about one per period, not one per replica tick`)
  t.notOk(overlapped, 'never two runs at once')
})

t.test('pglite (one process) -> every tick runs', async t => {
  const db = await openTestDatabase(t, 'pglite')
  let runs = 0
  for (let i = 0; i < 3; i++) t.equal(await runOncePerPeriod(db, 'local', 60_000, async () => { runs++ }), true)
  t.equal(runs, 3)
})
