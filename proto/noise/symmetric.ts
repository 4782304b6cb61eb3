/**
 * The Noise SymmetricState operations (Noise spec section 5.2) that WireGuard's handshake equations
 * spell out one by one (paper 5.4.2-5.4.4). Each handshake key is used for exactly one AEAD call in
 * IKpsk2, so its nonce is always 0 (paper: "AEAD(k, 0, ...)").
 */
import { aeadDecrypt, aeadEncrypt } from './sodium.ts'
import { hash, kdf1, kdf2, kdf3 } from './kdf.ts'
import { x25519Backend } from './keys.ts'
import { AEAD_TAG_LEN } from './constants.ts'

export interface SymmetricState {
  /** C_i / C_r */
  chainingKey: Buffer
  /** H_i / H_r */
  hash: Buffer
}

const ZERO_NONCE = Buffer.alloc(12)

/** Noise InitializeSymmetric(protocolName) then MixHash(prologue); names longer than HASHLEN are hashed. */
export function initializeSymmetric (protocolName: string, prologue: Uint8Array): SymmetricState {
  const name = Buffer.from(protocolName)
  const h = name.length <= 32 ? Buffer.concat([name, Buffer.alloc(32 - name.length)]) : hash(name)
  return { chainingKey: h, hash: hash(h, prologue) }
}

export function copyState (s: SymmetricState): SymmetricState {
  return { chainingKey: s.chainingKey, hash: s.hash }
}

/** H := HASH(H || data) */
export function mixHash (s: SymmetricState, data: Uint8Array): void {
  s.hash = hash(s.hash, data)
}

/** C := KDF1(C, data): the extra step the psk modes add to every `e` token (Noise spec 9.2). */
export function mixChain (s: SymmetricState, data: Uint8Array): void {
  s.chainingKey = kdf1(s.chainingKey, data)
}

/** (C, k) := KDF2(C, input); returns k. */
export function mixKey (s: SymmetricState, input: Uint8Array): Buffer {
  const [chainingKey, key] = kdf2(s.chainingKey, input)
  s.chainingKey = chainingKey
  return key
}

/** (C, t, k) := KDF3(C, input); H := HASH(H || t); returns k (Noise MixKeyAndHash, the psk token). */
export function mixKeyAndHash (s: SymmetricState, input: Uint8Array): Buffer {
  const [chainingKey, tau, key] = kdf3(s.chainingKey, input)
  s.chainingKey = chainingKey
  mixHash(s, tau)
  return key
}

/** k := mixKey(DH(private, public)); null when the DH result is all zero (paper 5.4, wireguard-go errInvalidPublicKey). */
export function mixDh (s: SymmetricState, privateKey: Uint8Array, publicKey: Uint8Array): Buffer | null {
  const shared = x25519Backend().sharedSecret(privateKey, publicKey)
  return shared === null ? null : mixKey(s, shared)
}

/** Writes AEAD(key, 0, plaintext, H) at out[offset..], then H := HASH(H || ciphertext). Returns bytes written. */
export function encryptAndHash (s: SymmetricState, key: Uint8Array, plaintext: Uint8Array, out: Buffer, offset: number): number {
  const len = plaintext.length + AEAD_TAG_LEN
  const ciphertext = out.subarray(offset, offset + len)
  aeadEncrypt(ciphertext, plaintext, s.hash, ZERO_NONCE, key)
  mixHash(s, ciphertext)
  return len
}

/** Opens AEAD(key, 0, ciphertext, H) and mixes the ciphertext into H; null (and H untouched) if it does not authenticate. */
export function decryptAndHash (s: SymmetricState, key: Uint8Array, ciphertext: Uint8Array): Buffer | null {
  if (ciphertext.length < AEAD_TAG_LEN) return null
  const plaintext = Buffer.alloc(ciphertext.length - AEAD_TAG_LEN)
  if (aeadDecrypt(plaintext, ciphertext, s.hash, ZERO_NONCE, key) < 0) return null
  mixHash(s, ciphertext)
  return plaintext
}

/** Noise Split(): (T_send_i, T_recv_i) := KDF2(C, empty) = (initiator->responder key, responder->initiator key). */
export function split (s: SymmetricState): [Buffer, Buffer] {
  return kdf2(s.chainingKey, EMPTY)
}

const EMPTY = new Uint8Array(0)
