/**
 * Implementation limits of our WireGuard device. The protocol constants of the WireGuard paper
 * (REKEY_AFTER_TIME, REJECT_AFTER_TIME, ...) live in proto/noise/constants.ts.
 */

/** Outgoing packets held per peer while a handshake is in flight (boringtun MAX_QUEUE_DEPTH). */
export const MAX_STAGED_PACKETS = 256

/**
 * Handshake attempts per series: the first initiation plus retransmits every REKEY_TIMEOUT cover
 * REKEY_ATTEMPT_TIME (paper 6.4: 90 s / 5 s = 18).
 */
export const MAX_HANDSHAKE_ATTEMPTS = 18

/**
 * "Under load" (paper 5.3): more than this many handshake messages received within one second.
 * wireguard-go uses a handshake queue depth of 128 as its trigger; ours is synchronous, so we count
 * arrivals per second instead.
 */
export const UNDER_LOAD_HANDSHAKES_PER_SECOND = 128

/** Once under load, stay there this long after the last trigger (wireguard-go UnderLoadAfterTime). */
export const UNDER_LOAD_AFTER_TIME = 1_000

/** Per source IP handshake rate limit under load (wireguard-go ratelimiter.go). */
export const RATELIMIT_PACKETS_PER_SECOND = 20
export const RATELIMIT_BURST = 5
/** Limiter entries idle this long are forgotten. */
export const RATELIMIT_GC_INTERVAL = 1_000
