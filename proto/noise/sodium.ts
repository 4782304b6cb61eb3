/**
 * The libsodium functions we use, typed here because @types/sodium-native predates some of them.
 * All of them throw on failure (a forged tag, an all-zero DH result).
 */
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
