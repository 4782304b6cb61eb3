/**
 * What the operator overview shows that was not recorded before:
 *
 * - gateways.report_peers: how many peers the gateway's latest report carried.
 * - stripe_webhook_failures: verified Stripe events whose processing failed (control answered 5xx
 *   and Stripe will retry), one row per event with the attempt count and the last error;
 *   `resolved_at` is set when a retry succeeds. Unverified deliveries are not recorded (anyone can
 *   send those).
 * - indexes for the overview's ordered, limited lists (newest sign-ups and instances, recent
 *   cancellations, certificates by expiry).
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.alterTable('gateways', t => {
    t.integer('report_peers')
  })
  await knex.schema.createTable('stripe_webhook_failures', t => {
    t.text('event_id').primary()
    t.text('event_type').notNullable()
    t.integer('attempts').notNullable()
    t.text('last_error').notNullable()
    t.timestamp('first_failed_at', { useTz: true }).notNullable()
    t.timestamp('last_failed_at', { useTz: true }).notNullable()
    t.timestamp('resolved_at', { useTz: true })
    t.index(['last_failed_at'])
  })
  await knex.schema.alterTable('users', t => { t.index(['created_at'], 'users_created_at_index') })
  await knex.schema.alterTable('instances', t => { t.index(['created_at'], 'instances_created_at_index') })
  await knex.schema.alterTable('billing_subscriptions', t => { t.index(['canceled_at'], 'billing_subscriptions_canceled_at_index') })
  await knex.schema.alterTable('certificate_states', t => { t.index(['not_after'], 'certificate_states_not_after_index') })
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.alterTable('certificate_states', t => { t.dropIndex(['not_after'], 'certificate_states_not_after_index') })
  await knex.schema.alterTable('billing_subscriptions', t => { t.dropIndex(['canceled_at'], 'billing_subscriptions_canceled_at_index') })
  await knex.schema.alterTable('instances', t => { t.dropIndex(['created_at'], 'instances_created_at_index') })
  await knex.schema.alterTable('users', t => { t.dropIndex(['created_at'], 'users_created_at_index') })
  await knex.schema.dropTable('stripe_webhook_failures')
  await knex.schema.alterTable('gateways', t => {
    t.dropColumn('report_peers')
  })
}
