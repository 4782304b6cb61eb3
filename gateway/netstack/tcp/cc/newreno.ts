/** NewReno window rules (RFC 5681 with appropriate byte counting, RFC 3465). */
import type { CongestionControl } from './types.ts'

export class NewReno implements CongestionControl {
  readonly name = 'newreno'
  cwnd: number
  ssthresh = Number.MAX_SAFE_INTEGER
  private readonly smss: number
  /** Bytes acknowledged in congestion avoidance since the last increase. */
  private bytesAcked = 0

  constructor (smss: number, initialWindow: number) {
    this.smss = smss
    this.cwnd = initialWindow
  }

  onAck (acked: number, _now: number, _srtt: number, cwndLimited: boolean): void {
    if (!cwndLimited) return
    if (this.cwnd < this.ssthresh) {
      // RFC 3465 2.2: slow start counts bytes, at most L = 2 * SMSS per ACK.
      this.cwnd += Math.min(acked, 2 * this.smss)
      return
    }
    // RFC 5681 3.1: one SMSS per window of acknowledged data.
    this.bytesAcked += acked
    if (this.bytesAcked >= this.cwnd) {
      this.bytesAcked -= this.cwnd
      this.cwnd += this.smss
    }
  }

  onLoss (_now: number, flightSize: number): void {
    // RFC 5681 3.2 eq. 4 (and RFC 6675 5 step 4.2): ssthresh = max(FlightSize / 2, 2 * SMSS).
    this.ssthresh = Math.max(Math.floor(flightSize / 2), 2 * this.smss)
    this.cwnd = this.ssthresh
    this.bytesAcked = 0
  }

  onRecoveryEnd (): void {
    // RFC 6582 3.2 step 3: deflate to ssthresh.
    this.cwnd = this.ssthresh
  }

  onRetransmitTimeout (_now: number, flightSize: number): void {
    this.ssthresh = Math.max(Math.floor(flightSize / 2), 2 * this.smss)
    this.cwnd = this.smss
    this.bytesAcked = 0
  }
}
