/**
 * Accounts: registration, email verification, credentials, password reset, profile.
 *
 * No enumeration (OWASP Authentication Cheat Sheet): registering an email that already has an
 * account answers exactly like a new registration: 201, the same body with a freshly generated
 * (never stored) user id, after the same password-hashing work, and the owner receives a "someone
 * tried to sign up" mail instead of a verification mail. Forgot-password and resend-verification
 * answer the same message whether or not the account exists. Mail leaves asynchronously, so SMTP
 * latency does not tell the cases apart either.
 *
 * Unverified accounts (`pending_email_verification`) may sign in, refresh, read and edit their
 * profile; routes that create resources (instances, domains, billing) declare `verifiedEmail` and
 * refuse such accounts with 403 FORBIDDEN. A completed password reset also verifies the address:
 * the reset link proves control of the mailbox just as the verification link does.
 */
import { createHash, randomBytes } from 'node:crypto'
import type { Logger } from 'pino'
import type { AccountStatus, RegisterResponse } from '../../proto/api/auth.ts'
import type { UserRole } from '../../proto/api/user.ts'
import { isUniqueViolation, type Db, type Queryable } from '../db/knex.ts'
import { apiError } from '../errors.ts'
import { ID_PREFIX, newId } from '../ids.ts'
import { isoSeconds } from '../time.ts'
import { existingAccountMail, passwordChangedMail, passwordResetMail, verificationMail, type Mailer } from './mail.ts'
import type { PasswordHasher } from './passwords.ts'
import type { SessionService } from './sessions.ts'

export interface UserRow {
  id: string
  email: string
  name: string
  password_hash: string
  account_status: AccountStatus
  role: UserRole
  session_version: number
  created_at: Date
  updated_at: Date
}

export interface RegisterInput {
  name: string
  email: string
  password: string
  acceptMarketing: boolean
  erugoVersion: string | null
}

type TokenPurpose = 'verify_email' | 'reset_password'

export interface AccountServiceOptions {
  db: Db
  passwords: PasswordHasher
  sessions: SessionService
  mailer: Mailer
  publicUrl: string
  passwordResetUrl: string
  verifyEmailTtlSeconds: number
  resetPasswordTtlSeconds: number
  now?: () => Date
  logger?: Logger
}

/** Emails are compared trimmed and lower-cased (routes normalise too; services must not rely on it). */
export function normalizeEmail (email: string): string {
  return email.trim().toLowerCase()
}

function hashToken (token: string): string {
  return createHash('sha256').update(token).digest('hex')
}

function invalidToken (): Error {
  return apiError('VALIDATION_ERROR', 'The link is invalid, expired or already used', { fields: { token: ['is invalid, expired or already used'] } })
}

/** Why a mail token did not work; the verification page tells the three apart. */
type TokenFailure = 'unknown' | 'used' | 'expired'

function verifyLinkError (why: TokenFailure): Error {
  if (why === 'expired') return apiError('LINK_EXPIRED', 'This verification link has expired: request a new one')
  if (why === 'used') return apiError('LINK_ALREADY_USED', 'This verification link was already used')
  return apiError('LINK_INVALID', 'This verification link is not valid')
}

export class AccountService {
  readonly #o: AccountServiceOptions
  readonly #now: () => Date

  constructor (options: AccountServiceOptions) {
    this.#o = options
    this.#now = options.now ?? (() => new Date())
  }

  async findById (id: string, db: Queryable = this.#o.db): Promise<UserRow | undefined> {
    return await db('users').where({ id }).first() as UserRow | undefined
  }

  async findByEmail (email: string, db: Queryable = this.#o.db): Promise<UserRow | undefined> {
    return await db('users').where({ email: normalizeEmail(email) }).first() as UserRow | undefined
  }

