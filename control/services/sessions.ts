/**
 * Login sessions: access + refresh token pairs. Each login starts a refresh-token family; every
 * refresh spends the presented token and issues its successor in the same family. Presenting a
 * spent (or revoked) member again means the token was copied: the whole family is revoked and the
 * thief and the victim both have to sign in again (OAuth 2.0 Security BCP, RFC 9700 4.14.2).
 */
import type { Knex } from 'knex'
import { apiError } from '../errors.ts'
import { ID_PREFIX, newId } from '../ids.ts'
import type { Db, Queryable } from '../db/knex.ts'
import type { TokenService } from './tokens.ts'

export interface IssuedTokens {
  accessToken: string
  refreshToken: string
  expiresIn: number
  /** Lifetime of the refresh token in seconds (the cookie's Max-Age). */
  refreshExpiresIn: number
}

export interface SessionUser {
  id: string
  session_version: number
}

export class SessionService {
  readonly #db: Db
  readonly #tokens: TokenService
  readonly #now: () => Date

  constructor (db: Db, tokens: TokenService, now: () => Date = () => new Date()) {
    this.#db = db
    this.#tokens = tokens
    this.#now = now
  }

  /** A new login: a new family with its first refresh token. */
  async start (user: SessionUser, db: Queryable = this.#db): Promise<IssuedTokens> {
    return await this.#issue(user, newId(ID_PREFIX.tokenFamily), db)
  }

  async #issue (user: SessionUser, familyId: string, db: Queryable): Promise<IssuedTokens> {
    const refresh = await this.#tokens.signRefresh(user.id, familyId)
    await db('refresh_tokens').insert({ jti: refresh.jti, family_id: familyId, user_id: user.id, expires_at: refresh.expiresAt, created_at: this.#now() })
    const accessToken = await this.#tokens.signAccess(user.id, user.session_version)
    return { accessToken, refreshToken: refresh.token, expiresIn: this.#tokens.accessTtlSeconds, refreshExpiresIn: this.#tokens.refreshTtlSeconds }
  }

  /** Spends `refreshToken` and returns its successor; 401 for anything not currently valid. */
  async rotate (refreshToken: unknown): Promise<IssuedTokens> {
    const claims = await this.#tokens.verifyRefresh(refreshToken)
    const outcome = await this.#db.transaction(async trx => {
      const row = await trx('refresh_tokens').where({ jti: claims.jti }).forUpdate().first() as { family_id: string, user_id: string, used_at: Date | null, revoked_at: Date | null } | undefined
      if (row === undefined || row.family_id !== claims.familyId || row.user_id !== claims.userId) return 'unknown' as const
      if (row.used_at !== null || row.revoked_at !== null) {
        await this.#revokeFamily(trx, row.family_id)
        return 'reused' as const
      }
      const user = await trx('users').where({ id: row.user_id }).first('id', 'session_version') as SessionUser | undefined
      if (user === undefined) return 'unknown' as const
      await trx('refresh_tokens').where({ jti: claims.jti }).update({ used_at: this.#now() })
      return await this.#issue(user, row.family_id, trx)
    })
    if (outcome === 'reused') throw apiError('UNAUTHORIZED', 'Refresh token already used or revoked; sign in again')
    if (outcome === 'unknown') throw apiError('UNAUTHORIZED', 'Invalid or expired token')
    return outcome
  }

  /** Sign-out: revokes the family of a valid refresh token; anything else is silently ignored. */
  async end (refreshToken: unknown): Promise<void> {
    let claims
    try {
      claims = await this.#tokens.verifyRefresh(refreshToken)
    } catch {
      return
    }
    await this.#db('refresh_tokens').where({ family_id: claims.familyId, user_id: claims.userId }).whereNull('revoked_at').update({ revoked_at: this.#now() })
  }

  /** Sign-out everywhere (and on password reset): no refresh token of the account works any more. */
  async revokeAllOf (userId: string, db: Queryable = this.#db): Promise<void> {
    await db('refresh_tokens').where({ user_id: userId }).whereNull('revoked_at').update({ revoked_at: this.#now() })
  }

  async #revokeFamily (trx: Knex.Transaction, familyId: string): Promise<void> {
    await trx('refresh_tokens').where({ family_id: familyId }).whereNull('revoked_at').update({ revoked_at: this.#now() })
  }

  /** Housekeeping: rows past expiry carry no information (an expired token fails its JWT check). */
  async purgeExpired (): Promise<number> {
    return await this.#db('refresh_tokens').where('expires_at', '<', this.#now()).delete()
  }
}
