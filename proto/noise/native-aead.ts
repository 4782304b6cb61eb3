/**
 * The OpenSSL AEAD backend: ChaCha20-Poly1305 through the OpenSSL inside Node, via the small
 * N-API module in ./native (built by `npm ci`; see bin/build-native.mjs). One cipher context per
 * direction takes each packet's nonce (and a key only when it changes), where node:crypto creates a
 * cipher object per packet. bench/crypto.ts compares it with sodium-native; when the module is not
 * built (no C compiler) or fails its self-test, `nativeAead` is null and the data path uses
 * sodium-native.
 */
import { createRequire } from 'node:module'
import { AEAD_TAG_LEN } from './constants.ts'
import { aeadDecrypt, aeadEncrypt } from './sodium.ts'
import type { AeadBackend } from './transport.ts'

interface NativeTransport {
  seal (key: Uint8Array, counter: bigint, buf: Uint8Array, offset: number, length: number): number
  open (key: Uint8Array, counter: bigint, buf: Uint8Array, offset: number, length: number): number
  sealMessage (key: Uint8Array, counter: bigint, buf: Uint8Array, offset: number, packetLength: number, receiver: number): number
}

/**
 * The OPENSSL_ia32cap setting the gateway ships with (Dockerfile, `npm start`): OpenSSL without its
 * AVX-512 code paths (CPUID leaf 7 EBX bit 16, AVX512F), so ChaCha20-Poly1305 takes the AVX2 path.
 * On this project's lab machine (Xeon with AVX-512) that path seals and opens more packets per core
 * (bench/crypto.ts) and, more so, does not slow the rest of the process down: with AVX-512 the
 * netstack spent more CPU per MB than with libsodium, with AVX2 less (bench/RESULTS.md). OpenSSL
 * reads it once, when node starts, so it must be in the environment of the process.
 */
export const OPENSSL_CAPS_MASK = ':~0x10000'

/** Why the native module is not in use (null when it is). */
export let nativeAeadUnavailable: string | null = null

function load (): NativeTransport | null {
  let mod: NativeTransport
  try {
    mod = createRequire(import.meta.url)('./native/build/transport.node') as NativeTransport
  } catch (err) {
    nativeAeadUnavailable = `not built (${(err as Error).message.split('\n')[0]})`
    return null
  }
  // Self-test against libsodium: same ciphertext, round trip, a forgery refused.
  const key = new Uint8Array(32).fill(3)
  const nonce = new Uint8Array(12)
  nonce[4] = 5
  const message = Uint8Array.from({ length: 100 }, (_, i) => i)
  const expected = new Uint8Array(116)
  aeadEncrypt(expected, message, null, nonce, key)
  const buf = new Uint8Array(116)
  buf.set(message)
  const ok = mod.seal(key, 5n, buf, 0, 100) === 116 && Buffer.compare(buf, expected) === 0 &&
    mod.open(key, 5n, buf, 0, 116) === 100 && Buffer.compare(buf.subarray(0, 100), message) === 0
  expected[0]! ^= 1
  const plain = new Uint8Array(100)
  if (!ok || mod.open(key, 5n, expected, 0, 116) !== -1 || aeadDecrypt(plain, expected, null, nonce, key) !== -1) {
    nativeAeadUnavailable = 'failed its self-test against libsodium'
    return null
  }
  return mod
}

const native = load()

/** ChaCha20-Poly1305 through Node's OpenSSL, or null (see nativeAeadUnavailable). */
export const nativeAead: AeadBackend | null = native === null
  ? null
  : {
      name: 'openssl (native)',
      seal (key, counter, plaintext, out, outOffset) {
        if (plaintext.buffer !== out.buffer || plaintext.byteOffset !== out.byteOffset + outOffset) out.set(plaintext, outOffset)
        const n = native.seal(key, counter, out, outOffset, plaintext.length)
        if (n < 0) throw new RangeError('ChaCha20-Poly1305: bad buffer sizes')
        return n
      },
      sealMessage (key, receiverIndex, counter, out, offset, packetLength) {
        const n = native.sealMessage(key, counter, out, offset, packetLength, receiverIndex)
        if (n < 0) throw new RangeError('transport message does not fit')
        return n
      },
      openAt (key, counter, buf, offset, length) {
        return native.open(key, counter, buf, offset, length)
      },
      open (key, counter, ciphertext, out, outOffset) {
        const len = ciphertext.length - AEAD_TAG_LEN
        if (len < 0 || outOffset + len > out.length) return -1
        if (ciphertext.buffer === out.buffer && ciphertext.byteOffset === out.byteOffset + outOffset) {
          return native.open(key, counter, out, outOffset, ciphertext.length)
        }
        // Not in place: out has no room for the tag, so open a copy.
        const copy = Buffer.from(ciphertext)
        const n = native.open(key, counter, copy, 0, copy.length)
        if (n >= 0) out.set(copy.subarray(0, n), outOffset)
        return n
      },
    }
