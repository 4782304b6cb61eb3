/**
 * Public identifiers: a type prefix and 22 random base62 characters (about 131 bits from
 * crypto.randomBytes), e.g. `usr_4fQ1...`. Unguessable, so an id alone grants nothing, and the
 * prefix says what it names in logs and support tickets.
 */
import { randomBytes } from 'node:crypto'

export const ID_PREFIX = {
  user: 'usr',
  instance: 'inst',
  tokenFamily: 'rtf',
  token: 'tok',
} as const

const ALPHABET = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
const ID_LENGTH = 22

/** Uniform base62 by rejection sampling (bytes >= 248 are discarded so no character is favoured). */
export function randomBase62 (length: number): string {
  let out = ''
  while (out.length < length) {
    for (const byte of randomBytes(length + 8)) {
      if (byte >= 248) continue
      out += ALPHABET[byte % 62]
      if (out.length === length) break
    }
  }
  return out
}

export function newId (prefix: (typeof ID_PREFIX)[keyof typeof ID_PREFIX]): string {
  return `${prefix}_${randomBase62(ID_LENGTH)}`
}

/** Cheap shape check before a database lookup: prefix, underscore, base62 of our length. */
export function looksLikeId (prefix: string, value: string): boolean {
  return value.length === prefix.length + 1 + ID_LENGTH && value.startsWith(`${prefix}_`) && /^[0-9A-Za-z]+$/.test(value.slice(prefix.length + 1))
}
