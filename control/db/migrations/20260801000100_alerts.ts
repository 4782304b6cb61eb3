/**
 * Alerts (services/instance-alerts.ts, services/operator-events.ts):
 *
 * - instances.alerts_offline: the owner wants the offline and back-online mails (default on).
 * - instances.offline_alerted_at: set when the offline mail went out, cleared when the back-online
 *   mail did; instances.alert_mail_at: the last alert mail of either kind, so no instance gets two
 *   within one threshold period. Both are claimed by conditional updates, so replicas and restarts
 *   never send a mail twice.
 * - operator_alerts: one row per open operator condition (`gateway.down:<id>`,
 *   `certificate.failing:<hostname>`, `webhooks.failing`): when it was first seen and when the
 *   operator webhook was told; the row goes when the condition clears.
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.alterTable('instances', t => {
    t.boolean('alerts_offline').notNullable().defaultTo(true)
    t.timestamp('offline_alerted_at', { useTz: true })
    t.timestamp('alert_mail_at', { useTz: true })
  })
  await knex.schema.createTable('operator_alerts', t => {
    t.text('key').primary()
    t.text('event').notNullable()
    t.text('subject').notNullable()
    t.timestamp('since', { useTz: true }).notNullable()
    t.timestamp('notified_at', { useTz: true })
  })
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.dropTable('operator_alerts')
  await knex.schema.alterTable('instances', t => {
    t.dropColumn('alert_mail_at')
    t.dropColumn('offline_alerted_at')
    t.dropColumn('alerts_offline')
  })
}
