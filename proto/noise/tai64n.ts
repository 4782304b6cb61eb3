/**
 * TAI64N timestamps (paper 5.4.2: the initiation carries one so a responder can reject replays of
 * older initiations). Like wireguard-go (tai64n/tai64n.go) the label is 2^62 + 10 + unix seconds and
 * the nanoseconds are whitened to a ~16 ms granularity so the timestamp leaks less about the clock.
 */
export const TAI64N_LEN = 12

const TAI64_BASE = 0x400000000000000an
const WHITENER_MASK = 0xffffff

/** Encodes wall-clock milliseconds since the Unix epoch. */
export function tai64n (wallClockMs: number, out: Buffer = Buffer.alloc(TAI64N_LEN)): Buffer {
  const seconds = Math.floor(wallClockMs / 1000)
  const nanos = Math.min(999_999_999, Math.floor((wallClockMs - seconds * 1000) * 1e6))
  out.writeBigUInt64BE(TAI64_BASE + BigInt(seconds), 0)
  out.writeUInt32BE((nanos & ~WHITENER_MASK) >>> 0, 8)
  return out
}

/** Orders two timestamps as big-endian numbers: <0 when a is earlier, 0 when equal, >0 when later. */
export function compareTai64n (a: Uint8Array, b: Uint8Array): number {
  for (let i = 0; i < TAI64N_LEN; i++) {
    if (a[i] !== b[i]) return a[i] - b[i]
  }
  return 0
}
