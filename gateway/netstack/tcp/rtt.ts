/** Retransmission timer per RFC 6298, with per-ACK samples weighted as RFC 7323 appendix G suggests. */
import { RTO_K, CLOCK_GRANULARITY, RTT_ALPHA, RTT_BETA, INITIAL_RTO } from './constants.ts'
import { seqGe, seqLt } from './seq.ts'

export class RttEstimator {
  srtt = 0
  rttvar = 0
  hasSample = false
  /** Current RTO including backoff. */
  rto: number
  private readonly minRto: number
  private readonly maxRto: number
  /** RFC 6298 3: without timestamps, one segment at a time is timed (until `timedSeq` is acknowledged). */
  private timing = false
  private timedSeq = 0
  private timedAt = 0

  constructor (minRto: number, maxRto: number, initialRto = INITIAL_RTO) {
    this.minRto = minRto
    this.maxRto = maxRto
    this.rto = Math.min(Math.max(initialRto, minRto), maxRto)
  }

  /**
   * A new RTT measurement (ms). `expectedSamples` is the number of samples expected per window
   * (RFC 7323 appendix G: alpha and beta divided by it when every ACK yields a sample).
   * A valid sample also ends any backoff (RFC 6298 5.7).
   */
  sample (rtt: number, expectedSamples = 1): void {
    if (!(rtt >= 0)) return
    if (!this.hasSample) {
      // RFC 6298 2.2
      this.srtt = rtt
      this.rttvar = rtt / 2
      this.hasSample = true
    } else {
      // RFC 6298 2.3: RTTVAR first, with the old SRTT.
      const n = Math.max(1, expectedSamples)
      const beta = RTT_BETA / n
      const alpha = RTT_ALPHA / n
      this.rttvar = (1 - beta) * this.rttvar + beta * Math.abs(this.srtt - rtt)
      this.srtt = (1 - alpha) * this.srtt + alpha * rtt
    }
    this.rto = this.clamp(this.srtt + Math.max(CLOCK_GRANULARITY, RTO_K * this.rttvar))
  }

  /** Times the segment ending at `seq`, sent at `now`, unless one is timed already. */
  timeSegment (seq: number, now: number): void {
    if (this.timing) return
    this.timing = true
    this.timedSeq = seq
    this.timedAt = now
  }

  /** Karn: nothing timed may be sampled (a retransmission or a timeout). */
  stopTiming (): void {
    this.timing = false
  }

  /** Karn: a retransmission of [seq, ...) stops timing a segment that ends after seq. */
  retransmitted (seq: number): void {
    if (this.timing && seqLt(seq, this.timedSeq)) this.timing = false
  }

  /** An ACK up to `ack` arrived at `now`: a sample if it covers the timed segment. */
  acknowledged (ack: number, now: number): void {
    if (this.timing && seqGe(ack, this.timedSeq)) {
      this.sample(now - this.timedAt)
      this.timing = false
    }
  }

  /** The handshake's ACK arrived: the SYN's RTT is a sample unless the SYN was retransmitted (Karn). */
  synAcknowledged (now: number, retransmitted: boolean): void {
    if (!retransmitted && this.timing) this.sample(now - this.timedAt)
    this.timing = false
  }

  get timingSegment (): boolean {
    return this.timing
  }

  /** RFC 6298 5.5: double the RTO on a timeout (bounded by the maximum). */
  backoff (): void {
    this.rto = this.clamp(this.rto * 2)
  }

  private clamp (rto: number): number {
    // RFC 6298 2.4 (a floor) and 2.5 (a ceiling).
    return Math.min(Math.max(rto, this.minRto), this.maxRto)
  }
}
