/**
 * billing_subscriptions.started_at: Stripe's `start_date` of the subscription, so the churn metric
 * (control/metrics.ts) can tell who was paying at the start of its window. Rows stored before this
 * get their current period's start, the closest time they hold (never earlier than the truth).
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.alterTable('billing_subscriptions', t => {
    t.timestamp('started_at', { useTz: true })
  })
  await knex('billing_subscriptions').update({ started_at: knex.raw('coalesce(current_period_start, updated_at)') })
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.alterTable('billing_subscriptions', t => {
    t.dropColumn('started_at')
  })
}
