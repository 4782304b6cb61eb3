/**
 * Transport data messages (paper 5.4.6): ChaCha20-Poly1305 with the 64-bit counter as nonce
 * (4 zero bytes || counter little-endian) and empty associated data, plaintext zero-padded to a
 * multiple of 16. The AEAD sits behind AeadBackend so native backends can be measured and
 * cross-checked; bench/crypto.ts picks defaultAead.
 */
import { createCipheriv, createDecipheriv } from 'node:crypto'
import { AEAD_TAG_LEN, PADDING_MULTIPLE } from './constants.ts'
import { nativeAead } from './native-aead.ts'
import { aeadDecrypt, aeadEncrypt } from './sodium.ts'
import {
  MESSAGE_TRANSPORT, MESSAGE_TRANSPORT_COUNTER_OFFSET, MESSAGE_TRANSPORT_HEADER_SIZE as HEADER_LEN,
  MESSAGE_TRANSPORT_RECEIVER_OFFSET,
} from '../wire/wireguard.ts'

export interface AeadBackend {
  readonly name: string
  /**
   * Encrypts `plaintext` with nonce `counter` into out[outOffset..]; returns plaintext.length + 16.
   * `plaintext` may be the very bytes at out[outOffset..] (in place).
   */
  seal (key: Uint8Array, counter: bigint, plaintext: Uint8Array, out: Uint8Array, outOffset: number): number
  /**
   * Authenticates and decrypts into out[outOffset..]; returns ciphertext.length - 16, or -1 when the
   * tag does not verify. On failure no unauthenticated plaintext is written: the output range is left
   * as it was or zeroed (libsodium clears it). `out` may be the ciphertext's own bytes (in place).
   */
  open (key: Uint8Array, counter: bigint, ciphertext: Uint8Array, out: Uint8Array, outOffset: number): number
  /**
   * Optional whole-message seal: the packet of `packetLength` bytes already sits at out[offset + 16..];
   * pads it, writes the transport header and seals, in one call. Returns the message length.
   */
  sealMessage?: (key: Uint8Array, receiverIndex: number, counter: bigint, out: Buffer, offset: number, packetLength: number) => number
  /**
   * Optional: opens the ciphertext-and-tag at buf[offset, offset + length) in place, with no views
   * created; returns the plaintext length or -1 (as `open`).
   */
  openAt?: (key: Uint8Array, counter: bigint, buf: Buffer, offset: number, length: number) => number
}

const NONCE_LEN = 12
const NONCE_COUNTER_OFFSET = 4

/** sodium-native: libsodium's crypto_aead_chacha20poly1305_ietf (RFC 8439). */
export const sodiumAead: AeadBackend = (() => {
  // One nonce buffer for the module: the data path is single-threaded and calls never interleave.
  const nonce = Buffer.alloc(NONCE_LEN)
  return {
    name: 'sodium-native',
    seal (key, counter, plaintext, out, outOffset) {
      const len = plaintext.length + AEAD_TAG_LEN
      nonce.writeBigUInt64LE(counter, NONCE_COUNTER_OFFSET)
      const c = outOffset === 0 && out.length === len ? out : out.subarray(outOffset, outOffset + len)
      return aeadEncrypt(c, plaintext, null, nonce, key)
    },
    open (key, counter, ciphertext, out, outOffset) {
      const len = ciphertext.length - AEAD_TAG_LEN
      if (len < 0 || outOffset + len > out.length) return -1
      nonce.writeBigUInt64LE(counter, NONCE_COUNTER_OFFSET)
      const m = outOffset === 0 && out.length === len ? out : out.subarray(outOffset, outOffset + len)
      return aeadDecrypt(m, ciphertext, null, nonce, key)
    },
  }
})()

/** node:crypto (OpenSSL): one cipher object per call, which is what makes it slow on small packets. */
export const nodeAead: AeadBackend = (() => {
  const nonce = Buffer.alloc(NONCE_LEN)
  const options = { authTagLength: AEAD_TAG_LEN } as const
  return {
    name: 'node:crypto',
    seal (key, counter, plaintext, out, outOffset) {
      nonce.writeBigUInt64LE(counter, NONCE_COUNTER_OFFSET)
      const cipher = createCipheriv('chacha20-poly1305', key, nonce, options)
      const body = cipher.update(plaintext)
      cipher.final()
      out.set(body, outOffset)
      out.set(cipher.getAuthTag(), outOffset + body.length)
      return body.length + AEAD_TAG_LEN
    },
    open (key, counter, ciphertext, out, outOffset) {
      const len = ciphertext.length - AEAD_TAG_LEN
      if (len < 0 || outOffset + len > out.length) return -1
      nonce.writeBigUInt64LE(counter, NONCE_COUNTER_OFFSET)
      const decipher = createDecipheriv('chacha20-poly1305', key, nonce, options)
      decipher.setAuthTag(ciphertext.subarray(len))
      const body = decipher.update(ciphertext.subarray(0, len))
      try {
        decipher.final()
      } catch {
        return -1
      }
      out.set(body, outOffset)
      return len
    },
  }
})()

