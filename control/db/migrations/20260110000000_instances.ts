/**
 * Instances, their tunnel addresses and the gateway configuration version.
 *
 * - instances: one per Erugo container. `token_jti` is the id of the one instance token that works
 *   (regeneration replaces it); `public_key` is the registered WireGuard key, unique across all
 *   instances; `tunnel_state` is what the container last told us (see services/tunnel.ts for how
 *   the status shown to users is derived from it).
 * - tunnel_ips: address leases (IPv4 as an unsigned 32-bit number). A held address has its
 *   `instance_id`; a released one keeps its row with `released_at` so it stays in quarantine.
 * - tunnel_ip_cursor: the next never-used address (as an offset into the pool).
 * - gateway_config: one row whose `version` rises in the same transaction as every change of the
 *   peer set, so a gateway that saw version N has seen every change up to N.
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.createTable('instances', t => {
    t.text('id').primary()
    t.text('user_id').notNullable().references('id').inTable('users').onDelete('CASCADE')
    t.text('name').notNullable()
    t.text('subdomain').notNullable().unique({ indexName: 'instances_subdomain_unique' })
    t.text('token_jti').notNullable()
    t.text('public_key').unique({ indexName: 'instances_public_key_unique' })
    t.text('tunnel_state').notNullable().defaultTo('pending')
    t.timestamp('registered_at', { useTz: true })
    t.timestamp('last_seen', { useTz: true })
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now())
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now())
    t.index(['user_id', 'created_at'])
  })
  await knex.raw("alter table instances add constraint instances_tunnel_state_check check (tunnel_state in ('pending', 'connected', 'disconnected'))")

  await knex.schema.createTable('tunnel_ips', t => {
    t.bigInteger('address').primary()
    // Set null if an instance disappears without release (an account deleted): the address then
    // counts as released long ago.
    t.text('instance_id').unique({ indexName: 'tunnel_ips_instance_unique' }).references('id').inTable('instances').onDelete('SET NULL')
    t.timestamp('assigned_at', { useTz: true }).notNullable()
    t.timestamp('released_at', { useTz: true })
  })
  await knex.raw('create sequence tunnel_ip_cursor minvalue 0 start with 0')

  await knex.schema.createTable('gateway_config', t => {
    t.smallint('id').primary()
    t.bigInteger('version').notNullable().defaultTo(0)
  })
  await knex.raw('alter table gateway_config add constraint gateway_config_single_row check (id = 1)')
  await knex('gateway_config').insert({ id: 1, version: 0 })
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.dropTable('gateway_config')
  await knex.raw('drop sequence tunnel_ip_cursor')
  await knex.schema.dropTable('tunnel_ips')
  await knex.schema.dropTable('instances')
}
