/**
 * CUBIC (RFC 9438): window growth as a cubic function of the time since the last congestion event,
 * with the Reno-friendly estimate as a floor and fast convergence. Computed in segments, applied
 * to a byte cwnd; every intermediate stays a finite double (gVisor #11632 overflowed an integer).
 */
import type { CongestionControl } from './types.ts'
import { CUBIC_C, CUBIC_BETA } from '../constants.ts'

/** RFC 9438 4.3: alpha_cubic = 3 (1 - beta) / (1 + beta). */
const ALPHA_CUBIC = 3 * (1 - CUBIC_BETA) / (1 + CUBIC_BETA)

export class Cubic implements CongestionControl {
  readonly name = 'cubic'
  cwnd: number
  ssthresh = Number.MAX_SAFE_INTEGER
  private readonly smss: number
  /** W_max and the previous W_max, in segments (RFC 9438 4.6, 4.7). */
  private wMax = 0
  private wLastMax = 0
  /** K in seconds (RFC 9438 4.2 eq. 2). */
  private k = 0
  /** Start of the current congestion-avoidance epoch (ms), -1 until the first ACK after an event. */
  private epochStart = -1
  /** Reno-friendly estimate W_est in segments (RFC 9438 4.3). */
  private wEst = 0

  constructor (smss: number, initialWindow: number) {
    this.smss = smss
    this.cwnd = initialWindow
  }

  onAck (acked: number, now: number, srtt: number, cwndLimited: boolean): void {
    if (!cwndLimited) return
    if (this.cwnd < this.ssthresh) {
      this.cwnd += Math.min(acked, 2 * this.smss)
      return
    }
    const cwndSeg = this.cwnd / this.smss
    if (this.epochStart < 0) {
      this.epochStart = now
      if (this.wMax <= cwndSeg) {
        // No previous event above us (e.g. after slow start): the plateau is here.
        this.wMax = cwndSeg
        this.k = 0
      } else {
        this.k = Math.cbrt((this.wMax - cwndSeg) / CUBIC_C)
      }
      this.wEst = cwndSeg
    }
    // RFC 9438 4.2: target = W_cubic(t + RTT), bounded to [cwnd, 1.5 cwnd] (4.4).
    const rttSeconds = Math.max(srtt, 1) / 1000
    const t = Math.min((now - this.epochStart) / 1000 + rttSeconds, 3600)
    const d = t - this.k
    let target = CUBIC_C * d * d * d + this.wMax
    if (target < cwndSeg) target = cwndSeg
    if (target > 1.5 * cwndSeg) target = 1.5 * cwndSeg
    // RFC 9438 4.3: W_est grows by alpha_cubic segments per window, by 1 once it has passed the
    // window before the last reduction; where it is above the cubic curve it sets cwnd.
    const alpha = this.wEst >= this.wLastMax ? 1 : ALPHA_CUBIC
    this.wEst += alpha * (acked / this.smss) / cwndSeg
    if (this.wEst > target) {
      this.cwnd = Math.max(this.cwnd, this.wEst * this.smss)
    } else {
      // RFC 9438 4.4: cwnd grows by (target - cwnd) / cwnd per SMSS acknowledged.
      this.cwnd += ((target - cwndSeg) / cwndSeg) * acked
    }
    if (!Number.isFinite(this.cwnd)) this.cwnd = this.ssthresh
  }

  onLoss (_now: number, flightSize: number): void {
    this.congestionEvent(flightSize)
    this.cwnd = this.ssthresh
  }

  onRecoveryEnd (): void {
    this.cwnd = this.ssthresh
  }

  onRetransmitTimeout (_now: number, flightSize: number): void {
    // RFC 9438 4.8: as a congestion event, then cwnd = 1 segment.
    this.congestionEvent(flightSize)
    this.cwnd = this.smss
  }

  private congestionEvent (flightSize: number): void {
    const cwndSeg = this.cwnd / this.smss
    // RFC 9438 4.7: fast convergence releases bandwidth when W_max keeps shrinking.
    if (cwndSeg < this.wLastMax) {
      this.wLastMax = cwndSeg
      this.wMax = cwndSeg * (1 + CUBIC_BETA) / 2
    } else {
      this.wLastMax = cwndSeg
      this.wMax = cwndSeg
    }
    // RFC 9438 4.6: ssthresh = max(flight_size * beta_cubic, 2 segments) (flight_size bounded by cwnd).
    const base = Math.min(flightSize, this.cwnd)
    this.ssthresh = Math.max(Math.floor(base * CUBIC_BETA), 2 * this.smss)
    this.epochStart = -1
  }
}
