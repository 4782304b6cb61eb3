/**
 * instances.region: the region the container named at its last registration (the agent's
 * CC_AGENT_REGION), null when it named none. Placement prefers gateways of that region
 * (rpc/placement.ts), at registration and at every re-placement.
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.alterTable('instances', t => {
    t.text('region')
  })
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.alterTable('instances', t => {
    t.dropColumn('region')
  })
}
