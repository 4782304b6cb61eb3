/**
 * WireGuard's handshake (paper 5.4.2 initiation, 5.4.3 response, 5.4.5 transport keys): the IKpsk2
 * messages of ikpsk2.ts framed in the 148-byte initiation and 92-byte response, with the TAI64N
 * timestamp as the first payload and an empty second payload. MACs are left zero: callers add them
 * (CookieGenerator.addMacs / writeMac1) and check them before calling in here.
 */
import { KEY_LEN, STATIC_DH_CACHE_MAX } from './constants.ts'
import { INITIAL_CHAINING_KEY, INITIAL_HASH, hash } from './kdf.ts'
import { KeyError, type KeyPair, x25519Backend } from './keys.ts'
import { messageALength, messageBLength, readMessageA, readMessageB, writeMessageA, writeMessageB } from './ikpsk2.ts'
import { type SymmetricState, split } from './symmetric.ts'
import { TAI64N_LEN, tai64n } from './tai64n.ts'
import {
  MESSAGE_INITIATION, MESSAGE_INITIATION_EPHEMERAL_OFFSET, MESSAGE_INITIATION_SENDER_OFFSET, MESSAGE_INITIATION_SIZE,
  MESSAGE_RESPONSE, MESSAGE_RESPONSE_EPHEMERAL_OFFSET, MESSAGE_RESPONSE_RECEIVER_OFFSET, MESSAGE_RESPONSE_SENDER_OFFSET,
  MESSAGE_RESPONSE_SIZE, MESSAGE_TYPE_OFFSET,
} from '../wire/wireguard.ts'

export interface StaticIdentity { privateKey: Buffer; publicKey: Buffer }

export interface SessionKeys {
  sendKey: Buffer
  receiveKey: Buffer
  localIndex: number
  remoteIndex: number
  isInitiator: boolean
}

export interface InitiatorHandshake {
  readonly ephemeral: KeyPair
  readonly state: SymmetricState
  readonly localIndex: number
  readonly remoteStatic: Buffer
  readonly psk: Buffer
}

export interface ResponderHandshake {
  readonly state: SymmetricState
  readonly remoteEphemeral: Buffer
  readonly remoteStatic: Buffer
  readonly remoteIndex: number
}

export interface ConsumedInitiation {
  remoteStatic: Buffer
  /** 12-byte TAI64N from the initiator; the caller rejects it unless newer than the last one of this peer (paper 5.1). */
  timestamp: Buffer
  /** The sender index of the initiation. */
  remoteIndex: number
  handshake: ResponderHandshake
}

// The Noise part of each message starts at its ephemeral key (paper 5.4.2, 5.4.3).
const INITIATION_NOISE_OFFSET = MESSAGE_INITIATION_EPHEMERAL_OFFSET
const RESPONSE_NOISE_OFFSET = MESSAGE_RESPONSE_EPHEMERAL_OFFSET
const INITIATION_NOISE_LEN = messageALength(TAI64N_LEN) // 32 + 48 + 28 = 108
const RESPONSE_NOISE_LEN = messageBLength(0) // 32 + 16 = 48

const ZERO_PSK = Buffer.alloc(KEY_LEN)
const EMPTY = Buffer.alloc(0)

/** C := C0, H := HASH(H0 || S_pub_r): the state after the responder's static pre-message (paper 5.4.2). */
function initialState (responderStatic: Buffer): SymmetricState {
  return { chainingKey: INITIAL_CHAINING_KEY, hash: hash(INITIAL_HASH, responderStatic) }
}

/**
 * DH(S_priv_r, S_pub_i) depends only on the two static keys, so wireguard-go precomputes it per
 * peer; we keep a bounded cache per local identity (cleared whole when full, and when the identity's
 * private key changes).
 */
interface StaticDhCache { privateKey: Buffer; entries: Map<string, Buffer | null> }
const staticDhCaches = new WeakMap<StaticIdentity, StaticDhCache>()
function staticStaticOf (local: StaticIdentity): (remoteStatic: Buffer) => Buffer | null {
  let cache = staticDhCaches.get(local)
  if (cache === undefined || !cache.privateKey.equals(local.privateKey)) {
    cache = { privateKey: Buffer.from(local.privateKey), entries: new Map() }
    staticDhCaches.set(local, cache)
  }
  const entries = cache.entries
  return (remoteStatic) => {
    const id = remoteStatic.toString('latin1')
    let shared = entries.get(id)
    if (shared === undefined) {
      shared = x25519Backend().sharedSecret(local.privateKey, remoteStatic)
      if (entries.size >= STATIC_DH_CACHE_MAX) entries.clear()
      entries.set(id, shared)
    }
    return shared
  }
}

/**
 * Builds a 148-byte initiation (macs zero). Throws KeyError `key_low_order` when `remoteStatic` is a
 * low-order point (wireguard-go refuses to initiate to such a peer).
 */
