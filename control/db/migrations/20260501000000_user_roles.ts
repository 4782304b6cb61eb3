/**
 * users.role: 'user' or 'admin'. Admins see the operator overview (GET /v1/admin/overview); the
 * role is granted and revoked only on the server (`cloud-connect admin grant|revoke EMAIL`).
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.alterTable('users', t => {
    t.text('role').notNullable().defaultTo('user')
  })
  await knex.raw("alter table users add constraint users_role_check check (role in ('user', 'admin'))")
}

export async function down (knex: Knex): Promise<void> {
  await knex.raw('alter table users drop constraint users_role_check')
  await knex.schema.alterTable('users', t => {
    t.dropColumn('role')
  })
}
