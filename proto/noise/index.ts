/**
 * WireGuard's cryptography: Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s as in the WireGuard paper
 * section 5.4, plus keys, MACs, cookies, the transport AEAD and the replay window. Pure code: no
 * sockets, timers or clocks; every time is a parameter.
 *
 * Refinements of the contract in noise-contract.md:
 * - ConsumedInitiation also carries `remoteIndex` (the initiation's sender index).
 * - openTransport decrypts in place: the returned view shares memory with `ciphertext`.
 * - createInitiation throws KeyError (code 'key_low_order') when the remote static key gives an
 *   all-zero DH; consumeInitiation / consumeResponse return null in that case.
 * - KeyError.code is 'key_format' or 'key_low_order'.
 * - sealTransportInto(aead, key, receiverIndex, counter, packet, out, offset) writes the message into a
 *   caller's buffer; with the packet already at out[offset + 16..] it encrypts in place (no copy, no
 *   allocation): the fastest data path (bench/RESULTS.md).
 * - Extra exports: X25519 backends (sodiumX25519, nodeX25519, setX25519Backend), mac(), mac1Of(),
 *   paddedLength(), transportMessageLength(), REPLAY_WINDOW_SIZE, PADDING_MULTIPLE and the primitive
 *   sizes in constants.ts.
 */
export * from './constants.ts'
export {
  KeyError, type KeyPair, type X25519Backend, generatePrivateKey, publicKeyFromPrivate, encodeKey, decodeKey,
  sodiumX25519, nodeX25519, x25519Backend, setX25519Backend,
} from './keys.ts'
export { hash, hmac, kdf1, kdf2, kdf3, INITIAL_CHAINING_KEY, INITIAL_HASH } from './kdf.ts'
export { TAI64N_LEN, tai64n, compareTai64n } from './tai64n.ts'
export { mac, mac1Key, cookieKey, writeMac1, verifyMac1, writeMac2, verifyMac2, mac1Of } from './mac.ts'
export { CookieChecker, CookieGenerator } from './cookie.ts'
export {
  type StaticIdentity, type SessionKeys, type InitiatorHandshake, type ResponderHandshake, type ConsumedInitiation,
  createInitiation, consumeInitiation, createResponse, consumeResponse,
} from './handshake.ts'
export {
  type AeadBackend, nodeAead, sodiumAead, defaultAead, sealTransport, sealTransportInto, openTransport, openTransportMessage, paddedLength,
  transportMessageLength,
} from './transport.ts'
export { nativeAead, nativeAeadUnavailable, OPENSSL_CAPS_MASK } from './native-aead.ts'
export { ReplayWindow, REPLAY_WINDOW_SIZE } from './replay.ts'
