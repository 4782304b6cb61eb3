/**
 * WireGuard constants. The first blocks are protocol values from the WireGuard paper (section 6 and
 * the message formats of section 5.4) as wireguard-go spells them in device/constants.go and
 * device/noise-protocol.go; the last block is this implementation's own limits.
 */

// Protocol identifiers (paper 5.4, 5.4.7).
export const CONSTRUCTION = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s'
export const IDENTIFIER = 'WireGuard v1 zx2c4 Jason@zx2c4.com'
export const LABEL_MAC1 = 'mac1----'
export const LABEL_COOKIE = 'cookie--'

// Counters (paper 6.1). Counters are 64-bit; bigint at the API.
export const REKEY_AFTER_MESSAGES = 2n ** 60n
export const REJECT_AFTER_MESSAGES = 2n ** 64n - 2n ** 13n - 1n

// Timers in milliseconds (paper 6.1, 6.5).
export const REKEY_AFTER_TIME = 120_000
export const REJECT_AFTER_TIME = 180_000
export const REKEY_ATTEMPT_TIME = 90_000
export const REKEY_TIMEOUT = 5_000
export const KEEPALIVE_TIMEOUT = 10_000
export const COOKIE_REFRESH_TIME = 120_000
export const REKEY_TIMEOUT_JITTER_MAX = 334
/** Minimum gap in ms between two accepted initiations of one peer (wireguard-go HandshakeInitationRate = 1 s / 50). */
export const HANDSHAKE_INITIATION_RATE = 20
/** Transport plaintext is padded to a multiple of this (paper 5.4.6). */
export const PADDING_MULTIPLE = 16

// Primitive sizes (paper 5.4).
export const KEY_LEN = 32
export const HASH_LEN = 32
export const AEAD_TAG_LEN = 16
export const MAC_LEN = 16
export const COOKIE_LEN = 16
export const COOKIE_NONCE_LEN = 24

// Our own limits.
/** Responder handshakes never hold more cached static-static DH results than this per local identity. */
export const STATIC_DH_CACHE_MAX = 4096