/**
 * The fastest backend on 1420-byte packets by bench/crypto.ts (see bench/RESULTS.md): OpenSSL
 * through the native module when it is built, else sodium-native.
 */
export const defaultAead: AeadBackend = nativeAead ?? sodiumAead

/** Length of `n` plaintext bytes after padding to 16 (paper 5.4.6: keepalives stay empty). */
export function paddedLength (n: number): number {
  return (n + PADDING_MULTIPLE - 1) & ~(PADDING_MULTIPLE - 1)
}

/** Length of the transport message carrying a packet of `packetLength` bytes. */
export function transportMessageLength (packetLength: number): number {
  return HEADER_LEN + paddedLength(packetLength) + AEAD_TAG_LEN
}

/** Builds a whole transport message in a new buffer: type 4, receiver, counter, AEAD(packet padded to 16). */
export function sealTransport (aead: AeadBackend, key: Uint8Array, receiverIndex: number, counter: bigint, packet: Uint8Array): Buffer {
  const message = Buffer.allocUnsafe(transportMessageLength(packet.length))
  sealTransportInto(aead, key, receiverIndex, counter, packet, message, 0)
  return message
}

/**
 * Like sealTransport, into out[offset..] (transportMessageLength(packet.length) bytes); returns that
 * length. When `packet` already sits at out[offset + 16..] (a packet built with 16 bytes of headroom)
 * it is encrypted in place without a copy, which is the cheapest way through.
 */
export function sealTransportInto (
  aead: AeadBackend, key: Uint8Array, receiverIndex: number, counter: bigint, packet: Uint8Array, out: Buffer, offset: number,
): number {
  const padded = paddedLength(packet.length)
  const length = HEADER_LEN + padded + AEAD_TAG_LEN
  if (offset < 0 || out.length - offset < length) throw new RangeError('transport message does not fit')
  const body = offset + HEADER_LEN
  if (packet.buffer !== out.buffer || packet.byteOffset !== out.byteOffset + body) out.set(packet, body)
  if (aead.sealMessage !== undefined) return aead.sealMessage(key, receiverIndex >>> 0, counter, out, offset, packet.length)
  if (padded !== packet.length) out.fill(0, body + packet.length, body + padded)
  out.writeUInt32LE(MESSAGE_TRANSPORT, offset) // type and three reserved zero bytes
  out.writeUInt32LE(receiverIndex >>> 0, offset + MESSAGE_TRANSPORT_RECEIVER_OFFSET)
  out.writeBigUInt64LE(counter, offset + MESSAGE_TRANSPORT_COUNTER_OFFSET)
  aead.seal(key, counter, out.subarray(body, body + padded), out, body)
  return length
}

/**
 * Decrypts a whole transport message's payload in place: the padded plaintext is then at
 * message[16, 16 + n) for the returned n, or -1 when it does not authenticate (drop the datagram;
 * the payload may be zeroed). The data path's form: it creates no views.
 */
export function openTransportMessage (aead: AeadBackend, key: Uint8Array, counter: bigint, message: Buffer): number {
  if (message.length < HEADER_LEN + AEAD_TAG_LEN) return -1
  if (aead.openAt !== undefined) return aead.openAt(key, counter, message, HEADER_LEN, message.length - HEADER_LEN)
  const payload = message.subarray(HEADER_LEN)
  return aead.open(key, counter, payload, payload, 0)
}

/**
 * Decrypts the payload of a transport message (the bytes after the 16-byte header) in place and
 * returns the padded plaintext as a view of the same memory, or null when it does not authenticate
 * (the payload bytes may then be zeroed: drop the datagram). The caller strips padding using the IP
 * header's length.
 */
export function openTransport (aead: AeadBackend, key: Uint8Array, counter: bigint, ciphertext: Uint8Array): Buffer | null {
  const view = Buffer.isBuffer(ciphertext) ? ciphertext : Buffer.from(ciphertext.buffer, ciphertext.byteOffset, ciphertext.length)
  const len = aead.open(key, counter, view, view, 0)
  return len < 0 ? null : view.subarray(0, len)
}
