/**
 * What gateways tell control (internal RPC, control/rpc):
 *
 * - instances gain the tunnel's own evidence: `last_handshake_at` (the latest WireGuard handshake a
 *   gateway saw for the registered key; reset when the key changes), `disconnected_at` (the
 *   container's goodbye: a handshake older than it does not count), and the last reported endpoint
 *   and byte counters. Status is derived from these (services/tunnel.ts instanceStatus).
 * - gateways: one row per gateway id from its hello; the newest hello supplies the public key and
 *   endpoint containers are told.
 * - certificate_states: the newest report per hostname from a gateway's certificate manager.
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.alterTable('instances', t => {
    t.timestamp('last_handshake_at', { useTz: true })
    t.timestamp('disconnected_at', { useTz: true })
    t.text('tunnel_endpoint')
    t.bigInteger('tunnel_rx_bytes')
    t.bigInteger('tunnel_tx_bytes')
  })

  await knex.schema.createTable('gateways', t => {
    t.text('id').primary()
    t.text('public_key').notNullable()
    t.text('endpoint')
    t.integer('listen_port').notNullable()
    t.integer('protocol').notNullable()
    t.text('software')
    t.timestamp('hello_at', { useTz: true }).notNullable()
    t.timestamp('report_at', { useTz: true })
    t.index(['hello_at'])
  })

  await knex.schema.createTable('certificate_states', t => {
    t.text('hostname').primary()
    t.text('gateway_id').notNullable()
    t.text('state').notNullable()
    t.timestamp('not_after', { useTz: true })
    t.text('last_error')
    t.timestamp('next_retry_at', { useTz: true })
    t.timestamp('reported_at', { useTz: true }).notNullable()
  })
  await knex.raw("alter table certificate_states add constraint certificate_states_state_check check (state in ('pending', 'active', 'failing'))")
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.dropTable('certificate_states')
  await knex.schema.dropTable('gateways')
  await knex.schema.alterTable('instances', t => {
    t.dropColumn('last_handshake_at')
    t.dropColumn('disconnected_at')
    t.dropColumn('tunnel_endpoint')
    t.dropColumn('tunnel_rx_bytes')
    t.dropColumn('tunnel_tx_bytes')
  })
}
