/**
 * Congestion control behind one small interface. The connection owns loss detection and recovery
 * (RFC 6675 / RFC 6582); an algorithm only decides how cwnd and ssthresh move. Sizes in bytes,
 * times in ms.
 */
export interface CongestionControl {
  readonly name: string
  /** Congestion window (bytes). */
  cwnd: number
  /** Slow-start threshold (bytes). */
  ssthresh: number
  /**
   * Data newly acknowledged outside loss recovery. `cwndLimited` is false when the sender did not
   * fill the window (RFC 7661: do not grow a window that is not being used).
   */
  onAck (acked: number, now: number, srtt: number, cwndLimited: boolean): void
  /** Loss detected by duplicate ACKs or SACK: fast recovery begins (RFC 5681 3.2 step 2). */
  onLoss (now: number, flightSize: number): void
  /** The cumulative ACK passed the recovery point. */
  onRecoveryEnd (now: number): void
  /** The retransmission timer expired (RFC 5681 3.1 eq. 4: cwnd = 1 segment). */
  onRetransmitTimeout (now: number, flightSize: number): void
}

export type CongestionControlName = 'newreno' | 'cubic'
