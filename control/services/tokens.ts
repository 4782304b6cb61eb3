/**
 * JWTs for the three kinds of bearer: access (15 min), refresh (7 days, rotated) and instance (no
 * expiry, revoked by regeneration). RFC 8725 (JWT BCP): the algorithm is pinned to HS256 (3.1, so
 * `alg: none` and algorithm substitution fail), each kind has its own key (3.9), its own `typ`
 * header (3.11) and its own audience (3.9), and the issuer is checked (3.8).
 */
import { errors as joseErrors, jwtVerify, SignJWT, type JWTPayload } from 'jose'
import { apiError } from '../errors.ts'
import { ID_PREFIX, newId, randomBase62 } from '../ids.ts'
import type { TokenKeys } from './keys.ts'

const ALGORITHM = 'HS256'
/** Longer bearer strings are refused before any parsing. */
export const MAX_TOKEN_LENGTH = 4096

export const TOKEN_KIND = {
  access: { typ: 'at+jwt', audience: 'erugo-cloud:access' }, // RFC 9068 2.1 typ for access tokens
  refresh: { typ: 'rt+jwt', audience: 'erugo-cloud:refresh' },
  instance: { typ: 'it+jwt', audience: 'erugo-cloud:instance' },
} as const

export type TokenKind = keyof typeof TOKEN_KIND

export interface AccessClaims {
  userId: string
  sessionVersion: number
  jti: string
}

export interface RefreshClaims {
  userId: string
  familyId: string
  jti: string
  expiresAt: Date
}

export interface InstanceClaims {
  instanceId: string
  userId: string
  /** Distinct per issued token: store it, compare it on every use to honour regeneration. */
  jti: string
  issuedAt: Date
}

export interface TokenServiceOptions {
  keys: TokenKeys
  issuer: string
  accessTtlSeconds: number
  refreshTtlSeconds: number
  now?: () => Date
}

function unauthorized (message = 'Invalid or expired token'): Error {
  return apiError('UNAUTHORIZED', message)
}

export class TokenService {
  readonly accessTtlSeconds: number
  readonly refreshTtlSeconds: number
  readonly #keys: TokenKeys
  readonly #issuer: string
  readonly #now: () => Date
  /** Each secret imported once: jose would re-import a raw key on every call (~45 us each). */
  readonly #cryptoKeys = new Map<TokenKind, Promise<CryptoKey>>()

  constructor (options: TokenServiceOptions) {
    this.#keys = options.keys
    this.#issuer = options.issuer
    this.accessTtlSeconds = options.accessTtlSeconds
    this.refreshTtlSeconds = options.refreshTtlSeconds
    this.#now = options.now ?? (() => new Date())
  }

  async #key (kind: TokenKind): Promise<CryptoKey> {
    let key = this.#cryptoKeys.get(kind)
    if (key === undefined) {
      key = crypto.subtle.importKey('raw', new Uint8Array(this.#keys[kind]), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign', 'verify'])
      this.#cryptoKeys.set(kind, key)
    }
    return await key
  }

  async #sign (kind: TokenKind, subject: string, claims: JWTPayload, jti: string, ttlSeconds: number | undefined): Promise<string> {
    const nowSeconds = Math.floor(this.#now().getTime() / 1000)
    const jwt = new SignJWT(claims)
      .setProtectedHeader({ alg: ALGORITHM, typ: TOKEN_KIND[kind].typ })
      .setIssuer(this.#issuer)
      .setAudience(TOKEN_KIND[kind].audience)
      .setSubject(subject)
      .setJti(jti)
      .setIssuedAt(nowSeconds)
    if (ttlSeconds !== undefined) jwt.setExpirationTime(nowSeconds + ttlSeconds)
    return await jwt.sign(await this.#key(kind))
  }

  async #verify (kind: TokenKind, token: unknown): Promise<JWTPayload> {
    if (typeof token !== 'string' || token.length === 0 || token.length > MAX_TOKEN_LENGTH) throw unauthorized()
    try {
      const { payload } = await jwtVerify(token, await this.#key(kind), {
        algorithms: [ALGORITHM],
        typ: TOKEN_KIND[kind].typ,
        issuer: this.#issuer,
        audience: TOKEN_KIND[kind].audience,
        currentDate: this.#now(),
        requiredClaims: kind === 'instance' ? ['sub', 'jti', 'iat'] : ['sub', 'jti', 'iat', 'exp'],
      })
      if (typeof payload.sub !== 'string' || typeof payload.jti !== 'string') throw unauthorized()
      return payload
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw unauthorized('Token expired')
      throw unauthorized()
    }
  }

  async signAccess (userId: string, sessionVersion: number): Promise<string> {
    return await this.#sign('access', userId, { sv: sessionVersion }, randomBase62(16), this.accessTtlSeconds)
  }

  async verifyAccess (token: unknown): Promise<AccessClaims> {
    const payload = await this.#verify('access', token)
    if (typeof payload.sv !== 'number') throw unauthorized()
    return { userId: payload.sub!, sessionVersion: payload.sv, jti: payload.jti! }
  }

  /** A refresh token for `familyId` (new login: pass a fresh `newId('rtf')`). The caller stores `jti`. */
  async signRefresh (userId: string, familyId: string): Promise<{ token: string, jti: string, expiresAt: Date }> {
    const jti = newId(ID_PREFIX.token)
    const token = await this.#sign('refresh', userId, { fam: familyId }, jti, this.refreshTtlSeconds)
    const expiresAt = new Date((Math.floor(this.#now().getTime() / 1000) + this.refreshTtlSeconds) * 1000)
    return { token, jti, expiresAt }
  }

  async verifyRefresh (token: unknown): Promise<RefreshClaims> {
    const payload = await this.#verify('refresh', token)
    if (typeof payload.fam !== 'string') throw unauthorized()
    return { userId: payload.sub!, familyId: payload.fam, jti: payload.jti!, expiresAt: new Date(payload.exp! * 1000) }
  }

  /** Spec "Security Considerations": instance ID, user ID, issued-at, no expiration. */
  async signInstance (instanceId: string, userId: string): Promise<{ token: string, jti: string }> {
    const jti = randomBase62(22)
    const token = await this.#sign('instance', instanceId, { instance_id: instanceId, user_id: userId }, jti, undefined)
    return { token, jti }
  }

  /** Signature and claims only: the caller must still check `jti` against the instance's current one. */
  async verifyInstance (token: unknown): Promise<InstanceClaims> {
    const payload = await this.#verify('instance', token)
    if (typeof payload.instance_id !== 'string' || typeof payload.user_id !== 'string' || payload.instance_id !== payload.sub) throw unauthorized()
    if (payload.exp !== undefined) throw unauthorized()
    return { instanceId: payload.instance_id, userId: payload.user_id, jti: payload.jti!, issuedAt: new Date(payload.iat! * 1000) }
  }
}
