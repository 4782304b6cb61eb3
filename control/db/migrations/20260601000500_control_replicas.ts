/**
 * State that control replicas on one Postgres share (services/ratelimit-postgres.ts, jobs/periodic.ts):
 *
 * - rate_limit_buckets: one token bucket per key (the same keys and rules as the in-memory limiter),
 *   changed by one atomic upsert per request; `expires_ms` is when the bucket is certainly full again
 *   (a full bucket carries no information), so rows past it are swept.
 * - control_job_runs: when each periodic job last ran on any replica, so it runs once per period.
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.createTable('rate_limit_buckets', t => {
    t.text('key').primary()
    t.double('tokens').notNullable()
    t.bigInteger('updated_ms').notNullable()
    t.bigInteger('expires_ms').notNullable()
    t.boolean('allowed').notNullable()
    t.index(['expires_ms'])
  })
  await knex.schema.createTable('control_job_runs', t => {
    t.text('name').primary()
    t.timestamp('last_run_at', { useTz: true }).notNullable()
    t.integer('runs').notNullable()
  })
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.dropTable('control_job_runs')
  await knex.schema.dropTable('rate_limit_buckets')
}
