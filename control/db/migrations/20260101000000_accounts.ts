/** Accounts: users, single-use mail tokens (email verification, password reset), refresh tokens. */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.createTable('users', t => {
    t.text('id').primary()
    t.text('email').notNullable().unique() // stored trimmed and lower-cased
    t.text('name').notNullable()
    t.text('password_hash').notNullable()
    t.text('account_status').notNullable().defaultTo('pending_email_verification')
    t.boolean('accept_marketing').notNullable().defaultTo(false)
    t.timestamp('terms_accepted_at', { useTz: true }).notNullable()
    t.timestamp('privacy_accepted_at', { useTz: true }).notNullable()
    t.text('erugo_version')
    t.timestamp('email_verified_at', { useTz: true })
    // Bumped on password reset: access tokens carrying an older value stop working at once.
    t.integer('session_version').notNullable().defaultTo(0)
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now())
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now())
  })

  await knex.schema.createTable('account_tokens', t => {
    t.text('token_hash').primary() // SHA-256 of the token: a database leak does not leak live links
    t.text('user_id').notNullable().references('id').inTable('users').onDelete('CASCADE')
    t.text('purpose').notNullable() // 'verify_email' | 'reset_password'
    t.timestamp('expires_at', { useTz: true }).notNullable()
    t.timestamp('used_at', { useTz: true })
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now())
    t.index(['user_id', 'purpose'])
  })

  await knex.schema.createTable('refresh_tokens', t => {
    t.text('jti').primary()
    t.text('family_id').notNullable() // one login; reuse of any spent member revokes them all
    t.text('user_id').notNullable().references('id').inTable('users').onDelete('CASCADE')
    t.timestamp('expires_at', { useTz: true }).notNullable()
    t.timestamp('used_at', { useTz: true })
    t.timestamp('revoked_at', { useTz: true })
    t.timestamp('created_at', { useTz: true }).notNullable().defaultTo(knex.fn.now())
    t.index(['family_id'])
    t.index(['user_id'])
  })
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.dropTable('refresh_tokens')
  await knex.schema.dropTable('account_tokens')
  await knex.schema.dropTable('users')
}
