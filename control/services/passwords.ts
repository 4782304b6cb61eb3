/**
 * Password hashing with argon2id (OWASP Password Storage Cheat Sheet: m=19 MiB, t=2, p=1 is the
 * recommended minimum; those are our production defaults). Passwords are 8..128 characters and
 * hashed whole: nothing is truncated.
 */
import { Algorithm, hash, verify } from '@node-rs/argon2'

export interface Argon2Params {
  memoryKiB: number
  timeCost: number
  parallelism: number
}

export const PASSWORD_MIN_LENGTH = 8
export const PASSWORD_MAX_LENGTH = 128

export class PasswordHasher {
  readonly #params: Argon2Params
  #dummyHash: Promise<string> | undefined

  constructor (params: Argon2Params) {
    this.#params = params
  }

  async hash (password: string): Promise<string> {
    return await hash(password, {
      algorithm: Algorithm.Argon2id,
      memoryCost: this.#params.memoryKiB,
      timeCost: this.#params.timeCost,
      parallelism: this.#params.parallelism,
    })
  }

  /** False on mismatch and on a malformed stored hash (never throws for bad input). */
  async verify (storedHash: string, password: string): Promise<boolean> {
    try {
      return await verify(storedHash, password)
    } catch {
      return false
    }
  }

  /**
   * Spends the same work as a real check against a hash of our own, so "no such account" takes
   * as long as "wrong password" (OWASP Authentication Cheat Sheet: response time).
   */
  async verifyNothing (password: string): Promise<false> {
    this.#dummyHash ??= this.hash('not-a-password-of-anyone')
    await this.verify(await this.#dummyHash, password)
    return false
  }
}
