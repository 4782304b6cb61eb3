/**
 * Custom domains: one row per domain (the primary key, so a domain belongs to one instance across
 * all users), stored normalised (lower-case ASCII, IDNA A-labels, no trailing dot).
 *
 * - kind: 'cname' (a name below the user's zone: CNAME to `<instance>.tunnel.<base>`) or 'apex'
 *   (the zone itself, which cannot hold a CNAME: TXT ownership record + A/AAAA to the gateway).
 * - status: 'pending_verification' until DNS checks out, then 'verified'; back to pending when a
 *   re-check has failed for longer than the grace period (`failing_since`).
 * - suspended_at: over the owner's plan limit (kept, not served).
 * A domain is served when verified, not suspended, and its instance is not suspended.
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.createTable('custom_domains', t => {
    t.text('domain').primary()
    t.text('instance_id').notNullable().references('id').inTable('instances').onDelete('CASCADE')
    t.text('user_id').notNullable().references('id').inTable('users').onDelete('CASCADE')
    t.text('kind').notNullable()
    t.text('verification_token').notNullable()
    t.text('status').notNullable().defaultTo('pending_verification')
    t.timestamp('verified_at', { useTz: true })
    t.timestamp('last_checked_at', { useTz: true })
    t.text('last_error')
    t.timestamp('failing_since', { useTz: true })
    t.timestamp('lapse_notified_at', { useTz: true })
    t.timestamp('suspended_at', { useTz: true })
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now())
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now())
    t.index(['instance_id', 'created_at'])
    t.index(['status', 'last_checked_at'])
  })
  await knex.raw("alter table custom_domains add constraint custom_domains_kind_check check (kind in ('cname', 'apex'))")
  await knex.raw("alter table custom_domains add constraint custom_domains_status_check check (status in ('pending_verification', 'verified'))")
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.dropTable('custom_domains')
}
