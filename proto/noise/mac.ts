/**
 * MAC1 and MAC2 of handshake messages (paper 5.4.4): MAC(key, input) = keyed BLAKE2s with a 16-byte
 * output. mac1 covers the message up to mac1 and is keyed by HASH(LABEL_MAC1 || receiver's static
 * public key); mac2 covers the message up to mac2 and is keyed by the cookie.
 */
import { timingSafeEqual } from 'node:crypto'
import { LABEL_COOKIE, LABEL_MAC1, MAC_LEN } from './constants.ts'
import { Blake2s } from './blake2s.ts'
import { hash } from './kdf.ts'

const MAC1_LABEL = Buffer.from(LABEL_MAC1)
const COOKIE_LABEL = Buffer.from(LABEL_COOKIE)
/** mac1 and mac2 are the last 32 bytes of a handshake message. */
const MACS_LEN = 2 * MAC_LEN

/** MAC(key, input): keyed BLAKE2s-128 (node:crypto cannot key BLAKE2s). */
export function mac (key: Uint8Array, input: Uint8Array): Buffer {
  return new Blake2s(MAC_LEN, key).update(input).digest()
}

/** HASH(LABEL_MAC1 || spub): the key of mac1 for messages sent to the owner of `publicKey`. */
export function mac1Key (publicKey: Uint8Array): Buffer {
  return hash(MAC1_LABEL, publicKey)
}

/** HASH(LABEL_COOKIE || spub): the XChaCha20-Poly1305 key of cookie replies from the owner of `publicKey`. */
export function cookieKey (publicKey: Uint8Array): Buffer {
  return hash(COOKIE_LABEL, publicKey)
}

function mac1Offset (message: Uint8Array): number {
  return message.length - MACS_LEN
}

/** Fills the mac1 field of a handshake message (148 or 92 bytes) in place. */
export function writeMac1 (message: Buffer, key: Uint8Array): void {
  const offset = mac1Offset(message)
  message.set(mac(key, message.subarray(0, offset)), offset)
}

/** Constant-time check of the mac1 field. */
export function verifyMac1 (message: Uint8Array, key: Uint8Array): boolean {
  const offset = mac1Offset(message)
  if (offset < 0) return false
  return timingSafeEqual(mac(key, message.subarray(0, offset)), message.subarray(offset, offset + MAC_LEN))
}

/** Fills the mac2 field from a 16-byte cookie. */
export function writeMac2 (message: Buffer, cookie: Uint8Array): void {
  const offset = message.length - MAC_LEN
  message.set(mac(cookie, message.subarray(0, offset)), offset)
}

/** Constant-time check of the mac2 field against a 16-byte cookie. */
export function verifyMac2 (message: Uint8Array, cookie: Uint8Array): boolean {
  const offset = message.length - MAC_LEN
  if (offset < MAC_LEN) return false
  return timingSafeEqual(mac(cookie, message.subarray(0, offset)), message.subarray(offset))
}

/** The mac1 field of a handshake message (a view). */
export function mac1Of (message: Uint8Array): Uint8Array {
  const offset = mac1Offset(message)
  return message.subarray(offset, offset + MAC_LEN)
}