  async register (input: RegisterInput): Promise<RegisterResponse['user']> {
    const email = normalizeEmail(input.email)
    const name = input.name.trim()
    const passwordHash = await this.#o.passwords.hash(input.password) // also on the existing-account path: same time
    const now = this.#now()
    const id = newId(ID_PREFIX.user)
    const created = { id, name, email, created_at: isoSeconds(now), account_status: 'pending_email_verification' as const }

    let verifyToken: string | undefined
    try {
      verifyToken = await this.#o.db.transaction(async trx => {
        if (await trx('users').where({ email }).first('id') !== undefined) return undefined
        await trx('users').insert({
          id,
          email,
          name,
          password_hash: passwordHash,
          account_status: 'pending_email_verification',
          accept_marketing: input.acceptMarketing,
          terms_accepted_at: now,
          privacy_accepted_at: now,
          erugo_version: input.erugoVersion,
          created_at: now,
          updated_at: now,
        })
        return await this.#createToken(trx, id, 'verify_email', this.#o.verifyEmailTtlSeconds)
      })
    } catch (err) {
      if (!isUniqueViolation(err)) throw err // a concurrent registration of the same email won the race
    }

    if (verifyToken !== undefined) {
      this.#o.mailer.send(verificationMail(email, this.#verifyLink(verifyToken), Math.round(this.#o.verifyEmailTtlSeconds / 3600)))
    } else {
      const owner = await this.findByEmail(email)
      if (owner !== undefined) {
        const resetToken = await this.#createToken(this.#o.db, owner.id, 'reset_password', this.#o.resetPasswordTtlSeconds)
        this.#o.mailer.send(existingAccountMail(owner.email, this.#resetLink(resetToken)))
      }
    }
    return created
  }

  /** Consumes a verification token; the account becomes `active`. */
  async verifyEmail (token: string): Promise<AccountStatus> {
    return await this.#o.db.transaction(async trx => {
      const userId = await this.#consumeToken(trx, token, 'verify_email')
      if (userId === undefined) throw verifyLinkError(await this.#whyUnusable(trx, token, 'verify_email'))
      const now = this.#now()
      await trx('users').where({ id: userId, account_status: 'pending_email_verification' })
        .update({ account_status: 'active', email_verified_at: now, updated_at: now })
      return 'active' as const
    })
  }

  async resendVerification (email: string): Promise<void> {
    const user = await this.findByEmail(email)
    if (user === undefined || user.account_status !== 'pending_email_verification') return
    const token = await this.#createToken(this.#o.db, user.id, 'verify_email', this.#o.verifyEmailTtlSeconds)
    this.#o.mailer.send(verificationMail(user.email, this.#verifyLink(token), Math.round(this.#o.verifyEmailTtlSeconds / 3600)))
  }

  /** The account for these credentials, or 401 with one message for every failure. */
  async authenticate (email: string, password: string): Promise<UserRow> {
    const user = await this.findByEmail(email)
    const ok = user === undefined
      ? await this.#o.passwords.verifyNothing(password)
      : await this.#o.passwords.verify(user.password_hash, password)
    if (!ok || user === undefined) throw apiError('UNAUTHORIZED', 'Invalid email or password')
    return user
  }

  async forgotPassword (email: string): Promise<void> {
    const user = await this.findByEmail(email)
    if (user === undefined) return
    const token = await this.#createToken(this.#o.db, user.id, 'reset_password', this.#o.resetPasswordTtlSeconds)
    this.#o.mailer.send(passwordResetMail(user.email, this.#resetLink(token), Math.round(this.#o.resetPasswordTtlSeconds / 60)))
  }

  /** Sets the new password, spends every outstanding reset link and signs out every session. */
  async resetPassword (token: string, password: string): Promise<void> {
    const passwordHash = await this.#o.passwords.hash(password)
    const user = await this.#o.db.transaction(async trx => {
      const userId = await this.#consumeToken(trx, token, 'reset_password')
      if (userId === undefined) throw invalidToken()
      const now = this.#now()
      const current = await trx('users').where({ id: userId }).forUpdate().first() as UserRow
      await trx('users').where({ id: userId }).update({
        password_hash: passwordHash,
        session_version: current.session_version + 1,
        account_status: current.account_status === 'pending_email_verification' ? 'active' : current.account_status,
        email_verified_at: current.account_status === 'pending_email_verification' ? now : trx.raw('email_verified_at'),
        updated_at: now,
      })
      await trx('account_tokens').where({ user_id: userId, purpose: 'reset_password' }).whereNull('used_at').update({ used_at: now })
      await this.#o.sessions.revokeAllOf(userId, trx)
      return current
    })
    this.#o.mailer.send(passwordChangedMail(user.email))
  }

  async updateProfile (id: string, changes: { name?: string }): Promise<UserRow> {
    const update: Record<string, unknown> = { updated_at: this.#now() }
    if (changes.name !== undefined) update.name = changes.name.trim()
    const [row] = await this.#o.db('users').where({ id }).update(update).returning('*') as UserRow[]
    if (row === undefined) throw apiError('NOT_FOUND', 'User not found')
    return row
  }

  /** The dashboard's page, which posts the token to POST /v1/auth/verify-email. */
  #verifyLink (token: string): string {
    return `${this.#o.publicUrl}/verify-email?token=${encodeURIComponent(token)}`
  }

  #resetLink (token: string): string {
    const url = new URL(this.#o.passwordResetUrl)
    url.searchParams.set('token', token)
    return url.toString()
  }

  /** 256 random bits; only the SHA-256 is stored. */
  async #createToken (db: Queryable, userId: string, purpose: TokenPurpose, ttlSeconds: number): Promise<string> {
    const token = randomBytes(32).toString('base64url')
    const now = this.#now()
    await db('account_tokens').insert({
      token_hash: hashToken(token),
      user_id: userId,
      purpose,
      expires_at: new Date(now.getTime() + ttlSeconds * 1000),
      created_at: now,
    })
    return token
  }

  /** After #consumeToken refused `token`: whether it never existed, was spent, or ran out. */
  async #whyUnusable (db: Queryable, token: string, purpose: TokenPurpose): Promise<TokenFailure> {
    if (token.length === 0 || token.length > 256) return 'unknown'
    const row = await db('account_tokens').where({ token_hash: hashToken(token), purpose }).first('used_at', 'expires_at') as { used_at: Date | null, expires_at: Date } | undefined
    if (row === undefined) return 'unknown'
    return row.used_at !== null ? 'used' : 'expired'
  }

  /** Marks the token used if it is unused and unexpired, in one statement: single use under races. */
  async #consumeToken (db: Queryable, token: string, purpose: TokenPurpose): Promise<string | undefined> {
    if (token.length === 0 || token.length > 256) return undefined
    const now = this.#now()
    const rows = await db('account_tokens')
      .where({ token_hash: hashToken(token), purpose })
      .whereNull('used_at')
      .where('expires_at', '>', now)
      .update({ used_at: now })
      .returning('user_id') as Array<{ user_id: string }>
    return rows[0]?.user_id
  }
}
