/**
 * Released subdomains (services/subdomains.ts): a subdomain given up by a rename or a delete stays
 * reserved for its previous owner for CC_SUBDOMAIN_QUARANTINE, so old share links never reach
 * a stranger's instance. One row per label: the latest release; `user_id` becomes null if that
 * account disappears (the quarantine then holds against everyone until it ends).
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.createTable('released_subdomains', t => {
    t.text('subdomain').primary()
    t.text('user_id').references('id').inTable('users').onDelete('SET NULL')
    t.timestamp('released_at', { useTz: true }).notNullable()
    t.index(['released_at'])
  })
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.dropTable('released_subdomains')
}
