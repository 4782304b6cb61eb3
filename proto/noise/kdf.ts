/**
 * HASH, HMAC and KDF_n of the WireGuard paper section 5.4: BLAKE2s-256, HMAC-BLAKE2s and HKDF
 * (RFC 5869) over it with an empty info, as wireguard-go's KDF1/KDF2/KDF3 in device/noise-helpers.go.
 */
import { Blake2s, HmacBlake2s } from './blake2s.ts'
import { CONSTRUCTION, IDENTIFIER } from './constants.ts'

const ONE = Buffer.from([1])
const TWO = Buffer.from([2])
const THREE = Buffer.from([3])

/** HASH(parts...) = BLAKE2s(parts concatenated), 32 bytes. */
export function hash (...parts: Uint8Array[]): Buffer {
  const h = new Blake2s(32)
  for (const part of parts) h.update(part)
  return h.digest()
}

/** HMAC(key, parts...) with BLAKE2s-256 (RFC 2104, block size 64). */
export function hmac (key: Uint8Array, ...parts: Uint8Array[]): Buffer {
  return new HmacBlake2s(key).mac(...parts)
}

// HKDF's PRK T0 keys two or three HMACs: its ipad/opad blocks are absorbed once.

/** KDF1(key, input) = T1 where T0 = HMAC(key, input), T1 = HMAC(T0, 0x1). */
export function kdf1 (key: Uint8Array, input: Uint8Array): Buffer {
  const prk = new HmacBlake2s(new HmacBlake2s(key).mac(input))
  return prk.mac(ONE)
}

/** KDF2(key, input) = (T1, T2) with T2 = HMAC(T0, T1 || 0x2). */
export function kdf2 (key: Uint8Array, input: Uint8Array): [Buffer, Buffer] {
  const prk = new HmacBlake2s(new HmacBlake2s(key).mac(input))
  const t1 = prk.mac(ONE)
  return [t1, prk.mac(t1, TWO)]
}

/** KDF3(key, input) = (T1, T2, T3) with T3 = HMAC(T0, T2 || 0x3). */
export function kdf3 (key: Uint8Array, input: Uint8Array): [Buffer, Buffer, Buffer] {
  const prk = new HmacBlake2s(new HmacBlake2s(key).mac(input))
  const t1 = prk.mac(ONE)
  const t2 = prk.mac(t1, TWO)
  return [t1, t2, prk.mac(t2, THREE)]
}


/** C0 = HASH(CONSTRUCTION) (paper 5.4.2). */
export const INITIAL_CHAINING_KEY: Buffer = hash(Buffer.from(CONSTRUCTION))
/** H0 = HASH(C0 || IDENTIFIER). */
export const INITIAL_HASH: Buffer = hash(INITIAL_CHAINING_KEY, Buffer.from(IDENTIFIER))
