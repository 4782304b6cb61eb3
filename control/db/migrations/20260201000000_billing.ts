/**
 * Billing (Stripe) and plan enforcement.
 *
 * - billing_customers: the one Stripe customer of each user, created once.
 * - billing_subscriptions: our copy of each Stripe subscription, replaced only by a snapshot that
 *   sorts after the stored one (version_* columns: ended first, then the Stripe event's `created`,
 *   then a status rank, then the event id), so deliveries in any order end in the same row.
 * - stripe_events: ids of processed webhook events, inserted in the transaction of their effect.
 * - billing_payment_failures: one row per failed invoice (attempt count only grows).
 * - instances.suspended_at: set while an instance is over its owner's plan limit (not routed).
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.alterTable('instances', t => {
    t.timestamp('suspended_at', { useTz: true })
  })

  await knex.schema.createTable('billing_customers', t => {
    t.text('user_id').primary().references('id').inTable('users').onDelete('CASCADE')
    t.text('stripe_customer_id').notNullable().unique({ indexName: 'billing_customers_stripe_unique' })
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now())
  })

  await knex.schema.createTable('billing_subscriptions', t => {
    t.text('id').primary() // Stripe subscription id
    t.text('user_id').notNullable().references('id').inTable('users').onDelete('CASCADE')
    t.text('customer_id').notNullable()
    t.text('status').notNullable() // Stripe's status, verbatim
    t.text('plan') // from the configured price ids; null for a price we do not sell
    t.text('price_id')
    t.timestamp('current_period_start', { useTz: true })
    t.timestamp('current_period_end', { useTz: true })
    t.boolean('cancel_at_period_end').notNullable().defaultTo(false)
    t.timestamp('canceled_at', { useTz: true })
    t.timestamp('ended_at', { useTz: true })
    t.text('payment_method_id')
    t.text('payment_method_brand')
    t.text('payment_method_last4')
    t.boolean('version_ended').notNullable()
    t.bigInteger('version_created').notNullable()
    t.smallint('version_rank').notNullable()
    t.text('version_event').notNullable()
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now())
    t.index(['user_id'])
  })

  await knex.schema.createTable('stripe_events', t => {
    t.text('id').primary()
    t.text('type').notNullable()
    t.bigInteger('created').notNullable()
    t.timestamp('processed_at', { useTz: true }).notNullable()
  })

  await knex.schema.createTable('billing_payment_failures', t => {
    t.text('invoice_id').primary()
    t.text('user_id').references('id').inTable('users').onDelete('CASCADE')
    t.text('subscription_id')
    t.integer('attempt_count').notNullable()
    t.bigInteger('amount_due')
    t.text('currency')
    t.timestamp('failed_at', { useTz: true }).notNullable()
    t.timestamp('next_attempt_at', { useTz: true })
    t.index(['user_id'])
  })
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.dropTable('billing_payment_failures')
  await knex.schema.dropTable('stripe_events')
  await knex.schema.dropTable('billing_subscriptions')
  await knex.schema.dropTable('billing_customers')
  await knex.schema.alterTable('instances', t => {
    t.dropColumn('suspended_at')
  })
}
