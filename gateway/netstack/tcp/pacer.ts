/**
 * Pacing arithmetic (output.ts applies it to each data segment). The rate is Linux's
 * sk_pacing_rate: 2 x cwnd / SRTT in slow start (below half of ssthresh), 1.2 x after
 * (tcp_pacing_ss_ratio / tcp_pacing_ca_ratio). A burst may leave at once when the sender was
 * behind its pacing clock, up to a cap: the rest follows at the rate, on later turns of the loop.
 */
import { PACE_BURST_MS, PACE_BURST_SEGMENTS, PACE_MIN_SRTT } from './constants.ts'

/** Bytes per ms. */
export function pacingRate (cwnd: number, ssthresh: number, srtt: number): number {
  return (cwnd < ssthresh / 2 ? 2 : 1.2) * cwnd / Math.max(srtt, PACE_MIN_SRTT)
}

/**
 * How far (ms) the pacing clock may lag behind now, i.e. the burst that may leave at once: at
 * least PACE_BURST_MS of the rate or PACE_BURST_SEGMENTS segments (the stack's one timer fires
 * a millisecond late or so), at most `maxBurstSegments` full segments back to back (0: no cap).
 */
export function burstAllowance (rate: number, smss: number, maxBurstSegments: number): number {
  const allowance = Math.max(PACE_BURST_MS, PACE_BURST_SEGMENTS * smss / rate)
  // The first segment leaves at the lagging clock, each next one while the clock is still <= now:
  // a lag of N - 1 segments sends N (half a segment more absorbs the rounding of the sums).
  return maxBurstSegments > 0 ? Math.min(allowance, (maxBurstSegments - 0.5) * smss / rate) : allowance
}

/** When the segment after one of `len` bytes is due, given the previous due time `next` (pacing clock). */
export function nextDue (next: number, now: number, len: number, rate: number, allowance: number): number {
  const from = next < now - allowance ? now - allowance : next
  return from + len / rate
}
