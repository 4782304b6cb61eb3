/**
 * What gateways report of each instance's edge traffic (rpc/reports.ts, services/usage.ts):
 *
 * - instance_usage: bytes in and out and requests per instance per hour; a report adds to the
 *   hour's row (upsert). Kept CC_USAGE_RETENTION_DAYS.
 * - instance_access_log: one row per request (path without query, client address truncated
 *   unless the operator keeps full ones). Read newest first by (at, id); kept
 *   CC_ACCESS_LOG_RETENTION_DAYS.
 *
 * Both go with their instance (ON DELETE CASCADE); the `hour` / `at` indexes serve the pruning job.
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.createTable('instance_usage', t => {
    t.text('instance_id').notNullable().references('id').inTable('instances').onDelete('CASCADE')
    t.timestamp('hour', { useTz: true }).notNullable()
    t.bigInteger('bytes_in').notNullable().defaultTo(0)
    t.bigInteger('bytes_out').notNullable().defaultTo(0)
    t.bigInteger('requests').notNullable().defaultTo(0)
    t.primary(['instance_id', 'hour'])
    t.index(['hour'])
  })
  await knex.schema.createTable('instance_access_log', t => {
    t.bigIncrements('id').primary()
    t.text('instance_id').notNullable().references('id').inTable('instances').onDelete('CASCADE')
    t.timestamp('at', { useTz: true }).notNullable()
    t.text('method').notNullable()
    t.text('path').notNullable()
    t.integer('status').notNullable()
    t.bigInteger('bytes_in').notNullable()
    t.bigInteger('bytes_out').notNullable()
    t.bigInteger('duration_ms').notNullable()
    t.text('client')
    t.index(['at'])
  })
  await knex.raw('create index instance_access_log_newest on instance_access_log (instance_id, at desc, id desc)')
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.dropTable('instance_access_log')
  await knex.schema.dropTable('instance_usage')
}
