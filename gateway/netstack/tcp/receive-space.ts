/**
 * The receive sequence space (RFC 9293 3.3.1: IRS, RCV.NXT, RCV.WND) with the out-of-order queue
 * beyond RCV.NXT, the right edge of the window last advertised (which never moves left, RFC 9293
 * 3.8.6.2.2), a FIN that arrived ahead of missing data, and the ACK this side owes the peer.
 */
import { Reassembly } from './reassembly.ts'
import { seqAdd, seqDiff, seqLe, seqLt } from './seq.ts'
import { DEFAULT_SEND_MSS } from './constants.ts'

export class ReceiveSpace {
  readonly reassembly: Reassembly
  private _irs = 0
  private _nxt = 0
  private _advRight = 0
  private _shift = 0
  private _pendingFinSeq = -1
  private _finReceived = false
  private _mss = DEFAULT_SEND_MSS
  private _ackPendingBytes = 0
  private _ackNow = false
  private _ackAtBatchEnd = false
  private _lastAckSent = 0

  constructor (maxOutOfOrderSegments: number) {
    this.reassembly = new Reassembly(maxOutOfOrderSegments)
  }

  get irs (): number { return this._irs }
  get nxt (): number { return this._nxt }
  /** Right edge of the window last advertised. */
  get advRight (): number { return this._advRight }
  /** Our window scale (RFC 7323 2.3). */
  get shift (): number { return this._shift }
  /** A FIN that arrived ahead of missing data: its sequence number, or -1. */
  get pendingFinSeq (): number { return this._pendingFinSeq }
  get finReceived (): boolean { return this._finReceived }
  /** Largest payload seen from the peer, for "every second full-sized segment" ACKs. */
  get mss (): number { return this._mss }
  /** In-order bytes received since the last ACK we sent. */
  get ackPendingBytes (): number { return this._ackPendingBytes }
  /** An ACK goes with the next transmission, even without data. */
  get ackNow (): boolean { return this._ackNow }
  /** RCV.NXT as carried by the last ACK we sent (RFC 7323 4.3's Last.ACK.sent). */
  get lastAckSent (): number { return this._lastAckSent }

  /** The peer's SYN with sequence number `seq` arrived. */
  synReceived (seq: number): void {
    this._irs = seq
    this._nxt = seqAdd(seq, 1)
    this._advRight = this._nxt
  }

  /** What the handshake agreed (our window scale, the peer's segment size before any data). */
  negotiated (shift: number, mss: number): void {
    this._shift = shift
    this._mss = mss
  }

  /** RFC 9293 3.10.7.4 first check: the four acceptability cases. */
  acceptable (seq: number, segLen: number): boolean {
    const right = this._advRight
    const wnd = seqDiff(right, this._nxt)
    if (wnd <= 0) {
      // A zero window still lets the ACK, RST and URG of a segment at RCV.NXT through; its text is trimmed.
      return seq === this._nxt
    }
    if (segLen === 0) return seqLe(this._nxt, seq) && seqLt(seq, right)
    const last = seqAdd(seq, segLen - 1)
    return (seqLe(this._nxt, seq) && seqLt(seq, right)) || (seqLe(this._nxt, last) && seqLt(last, right))
  }

  /** A segment carried `len` new payload octets (in order or not). */
  noteSegment (len: number): void {
    if (len > this._mss) this._mss = len
  }

  /** `len` octets at RCV.NXT were taken; `owed` of them count towards the next ACK. */
  advance (len: number, owed: number): void {
    this._nxt = seqAdd(this._nxt, len)
    this._ackPendingBytes += owed
  }

  /** Payload that arrived out of order also counts towards the next ACK. */
  owe (len: number): void {
    this._ackPendingBytes += len
  }

  /** A FIN beyond RCV.NXT inside the window: it takes effect once the data before it is in. */
  holdFin (seq: number): void {
    this._pendingFinSeq = seq
  }

  /** RFC 9293 3.10.7.4 eighth check: the FIN at RCV.NXT is taken (it occupies one sequence number). */
  finArrives (): void {
    this._pendingFinSeq = -1
    this._finReceived = true
    this._nxt = seqAdd(this._nxt, 1)
    this._ackNow = true
  }

  requestAck (): void {
    this._ackNow = true
  }

  /** Defers the owed ACK to the end of the input batch; false when it already was. */
  deferAck (): boolean {
    if (this._ackAtBatchEnd) return false
    this._ackAtBatchEnd = true
    return true
  }

  /** The end of the batch: whether an ACK was deferred to it (and the deferral is over). */
  takeDeferredAck (): boolean {
    const deferred = this._ackAtBatchEnd
    this._ackAtBatchEnd = false
    return deferred
  }

  /** A segment carrying our ACK (RCV.NXT) left. */
  ackSent (): void {
    this._lastAckSent = this._nxt
    this._ackPendingBytes = 0
    this._ackNow = false
  }

  /**
   * The window field to send (RFC 9293 3.8.6.2.2 receiver SWS avoidance; RFC 7323 2.3 scaling)
   * given `space` octets free: the right edge never moves left and only moves right in steps of
   * `minGrow`. SYN windows are not scaled (RFC 7323 2.2).
   */
  advertise (space: number, syn: boolean, minGrow: number): number {
    if (syn) {
      const w = Math.min(space, 0xffff)
      this._advRight = seqAdd(this._nxt, w)
      return w
    }
    let right = seqAdd(this._nxt, space)
    const grow = seqDiff(right, this._advRight)
    if (grow < 0 || grow < minGrow) right = this._advRight
    let wnd = seqDiff(right, this._nxt)
    if (wnd < 0) wnd = 0
    const unit = 1 << this._shift
    // Round up so the edge never retreats because of scaling granularity.
    const field = Math.min(0xffff, Math.ceil(wnd / unit))
    this._advRight = seqAdd(this._nxt, field * unit)
    return field
  }

  /** Frees the out-of-order queue (the connection ended); returns the bytes it held. */
  release (): number {
    const held = this.reassembly.bytes
    this.reassembly.clear()
    this._pendingFinSeq = -1
    return held
  }
}