export function createInitiation (
  local: StaticIdentity, remoteStatic: Buffer, psk: Buffer | null, localIndex: number, wallClockMs: number,
): { message: Buffer; handshake: InitiatorHandshake } {
  const state = initialState(remoteStatic)
  const ephemeral = x25519Backend().generateKeyPair()
  const message = Buffer.alloc(MESSAGE_INITIATION_SIZE)
  message[MESSAGE_TYPE_OFFSET] = MESSAGE_INITIATION
  message.writeUInt32LE(localIndex >>> 0, MESSAGE_INITIATION_SENDER_OFFSET)
  if (!writeMessageA(state, ephemeral, local, remoteStatic, tai64n(wallClockMs), message, INITIATION_NOISE_OFFSET)) {
    throw new KeyError('remote static key is a low-order point', 'key_low_order')
  }
  return {
    message,
    handshake: { ephemeral, state, localIndex: localIndex >>> 0, remoteStatic, psk: psk ?? ZERO_PSK },
  }
}

/** Decrypts an initiation addressed to `local` (mac1 already checked by the caller). null on any failure. */
export function consumeInitiation (local: StaticIdentity, message: Uint8Array): ConsumedInitiation | null {
  if (message.length !== MESSAGE_INITIATION_SIZE || message[MESSAGE_TYPE_OFFSET] !== MESSAGE_INITIATION) return null
  const state = initialState(local.publicKey)
  const noise = message.subarray(INITIATION_NOISE_OFFSET, INITIATION_NOISE_OFFSET + INITIATION_NOISE_LEN)
  const content = readMessageA(state, local, noise, staticStaticOf(local))
  if (content === null) return null
  const remoteIndex = readU32LE(message, MESSAGE_INITIATION_SENDER_OFFSET)
  return {
    remoteStatic: content.remoteStatic,
    timestamp: content.payload,
    remoteIndex,
    handshake: { state, remoteEphemeral: content.remoteEphemeral, remoteStatic: content.remoteStatic, remoteIndex },
  }
}

/** Builds the 92-byte response (macs zero) and the responder's session keys. Use a handshake once. */
export function createResponse (
  handshake: ResponderHandshake, psk: Buffer | null, localIndex: number,
): { message: Buffer; keys: SessionKeys } {
  const state: SymmetricState = { ...handshake.state }
  const ephemeral = x25519Backend().generateKeyPair()
  const message = Buffer.alloc(MESSAGE_RESPONSE_SIZE)
  message[MESSAGE_TYPE_OFFSET] = MESSAGE_RESPONSE
  message.writeUInt32LE(localIndex >>> 0, MESSAGE_RESPONSE_SENDER_OFFSET)
  message.writeUInt32LE(handshake.remoteIndex, MESSAGE_RESPONSE_RECEIVER_OFFSET)
  // consumeInitiation already refused low-order ephemeral and static keys, so this cannot fail.
  if (!writeMessageB(state, ephemeral, handshake.remoteEphemeral, handshake.remoteStatic, psk ?? ZERO_PSK, EMPTY, message, RESPONSE_NOISE_OFFSET)) {
    throw new KeyError('initiator key is a low-order point', 'key_low_order')
  }
  const [initiatorToResponder, responderToInitiator] = split(state)
  return {
    message,
    keys: {
      sendKey: responderToInitiator,
      receiveKey: initiatorToResponder,
      localIndex: localIndex >>> 0,
      remoteIndex: handshake.remoteIndex,
      isInitiator: false,
    },
  }
}

/** Initiator consumes a response addressed to its handshake (receiver index = our index); null on failure. */
export function consumeResponse (handshake: InitiatorHandshake, local: StaticIdentity, message: Uint8Array): SessionKeys | null {
  if (message.length !== MESSAGE_RESPONSE_SIZE || message[MESSAGE_TYPE_OFFSET] !== MESSAGE_RESPONSE) return null
  if (readU32LE(message, MESSAGE_RESPONSE_RECEIVER_OFFSET) !== handshake.localIndex) return null
  const state: SymmetricState = { ...handshake.state }
  const noise = message.subarray(RESPONSE_NOISE_OFFSET, RESPONSE_NOISE_OFFSET + RESPONSE_NOISE_LEN)
  if (readMessageB(state, handshake.ephemeral, local, handshake.psk, noise) === null) return null
  const [initiatorToResponder, responderToInitiator] = split(state)
  return {
    sendKey: initiatorToResponder,
    receiveKey: responderToInitiator,
    localIndex: handshake.localIndex,
    remoteIndex: readU32LE(message, MESSAGE_RESPONSE_SENDER_OFFSET),
    isInitiator: true,
  }
}

function readU32LE (buf: Uint8Array, offset: number): number {
  return (buf[offset] | (buf[offset + 1] << 8) | (buf[offset + 2] << 16) | (buf[offset + 3] << 24)) >>> 0
}
