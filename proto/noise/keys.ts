/**
 * Curve25519 keys in the format of `wg genkey` / `wg pubkey` (standard base64 of 32 bytes), and the
 * X25519 function behind a small interface so the native backends can be measured against each other.
 */
import {
  createPrivateKey, createPublicKey, diffieHellman, randomBytes, type KeyObject,
} from 'node:crypto'
import { sodium } from './sodium.ts'
import { KEY_LEN } from './constants.ts'

export { KEY_LEN }

/** A key that cannot be used: `key_format` (not 32 bytes / not canonical base64) or `key_low_order` (DH gives zero). */
export class KeyError extends Error {
  readonly code: 'key_format' | 'key_low_order'
  constructor (message: string, code: 'key_format' | 'key_low_order' = 'key_format') {
    super(message)
    this.name = 'KeyError'
    this.code = code
  }
}

export interface KeyPair { privateKey: Buffer; publicKey: Buffer }

export interface X25519Backend {
  readonly name: string
  /** A fresh ephemeral key pair (paper 5.4.2 DH-GENERATE). */
  generateKeyPair (): KeyPair
  publicKey (privateKey: Uint8Array): Buffer
  /** DH(privateKey, publicKey); null when the result is all zeros (a low-order point), as wireguard-go rejects it. */
  sharedSecret (privateKey: Uint8Array, publicKey: Uint8Array): Buffer | null
}

/** True when all bytes are zero; constant time in the content. */
export function isZero (bytes: Uint8Array): boolean {
  let acc = 0
  for (let i = 0; i < bytes.length; i++) acc |= bytes[i]
  return acc === 0
}

/** Clamps a Curve25519 scalar in place (RFC 7748 section 5), as `wg genkey` does. */
export function clamp (key: Buffer): Buffer {
  key[0] &= 248
  key[31] = (key[31] & 127) | 64
  return key
}

export const sodiumX25519: X25519Backend = {
  name: 'sodium-native',
  generateKeyPair () {
    const privateKey = clamp(randomBytes(KEY_LEN))
    return { privateKey, publicKey: this.publicKey(privateKey) }
  },
  publicKey (privateKey) {
    const out = Buffer.allocUnsafe(KEY_LEN)
    sodium.crypto_scalarmult_base(out, privateKey)
    return out
  },
  sharedSecret (privateKey, publicKey) {
    const out = Buffer.allocUnsafe(KEY_LEN)
    try {
      // libsodium itself fails on an all-zero result; the explicit check keeps that guarantee local.
      sodium.crypto_scalarmult(out, privateKey, publicKey)
    } catch {
      return null
    }
    return isZero(out) ? null : out
  },
}

// DER wrapper for a raw X25519 private key (RFC 8410): node:crypto only imports keys as KeyObjects.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex')
// Importing a private key is slow in OpenSSL 3 (~0.7 ms): keep the KeyObject of each private key
// buffer, with a copy of the bytes it was made from in case the buffer is later overwritten.
const privateKeyObjects = new WeakMap<Uint8Array, { bytes: Buffer; key: KeyObject }>()

function privateKeyObject (privateKey: Uint8Array): KeyObject {
  const cached = privateKeyObjects.get(privateKey)
  if (cached !== undefined && cached.bytes.equals(privateKey)) return cached.key
  const key = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, privateKey]), format: 'der', type: 'pkcs8' })
  privateKeyObjects.set(privateKey, { bytes: Buffer.from(privateKey), key })
  return key
}

export const nodeX25519: X25519Backend = {
  name: 'node:crypto',
  generateKeyPair () {
    // Not generateKeyPairSync: on Node 20.20 its job's destructor, run by a garbage collection,
    // can wait forever on a mutex (bench/crypto.ts hung in 3 of 6 runs, main thread in
    // KeyGenJob::~KeyGenJob under Heap::CollectGarbage). Random bytes, clamped, are the same key.
    const privateKey = generatePrivateKey()
    return { privateKey, publicKey: this.publicKey(privateKey) }
  },
  publicKey (privateKey) {
    const jwk = createPublicKey(privateKeyObject(privateKey)).export({ format: 'jwk' })
    return Buffer.from(jwk.x!, 'base64url')
  },
  sharedSecret (privateKey, publicKey) {
    let out: Buffer
    try {
      // JWK import of a public key is ~10x faster than DER here.
      const peer = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: Buffer.from(publicKey).toString('base64url') }, format: 'jwk' })
      out = diffieHellman({ privateKey: privateKeyObject(privateKey), publicKey: peer })
    } catch {
      return null // OpenSSL refuses an all-zero result
    }
    return isZero(out) ? null : out
  },
}

let backend: X25519Backend = sodiumX25519

/** The backend used by handshakes: sodium-native, the faster by bench/crypto.ts. */
export function x25519Backend (): X25519Backend { return backend }
/** Switches the X25519 backend (benchmarks and cross-checks); returns the previous one. */
export function setX25519Backend (next: X25519Backend): X25519Backend {
  const previous = backend
  backend = next
  return previous
}

/** A random private key, clamped like `wg genkey`. */
export function generatePrivateKey (): Buffer {
  return clamp(randomBytes(KEY_LEN))
}

export function publicKeyFromPrivate (privateKey: Buffer): Buffer {
  if (privateKey.length !== KEY_LEN) throw new KeyError('a private key is 32 bytes')
  return backend.publicKey(privateKey)
}

export function encodeKey (key: Buffer): string {
  if (key.length !== KEY_LEN) throw new KeyError('a key is 32 bytes')
  return key.toString('base64')
}

const KEY_TEXT = /^[A-Za-z0-9+/]{43}=$/

/** Parses a key as `wg` prints it: exactly 44 characters of canonical standard base64. */
export function decodeKey (text: string): Buffer {
  if (typeof text !== 'string' || !KEY_TEXT.test(text)) throw new KeyError('a key is 44 characters of base64')
  const key = Buffer.from(text, 'base64')
  // Non-canonical text (stray low bits in the last character) does not round-trip.
  if (key.length !== KEY_LEN || key.toString('base64') !== text) throw new KeyError('key is not canonical base64')
  return key
}
