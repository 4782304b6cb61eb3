/**
 * The libsodium functions we use, typed here because @types/sodium-native predates some of them.
 * The wrapped functions throw on failure (a forged tag, an all-zero DH result).
 *
 * For the data path, ChaCha20-Poly1305 also goes straight to sodium-native's native binding when it
 * is there: the package's JS wrapper adds argument assertions and an exception per forged packet,
 * about a quarter of the per-packet cost at 1420 bytes (bench/crypto.ts). aeadEncrypt/aeadDecrypt
 * check every length themselves before calling it, because the binding trusts them.
 */
import { createRequire } from 'node:module'
import sodiumNative from 'sodium-native'

type Bytes = Uint8Array

export interface Sodium {
  crypto_scalarmult (q: Bytes, n: Bytes, p: Bytes): void
  crypto_scalarmult_base (q: Bytes, n: Bytes): void
  crypto_aead_chacha20poly1305_ietf_encrypt (c: Bytes, m: Bytes, ad: Bytes | null, nsec: null, npub: Bytes, k: Bytes): number
  crypto_aead_chacha20poly1305_ietf_decrypt (m: Bytes, nsec: null, c: Bytes, ad: Bytes | null, npub: Bytes, k: Bytes): number
  crypto_aead_xchacha20poly1305_ietf_encrypt (c: Bytes, m: Bytes, ad: Bytes | null, nsec: null, npub: Bytes, k: Bytes): number
  crypto_aead_xchacha20poly1305_ietf_decrypt (m: Bytes, nsec: null, c: Bytes, ad: Bytes | null, npub: Bytes, k: Bytes): number
  randombytes_buf (buf: Bytes): void
}

export const sodium = sodiumNative as unknown as Sodium

/** sodium-native's native functions: they return the output length or a negative status, never throw. */
interface NativeAead {
  crypto_aead_chacha20poly1305_ietf_encrypt (c: Bytes, m: Bytes, ad: Bytes | undefined, npub: Bytes, k: Bytes): number
  crypto_aead_chacha20poly1305_ietf_decrypt (m: Bytes, c: Bytes, ad: Bytes | undefined, npub: Bytes, k: Bytes): number
}

function loadNative (): NativeAead | null {
  try {
    const binding = createRequire(import.meta.url)('sodium-native/binding') as Partial<NativeAead>
    if (typeof binding.crypto_aead_chacha20poly1305_ietf_encrypt !== 'function' ||
      typeof binding.crypto_aead_chacha20poly1305_ietf_decrypt !== 'function') return null
    // Self-test: a round trip and a refused forgery, so a changed binding falls back rather than misbehaves.
    const key = new Uint8Array(32).fill(1)
    const nonce = new Uint8Array(12)
    const sealed = new Uint8Array(20)
    const opened = new Uint8Array(4)
    if (binding.crypto_aead_chacha20poly1305_ietf_encrypt(sealed, Uint8Array.of(1, 2, 3, 4), undefined, nonce, key) !== 20) return null
    if (binding.crypto_aead_chacha20poly1305_ietf_decrypt!(opened, sealed, undefined, nonce, key) !== 4 || opened[3] !== 4) return null
    sealed[0] ^= 1
    if (binding.crypto_aead_chacha20poly1305_ietf_decrypt!(opened, sealed, undefined, nonce, key) >= 0) return null
    return binding as NativeAead
  } catch {
    return null
  }
}

const native = loadNative()
/** Which path aeadEncrypt/aeadDecrypt take: 'binding' (native, no wrapper) or 'wrapper'. */
export const aeadPath: 'binding' | 'wrapper' = native === null ? 'wrapper' : 'binding'

const KEY_BYTES = 32
const NONCE_BYTES = 12
const TAG_BYTES = 16

/** ChaCha20-Poly1305 (RFC 8439) seal: c.length must be m.length + 16; returns c.length. Throws on misuse. */
export function aeadEncrypt (c: Bytes, m: Bytes, ad: Bytes | null, npub: Bytes, k: Bytes): number {
  if (c.length !== m.length + TAG_BYTES || npub.length !== NONCE_BYTES || k.length !== KEY_BYTES) {
    throw new RangeError('ChaCha20-Poly1305: bad buffer sizes')
  }
  if (native !== null) return native.crypto_aead_chacha20poly1305_ietf_encrypt(c, m, ad ?? undefined, npub, k)
  return sodium.crypto_aead_chacha20poly1305_ietf_encrypt(c, m, ad, null, npub, k)
}

/** ChaCha20-Poly1305 open: m.length must be c.length - 16; returns m.length, or -1 when it does not authenticate. */
export function aeadDecrypt (m: Bytes, c: Bytes, ad: Bytes | null, npub: Bytes, k: Bytes): number {
  if (c.length < TAG_BYTES || m.length !== c.length - TAG_BYTES || npub.length !== NONCE_BYTES || k.length !== KEY_BYTES) return -1
  if (native !== null) {
    return native.crypto_aead_chacha20poly1305_ietf_decrypt(m, c, ad ?? undefined, npub, k) < 0 ? -1 : m.length
  }
  try {
    sodium.crypto_aead_chacha20poly1305_ietf_decrypt(m, null, c, ad, npub, k)
  } catch {
    return -1
  }
  return m.length
}
