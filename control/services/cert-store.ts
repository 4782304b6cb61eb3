/**
 * The certificate store gateways share (the control-backed CertStore of gateway/edge/cert-store.ts):
 * certificates, the ACME account key and issuance locks, so a fleet places one order per name and
 * uses one ACME account.
 *
 * - Private keys are encrypted at rest with AES-256-GCM under the certificate-store key
 *   (CC_CERT_STORE_KEY, else generated once into `<dataDir>/cert-store-key`, mode 0600). The name
 *   is the additional data, so a ciphertext moved to another row does not decrypt.
 * - Locks: one holder per name. lock() is one INSERT ... ON CONFLICT DO UPDATE ... WHERE the row
 *   is expired or already ours: Postgres takes the row lock for the conflict check, so two
 *   gateways racing both run the statement but only one gets a row back. unlock() deletes the
 *   row only when the caller still holds it (a holder whose lock expired and was taken over
 *   cannot release the new holder's lock).
 * - Time is control's clock (`now`), never a gateway's.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { ensurePrivateDirectory } from '../db/private-files.ts'
import { join } from 'node:path'
import type { Logger } from 'pino'
import type { StoredCertificate } from '../../proto/rpc/index.ts'
import type { Db, Queryable } from '../db/knex.ts'

export const CERT_STORE_KEY_FILE = 'cert-store-key'
/** base64url of exactly 32 bytes. */
export const CERT_STORE_KEY_PATTERN = /^[A-Za-z0-9_-]{43}$/

const FORMAT = 'v1'
const IV_BYTES = 12

/** The configured key (base64url of 32 bytes), or the one stored in dataDir (created on first use). */
export function loadCertStoreKey (configured: string | undefined, dataDir: string, logger?: Logger): Buffer {
  if (configured !== undefined) return decodeKey(configured, 'CC_CERT_STORE_KEY')
  const path = join(dataDir, CERT_STORE_KEY_FILE)
  try {
    return decodeKey(readFileSync(path, 'utf8').trim(), path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  ensurePrivateDirectory(dataDir)
  const key = randomBytes(32)
  try {
    // 'wx': if another process created it first, use theirs.
    writeFileSync(path, key.toString('base64url') + '\n', { mode: 0o600, flag: 'wx' })
    logger?.info({ path }, 'generated the certificate store key')
    return key
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return loadCertStoreKey(undefined, dataDir, logger)
    throw err
  }
}

function decodeKey (text: string, source: string): Buffer {
  if (!CERT_STORE_KEY_PATTERN.test(text)) throw new Error(`${source} does not hold a certificate store key (base64url of 32 bytes, 43 characters)`)
  return Buffer.from(text, 'base64url')
}

/** A short, non-secret name of `key` (which key encrypted a row). */
export function keyId (key: Uint8Array): string {
  return createHash('sha256').update('erugo-cert-store-key-id\0').update(key).digest('hex').slice(0, 16)
}

export class CertStoreKeyError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'CertStoreKeyError'
  }
}

export interface CertStoreServiceOptions {
  db: Db
  /** 32 bytes (loadCertStoreKey). */
  key: Uint8Array
  now: () => Date
}

interface CertificateRow {
  name: string
  certificate_pem: string
  private_key_ciphertext: string
  key_id: string
  issuer: string
  updated_at: Date
}

export interface LockResult {
  acquired: boolean
  /** Ours when acquired, else the current holder's (now, when the lock vanished meanwhile). */
  expiresAt: Date
}

export class CertStoreService {
  readonly #o: CertStoreServiceOptions
  readonly #key: Buffer
  readonly #keyId: string

  constructor (options: CertStoreServiceOptions) {
    if (options.key.length !== 32) throw new Error('the certificate store key must be 32 bytes')
    this.#o = options
    this.#key = Buffer.from(options.key)
    this.#keyId = keyId(this.#key)
  }

