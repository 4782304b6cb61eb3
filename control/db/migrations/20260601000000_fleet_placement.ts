/**
 * The fleet: several gateways, each container placed on two of them.
 *
 * - gateways gain what their hello says for the fleet (region, relay listener URL and certificate
 *   fingerprint), their own tunnel address (allocated by control at the first hello and kept), and
 *   `alive`: whether control last counted the gateway alive (a hello or report within the alive
 *   window). The flag only changes together with a configuration version bump, so a snapshot is a
 *   function of the database alone.
 * - tunnel_ips.gateway_id: an address held by a gateway (from the top of the pool down); instance
 *   allocation never claims such a row.
 * - placements: per instance, its primary and backup gateway (backup null while only one gateway
 *   is alive). Gateway ids are not foreign keys: a placement on a gateway that is gone is simply a
 *   placement on a gateway that is not alive, and the sweep re-places it.
 * - gateway_sessions: per (instance, gateway) the latest handshake that gateway reported for the
 *   key in `public_key`, and `live` as last published (same rule as gateways.alive).
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.alterTable('gateways', t => {
    t.text('region')
    t.text('relay_url')
    t.text('relay_fingerprint')
    t.bigInteger('tunnel_address').unique({ indexName: 'gateways_tunnel_address_unique' })
    t.boolean('alive').notNullable().defaultTo(false)
  })
  await knex.schema.alterTable('tunnel_ips', t => {
    t.text('gateway_id').unique({ indexName: 'tunnel_ips_gateway_unique' }).references('id').inTable('gateways').onDelete('CASCADE')
  })
  await knex.raw('alter table tunnel_ips add constraint tunnel_ips_one_holder check (instance_id is null or gateway_id is null)')

  await knex.schema.createTable('placements', t => {
    t.text('instance_id').primary().references('id').inTable('instances').onDelete('CASCADE')
    t.text('primary_gateway').notNullable()
    t.text('backup_gateway')
    t.timestamp('placed_at', { useTz: true }).notNullable()
    t.index(['primary_gateway'])
    t.index(['backup_gateway'])
  })
  await knex.raw('alter table placements add constraint placements_two_gateways check (backup_gateway is null or backup_gateway <> primary_gateway)')

  await knex.schema.createTable('gateway_sessions', t => {
    t.text('instance_id').notNullable().references('id').inTable('instances').onDelete('CASCADE')
    t.text('gateway_id').notNullable()
    t.text('public_key').notNullable()
    t.timestamp('last_handshake_at', { useTz: true }).notNullable()
    t.boolean('live').notNullable().defaultTo(false)
    t.primary(['instance_id', 'gateway_id'])
    t.index(['gateway_id'])
  })
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.dropTable('gateway_sessions')
  await knex.schema.dropTable('placements')
  await knex.raw('alter table tunnel_ips drop constraint tunnel_ips_one_holder')
  await knex.schema.alterTable('tunnel_ips', t => { t.dropColumn('gateway_id') })
  await knex.schema.alterTable('gateways', t => {
    t.dropColumn('alive')
    t.dropColumn('tunnel_address')
    t.dropColumn('relay_fingerprint')
    t.dropColumn('relay_url')
    t.dropColumn('region')
  })
}
