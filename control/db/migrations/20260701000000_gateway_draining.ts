/**
 * gateways.draining: set by `cloud-connect gateway drain`. A draining gateway takes no new
 * placements and the fleet sweep moves its placements elsewhere (rpc/placement.ts); it keeps
 * serving what is still placed on it. A hello does not clear it: only `undrain` does.
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.alterTable('gateways', t => {
    t.boolean('draining').notNullable().defaultTo(false)
  })
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.alterTable('gateways', t => {
    t.dropColumn('draining')
  })
}