  async get (name: string, db: Queryable = this.#o.db): Promise<StoredCertificate | null> {
    const row = await db('stored_certificates').where({ name }).first() as CertificateRow | undefined
    if (row === undefined) return null
    return {
      name: row.name,
      certificatePem: row.certificate_pem,
      privateKeyPem: this.#decrypt(row),
      issuer: row.issuer,
      updatedAt: new Date(row.updated_at).toISOString(),
    }
  }

  /** Replaces the record in one statement: readers see the old row or the new one. */
  async put (certificate: StoredCertificate, db: Queryable = this.#o.db): Promise<void> {
    await db('stored_certificates').insert({
      name: certificate.name,
      certificate_pem: certificate.certificatePem,
      private_key_ciphertext: this.#encrypt(certificate.name, certificate.privateKeyPem),
      key_id: this.#keyId,
      issuer: certificate.issuer,
      updated_at: this.#o.now(),
    }).onConflict('name').merge()
  }

  async delete (name: string, db: Queryable = this.#o.db): Promise<boolean> {
    // `returning`: the affected-row count is not reported alike by every driver (PGlite).
    const rows = await db('stored_certificates').where({ name }).delete().returning('name') as unknown[]
    return rows.length > 0
  }

  async list (db: Queryable = this.#o.db): Promise<string[]> {
    const rows = await db('stored_certificates').select('name').orderBy('name') as Array<{ name: string }>
    return rows.map(r => r.name)
  }

  /** Takes `name` for `holder` when free, expired or already `holder`'s; never waits. */
  async lock (name: string, holder: string, ttlMs: number, db: Queryable = this.#o.db): Promise<LockResult> {
    const now = this.#o.now()
    const expiresAt = new Date(now.getTime() + ttlMs)
    const result = await db.raw(`
      insert into certificate_locks as l (name, holder, expires_at) values (?, ?, ?::timestamptz)
      on conflict (name) do update set holder = excluded.holder, expires_at = excluded.expires_at
        where l.expires_at <= ?::timestamptz or l.holder = excluded.holder
      returning l.expires_at`, [name, holder, expiresAt, now]) as { rows: Array<{ expires_at: Date }> }
    if (result.rows.length === 1) return { acquired: true, expiresAt: new Date(result.rows[0].expires_at) }
    const current = await db('certificate_locks').where({ name }).first('expires_at') as { expires_at: Date } | undefined
    return { acquired: false, expiresAt: current === undefined ? now : new Date(current.expires_at) }
  }

  /** Releases `name` if `holder` still holds it; false when it did not (expired and taken over, or never). */
  async unlock (name: string, holder: string, db: Queryable = this.#o.db): Promise<boolean> {
    const rows = await db('certificate_locks').where({ name, holder }).delete().returning('name') as unknown[]
    return rows.length > 0
  }

  #encrypt (name: string, plaintext: string): string {
    const iv = randomBytes(IV_BYTES)
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv)
    cipher.setAAD(Buffer.from(`${FORMAT}:${name}`))
    const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()])
    return [FORMAT, iv.toString('base64url'), ciphertext.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.')
  }

  #decrypt (row: CertificateRow): string {
    if (row.key_id !== this.#keyId) {
      throw new CertStoreKeyError(`the private key of ${row.name} was stored under certificate store key ${row.key_id}, control has ${this.#keyId} (CC_CERT_STORE_KEY or ${CERT_STORE_KEY_FILE} changed)`)
    }
    const [format, iv, ciphertext, tag] = row.private_key_ciphertext.split('.')
    if (format !== FORMAT || iv === undefined || ciphertext === undefined || tag === undefined) throw new CertStoreKeyError(`the stored private key of ${row.name} is not in format ${FORMAT}`)
    try {
      const decipher = createDecipheriv('aes-256-gcm', this.#key, Buffer.from(iv, 'base64url'))
      decipher.setAAD(Buffer.from(`${FORMAT}:${row.name}`))
      decipher.setAuthTag(Buffer.from(tag, 'base64url'))
      return Buffer.concat([decipher.update(Buffer.from(ciphertext, 'base64url')), decipher.final()]).toString('utf8')
    } catch {
      throw new CertStoreKeyError(`the stored private key of ${row.name} does not decrypt (altered, or moved from another row)`)
    }
  }
}
