/**
 * Loss recovery state of the sender: the SACK scoreboard, fast recovery (RFC 6675 with SACK,
 * RFC 6582 NewReno without: RecoveryPoint, HighRxt, the duplicate ACK count), the tail loss probe
 * outstanding (RFC 8985 7), the retransmissions of this recovery (lost-retransmission detection),
 * consecutive retransmission timeouts and whether the congestion window limited the last send.
 */
import { SackScoreboard } from './sack.ts'
import { seqDiff, seqGe, seqLt, seqMax } from './seq.ts'
import { MAX_RETRANSMIT_MARKS } from './constants.ts'

export class LossRecovery {
  readonly scoreboard = new SackScoreboard()
  /**
   * The retransmissions of this recovery as flat [seq, SND.MAX then] pairs, oldest first (at most
   * MAX_RETRANSMIT_MARKS): when a partial ACK moves SND.UNA to a hole retransmitted earlier, its
   * mark becomes rxtMark, so a lost retransmission of any hole is found, not only of the first.
   */
  private readonly rxtLog: number[] = []
  private _active = false
  private _recoveryPoint = 0
  private _highRxt = 0
  private _dupAcks = 0
  private _retransmits = 0
  private _synRetransmits = 0
  private _tlpEnd = -1
  private _rxtMark = -1
  private _lostBelow = -1
  private _cwndLimited = false

  /** In fast recovery. */
  get active (): boolean { return this._active }
  /** SND.MAX when recovery (or the last timeout) began: RFC 6675's RecoveryPoint. */
  get recoveryPoint (): number { return this._recoveryPoint }
  /** RFC 6675 HighRxt: the highest sequence retransmitted in this recovery. */
  get highRxt (): number { return this._highRxt }
  get dupAcks (): number { return this._dupAcks }
  /** Consecutive retransmission timeouts without an ACK of new data. */
  get retransmits (): number { return this._retransmits }
  get synRetransmits (): number { return this._synRetransmits }
  /** SND.MAX after the outstanding probe, or -1: one probe until an ACK of new data. */
  get tlpEnd (): number { return this._tlpEnd }
  /** SND.MAX when the hole at SND.UNA was last retransmitted in recovery, or -1 (lost-retransmission detection). */
  get rxtMark (): number { return this._rxtMark }
  /**
   * Holes below this sequence are lost whatever RFC 6675's IsLost says, or -1: a tail loss probe
   * sent after them was SACKed (RFC 8985's rule, applied to the probe). Cleared with recovery.
   */
  get lostBelow (): number { return this._lostBelow }
  /** The congestion window, not the application or the peer, limited the last transmission. */
  get cwndLimited (): boolean { return this._cwndLimited }

  init (isn: number): void {
    this._recoveryPoint = isn
    this._highRxt = isn
  }

  /** Enters fast recovery for the flight [una, max) (RFC 6675 5 step 4, RFC 6582 3.2 step 2). */
  enter (una: number, max: number): void {
    this._tlpEnd = -1
    this._active = true
    this._lostBelow = -1
    this._recoveryPoint = max
    this._highRxt = una
  }

  /** RFC 6675 5 / RFC 6582 3.2 step 3: a full acknowledgment ends recovery. */
  end (): void {
    this._active = false
    this._dupAcks = 0
    this._lostBelow = -1
  }

  /** Counts a duplicate ACK (RFC 5681 2); returns the count. */
  duplicateAck (): number {
    return ++this._dupAcks
  }

  resetDupAcks (): void {
    this._dupAcks = 0
  }

  /**
   * An ACK of new data moved SND.UNA to `ack`: the scoreboard and HighRxt follow, the timeout count
   * and an answered probe end, and the mark of a retransmission of the segment now at SND.UNA
   * (if any) becomes rxtMark.
   */
  acknowledged (ack: number): void {
    if (seqLt(this._highRxt, ack)) this._highRxt = ack
    this.scoreboard.advance(ack)
    this._retransmits = 0
    if (this._tlpEnd !== -1 && seqGe(ack, this._tlpEnd)) this._tlpEnd = -1
    const log = this.rxtLog
    let mark = -1
    let kept = 0
    for (let i = 0; i < log.length; i += 2) {
      if (seqLt(log[i], ack)) continue
      if (log[i] === ack) mark = log[i + 1]
      log[kept++] = log[i]
      log[kept++] = log[i + 1]
    }
    log.length = kept
    this._rxtMark = mark
  }

  /** Bytes in the network in recovery: RFC 6675 SetPipe with SACK, RFC 6582's estimate without. */
  pipe (sack: boolean, una: number, max: number, smss: number): number {
    return sack
      ? this.scoreboard.pipe(una, max, this._highRxt, smss, this._lostBelow)
      : Math.max(0, seqDiff(max, una) - this._dupAcks * smss) + Math.max(0, seqDiff(this._highRxt, una))
  }

  /** RFC 6675 NextSeg(): the next hole to retransmit (its end in holeEnd[0]), or -1. */
  nextHole (una: number, smss: number, lostOnly: boolean, holeEnd: number[]): number {
    return this.scoreboard.nextHole(una, this._highRxt, smss, lostOnly, holeEnd, this._lostBelow)
  }

  /** The hole at SND.UNA is retransmitted with SND.MAX at `max`. */
  markFirstHole (max: number): void {
    this._rxtMark = max
  }

  /** [seq, end) was retransmitted while SND.MAX was `max`. */
  retransmitted (seq: number, end: number, max: number): void {
    this._highRxt = seqMax(this._highRxt, end)
    const log = this.rxtLog
    if (log.length >= 2 * MAX_RETRANSMIT_MARKS) log.splice(0, 2)
    log.push(seq, max)
  }

  /** The retransmission of the hole at SND.UNA (`una`) was lost: it goes again. */
  lostRetransmit (una: number): void {
    this._rxtMark = -1
    this._highRxt = una
  }

  /** A tail loss probe went out; SND.MAX was `max`. */
  probeSent (max: number): void {
    this._tlpEnd = max
  }

  /** Every hole below `seq` counts as lost. */
  markLostBelow (seq: number): void {
    this._lostBelow = seq
  }

  setCwndLimited (limited: boolean): void {
    this._cwndLimited = limited
  }

  /** Counts a retransmission timeout of data; returns the count. */
  countTimeout (): number {
    return ++this._retransmits
  }

  /**
   * After a retransmission timeout (RFC 6582 4 / RFC 6675 5.1: no fast retransmit for data sent
   * before it; RFC 2018 8: the receiver may have discarded SACKed data, so the scoreboard goes).
   */
  restartAfterTimeout (una: number, max: number): void {
    this._active = false
    this._dupAcks = 0
    this._tlpEnd = -1
    this._rxtMark = -1
    this.rxtLog.length = 0
    this._lostBelow = -1
    this._recoveryPoint = max
    this._highRxt = una
    this.scoreboard.clear()
  }

  /** Counts a SYN (or SYN-ACK) retransmission; returns the count. */
  countSynTimeout (): number {
    return ++this._synRetransmits
  }

  synDone (): void {
    this._synRetransmits = 0
  }

  release (): void {
    this.scoreboard.clear()
  }
}
