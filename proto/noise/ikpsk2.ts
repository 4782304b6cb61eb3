/**
 * The two messages of the Noise pattern IKpsk2 (Noise spec 7.5 and 9):
 *   <- s
 *   ...
 *   -> e, es, s, ss
 *   <- e, ee, se, psk
 * written with the SymmetricState operations, independent of WireGuard's framing. handshake.ts frames
 * these bytes inside the WireGuard messages (paper 5.4.2, 5.4.3); the published Noise test vectors run
 * through the same functions with their own prologue and payloads.
 */
import { AEAD_TAG_LEN, KEY_LEN } from './constants.ts'
import type { KeyPair } from './keys.ts'
import {
  type SymmetricState, decryptAndHash, encryptAndHash, mixChain, mixDh, mixHash, mixKey, mixKeyAndHash,
} from './symmetric.ts'

/** Length of the first message for a payload of `payloadLen` bytes: e (32) + AEAD(s) (48) + AEAD(payload). */
export function messageALength (payloadLen: number): number {
  return KEY_LEN + KEY_LEN + AEAD_TAG_LEN + payloadLen + AEAD_TAG_LEN
}

/** Length of the second message: e (32) + AEAD(payload). */
export function messageBLength (payloadLen: number): number {
  return KEY_LEN + payloadLen + AEAD_TAG_LEN
}

/** `e` token of a psk handshake: H := HASH(H || e), C := KDF1(C, e) (paper 5.4.2). */
function mixEphemeral (s: SymmetricState, ephemeralPublic: Uint8Array): void {
  mixHash(s, ephemeralPublic)
  mixChain(s, ephemeralPublic)
}

/**
 * Initiator: -> e, es, s, ss, payload. Writes messageALength(payload.length) bytes at out[offset..].
 * False when a DH result is zero (the remote static key is a low-order point).
 */
export function writeMessageA (
  s: SymmetricState, ephemeral: KeyPair, local: KeyPair, remoteStatic: Uint8Array,
  payload: Uint8Array, out: Buffer, offset: number,
): boolean {
  out.set(ephemeral.publicKey, offset)
  mixEphemeral(s, ephemeral.publicKey)
  const es = mixDh(s, ephemeral.privateKey, remoteStatic)
  if (es === null) return false
  offset += KEY_LEN
  offset += encryptAndHash(s, es, local.publicKey, out, offset)
  const ss = mixDh(s, local.privateKey, remoteStatic)
  if (ss === null) return false
  encryptAndHash(s, ss, payload, out, offset)
  return true
}

export interface MessageAContent { remoteEphemeral: Buffer; remoteStatic: Buffer; payload: Buffer }

/**
 * Responder: reads -> e, es, s, ss, payload from exactly messageALength(n) bytes. null on any failure;
 * `staticStatic`, when given, supplies DH(local static, remote static) (a cache), else it is computed.
 */
export function readMessageA (
  s: SymmetricState, local: KeyPair, message: Uint8Array,
  staticStatic?: (remoteStatic: Buffer) => Buffer | null,
): MessageAContent | null {
  if (message.length < messageALength(0)) return null
  const remoteEphemeral = Buffer.from(message.subarray(0, KEY_LEN))
  mixEphemeral(s, remoteEphemeral)
  const es = mixDh(s, local.privateKey, remoteEphemeral)
  if (es === null) return null
  const staticEnd = KEY_LEN + KEY_LEN + AEAD_TAG_LEN
  const remoteStatic = decryptAndHash(s, es, message.subarray(KEY_LEN, staticEnd))
  if (remoteStatic === null) return null
  let ss: Buffer | null
  if (staticStatic !== undefined) {
    const shared = staticStatic(remoteStatic)
    ss = shared === null ? null : mixKey(s, shared)
  } else {
    ss = mixDh(s, local.privateKey, remoteStatic)
  }
  if (ss === null) return null
  const payload = decryptAndHash(s, ss, message.subarray(staticEnd))
  if (payload === null) return null
  return { remoteEphemeral, remoteStatic, payload }
}

/**
 * Responder: <- e, ee, se, psk, payload. Writes messageBLength(payload.length) bytes at out[offset..].
 * `psk` is 32 bytes (all zero when none is configured, paper 5.4.3). False when a DH result is zero.
 */
export function writeMessageB (
  s: SymmetricState, ephemeral: KeyPair, remoteEphemeral: Uint8Array, remoteStatic: Uint8Array,
  psk: Uint8Array, payload: Uint8Array, out: Buffer, offset: number,
): boolean {
  out.set(ephemeral.publicKey, offset)
  mixEphemeral(s, ephemeral.publicKey)
  if (mixDh(s, ephemeral.privateKey, remoteEphemeral) === null) return false // ee
  if (mixDh(s, ephemeral.privateKey, remoteStatic) === null) return false // se
  const key = mixKeyAndHash(s, psk)
  encryptAndHash(s, key, payload, out, offset + KEY_LEN)
  return true
}

/** Initiator: reads <- e, ee, se, psk, payload. null on any failure. */
export function readMessageB (
  s: SymmetricState, ephemeral: KeyPair, local: KeyPair, psk: Uint8Array, message: Uint8Array,
): { remoteEphemeral: Buffer; payload: Buffer } | null {
  if (message.length < messageBLength(0)) return null
  const remoteEphemeral = Buffer.from(message.subarray(0, KEY_LEN))
  mixEphemeral(s, remoteEphemeral)
  if (mixDh(s, ephemeral.privateKey, remoteEphemeral) === null) return null // ee
  if (mixDh(s, local.privateKey, remoteEphemeral) === null) return null // se
  const key = mixKeyAndHash(s, psk)
  const payload = decryptAndHash(s, key, message.subarray(KEY_LEN))
  if (payload === null) return null
  return { remoteEphemeral, payload }
}
