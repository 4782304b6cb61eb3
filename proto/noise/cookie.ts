/**
 * Cookies under load (paper 5.4.7). The responder (CookieChecker) derives a cookie from the sender's
 * address with a secret that changes every COOKIE_REFRESH_TIME and sends it encrypted with
 * XChaCha20-Poly1305 under HASH(LABEL_COOKIE || its public key), bound to the mac1 of the message
 * that triggered it. The initiator (CookieGenerator) keeps it for COOKIE_REFRESH_TIME and adds mac2.
 * Time is always the caller's monotonic `now` in milliseconds.
 */
import { randomBytes } from 'node:crypto'
import { COOKIE_LEN, COOKIE_REFRESH_TIME, AEAD_TAG_LEN, KEY_LEN, MAC_LEN } from './constants.ts'
import { cookieKey, mac, mac1Key, mac1Of, verifyMac2, writeMac1, writeMac2 } from './mac.ts'
import { sodium } from './sodium.ts'
import {
  MESSAGE_COOKIE_REPLY, MESSAGE_COOKIE_REPLY_COOKIE_OFFSET, MESSAGE_COOKIE_REPLY_NONCE_OFFSET,
  MESSAGE_COOKIE_REPLY_RECEIVER_OFFSET, MESSAGE_COOKIE_REPLY_SIZE, MESSAGE_TYPE_OFFSET,
} from '../wire/wireguard.ts'

// Cookie reply (paper 5.4.7): type, reserved, receiver, nonce (24), encrypted cookie (16 + 16).
const ENCRYPTED_COOKIE_LEN = COOKIE_LEN + AEAD_TAG_LEN

export class CookieChecker {
  private readonly encryptionKey: Buffer
  private current: Buffer | null = null
  /** The secret retired at the last rotation; cookies made with it stay valid until the next one. */
  private previous: Buffer | null = null
  private secretSetAt = -Infinity

  constructor (localPublicKey: Buffer) {
    this.encryptionKey = cookieKey(localPublicKey)
  }

  /**
   * Builds the 64-byte cookie reply for `message` (a handshake with a valid mac1) from `source`
   * (any stable encoding of the sender's address and port), addressed to `receiverIndex`.
   */
  createReply (message: Uint8Array, receiverIndex: number, source: Uint8Array, now: number): Buffer {
    const cookie = mac(this.secret(now), source) // tau = MAC(R_m, A_m')
    const reply = Buffer.alloc(MESSAGE_COOKIE_REPLY_SIZE)
    reply[MESSAGE_TYPE_OFFSET] = MESSAGE_COOKIE_REPLY
    reply.writeUInt32LE(receiverIndex >>> 0, MESSAGE_COOKIE_REPLY_RECEIVER_OFFSET)
    const nonce = reply.subarray(MESSAGE_COOKIE_REPLY_NONCE_OFFSET, MESSAGE_COOKIE_REPLY_COOKIE_OFFSET)
    sodium.randombytes_buf(nonce)
    sodium.crypto_aead_xchacha20poly1305_ietf_encrypt(
      reply.subarray(MESSAGE_COOKIE_REPLY_COOKIE_OFFSET, MESSAGE_COOKIE_REPLY_COOKIE_OFFSET + ENCRYPTED_COOKIE_LEN), cookie, mac1Of(message), null, nonce, this.encryptionKey,
    )
    return reply
  }

  /** True when mac2 of `message` was made with a cookie we issued to `source` under the current or previous secret. */
  verifyMac2 (message: Uint8Array, source: Uint8Array, now: number): boolean {
    const current = this.secret(now)
    if (verifyMac2(message, mac(current, source))) return true
    return this.previous !== null && verifyMac2(message, mac(this.previous, source))
  }

  /** The current secret, rotated when COOKIE_REFRESH_TIME has passed; a secret older than two periods is gone. */
  private secret (now: number): Buffer {
    const elapsed = now - this.secretSetAt
    if (this.current === null || elapsed >= COOKIE_REFRESH_TIME) {
      this.previous = elapsed < 2 * COOKIE_REFRESH_TIME ? this.current : null
      this.current = randomBytes(KEY_LEN)
      this.secretSetAt = now
    }
    return this.current
  }
}

export class CookieGenerator {
  private readonly mac1Key: Buffer
  private readonly encryptionKey: Buffer
  private readonly lastMac1 = Buffer.alloc(MAC_LEN)
  private hasLastMac1 = false
  private cookie: Buffer | null = null
  private cookieSetAt = 0

  constructor (remotePublicKey: Buffer) {
    this.mac1Key = mac1Key(remotePublicKey)
    this.encryptionKey = cookieKey(remotePublicKey)
  }

  /** Decrypts a 64-byte cookie reply with the mac1 of our last sent message as AD; false if it does not authenticate. */
  consumeReply (reply: Uint8Array, now: number): boolean {
    if (!this.hasLastMac1 || reply.length !== MESSAGE_COOKIE_REPLY_SIZE || reply[MESSAGE_TYPE_OFFSET] !== MESSAGE_COOKIE_REPLY) return false
    const cookie = Buffer.alloc(COOKIE_LEN)
    try {
      sodium.crypto_aead_xchacha20poly1305_ietf_decrypt(
        cookie, null, reply.subarray(MESSAGE_COOKIE_REPLY_COOKIE_OFFSET, MESSAGE_COOKIE_REPLY_COOKIE_OFFSET + ENCRYPTED_COOKIE_LEN), this.lastMac1,
        reply.subarray(MESSAGE_COOKIE_REPLY_NONCE_OFFSET, MESSAGE_COOKIE_REPLY_COOKIE_OFFSET), this.encryptionKey,
      )
    } catch {
      return false
    }
    this.cookie = cookie
    this.cookieSetAt = now
    return true
  }

  /** Writes mac1 (always) and mac2 (while a cookie younger than COOKIE_REFRESH_TIME is held, else zeros). */
  addMacs (message: Buffer, now: number): void {
    writeMac1(message, this.mac1Key)
    this.lastMac1.set(mac1Of(message))
    this.hasLastMac1 = true
    if (this.cookie !== null && now - this.cookieSetAt < COOKIE_REFRESH_TIME) {
      writeMac2(message, this.cookie)
    } else {
      message.fill(0, message.length - MAC_LEN)
    }
  }
}
