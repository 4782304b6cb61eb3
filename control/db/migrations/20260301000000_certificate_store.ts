/**
 * The certificate store gateways share through control (control/services/cert-store.ts):
 *
 * - stored_certificates: one row per name (hostname, `*.<domain>`, or a reserved `.invalid` name
 *   such as the ACME account key). The private key is AES-256-GCM ciphertext under control's
 *   certificate-store key (`key_id` names that key, so a wrong key is a clear error, not garbage).
 * - certificate_locks: issuance locks, one holder per name until `expires_at`; taken and released
 *   with single statements (no read-then-write).
 */
import type { Knex } from 'knex'

export async function up (knex: Knex): Promise<void> {
  await knex.schema.createTable('stored_certificates', t => {
    t.text('name').primary()
    t.text('certificate_pem').notNullable()
    t.text('private_key_ciphertext').notNullable()
    t.text('key_id').notNullable()
    t.text('issuer').notNullable()
    t.timestamp('updated_at', { useTz: true }).notNullable().defaultTo(knex.fn.now())
  })

  await knex.schema.createTable('certificate_locks', t => {
    t.text('name').primary()
    t.text('holder').notNullable()
    t.timestamp('expires_at', { useTz: true }).notNullable()
  })
}

export async function down (knex: Knex): Promise<void> {
  await knex.schema.dropTable('certificate_locks')
  await knex.schema.dropTable('stored_certificates')
}
