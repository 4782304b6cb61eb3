/**
 * The send sequence space (RFC 9293 3.3.1: ISS, SND.UNA, SND.NXT, SND.WND, SND.WL1, SND.WL2) and
 * the send buffer it numbers. It keeps SND.UNA <= SND.NXT <= SND.MAX (SND.MAX, the highest
 * sequence sent, as in RFC 6675: SND.NXT moves back to SND.UNA after a retransmission timeout)
 * and SND.UNA <= the first buffered byte, which every other file reads and none assigns.
 */
import { SendBuffer } from './send-buffer.ts'
import { seqAdd, seqDiff, seqGt, seqLe, seqLt, seqMax, seqMin } from './seq.ts'

export class SendSpace {
  readonly buffer = new SendBuffer()
  private _iss = 0
  private _una = 0
  private _nxt = 0
  private _max = 0
  private _wnd = 0
  private _wl1 = 0
  private _wl2 = 0
  private _maxWnd = 0
  private _shift = 0
  private _bufSeq = 0
  private _finQueued = false

  get iss (): number { return this._iss }
  get una (): number { return this._una }
  get nxt (): number { return this._nxt }
  /** The highest sequence number sent plus one. */
  get max (): number { return this._max }
  /** The peer's window, scaled. */
  get wnd (): number { return this._wnd }
  get wl1 (): number { return this._wl1 }
  get wl2 (): number { return this._wl2 }
  /** The largest window the peer has offered (RFC 5961 5.2's MAX.SND.WND). */
  get maxWnd (): number { return this._maxWnd }
  /** The peer's window scale (RFC 7323 2.3). */
  get shift (): number { return this._shift }
  /** Sequence number of the first byte in the buffer. */
  get bufSeq (): number { return this._bufSeq }
  /** The application asked for FIN; it goes after the buffered data (sequence dataEnd). */
  get finQueued (): boolean { return this._finQueued }

  /** Sequence number just past the buffered data (where the FIN goes). */
  get dataEnd (): number {
    return seqAdd(this._bufSeq, this.buffer.length)
  }

  /** Our FIN is sent and acknowledged. */
  get finAcked (): boolean {
    return this._finQueued && seqGt(this._una, seqAdd(this._bufSeq, this.buffer.length))
  }

  /** Buffered bytes not yet sent from SND.NXT. */
  hasUnsent (): boolean {
    return seqLt(this._nxt, seqAdd(this._bufSeq, this.buffer.length))
  }

  /** Room in the peer's window beyond SND.NXT (zero or negative when it is closed). */
  windowRoom (): number {
    return seqDiff(seqAdd(this._una, this._wnd), this._nxt)
  }

  /** A new connection with initial send sequence number `isn`: nothing sent, the data after the SYN. */
  init (isn: number): void {
    this._iss = isn
    this._una = isn
    this._nxt = isn
    this._max = isn
    this._bufSeq = seqAdd(isn, 1)
  }

  /** Our SYN (or SYN-ACK) went out, the first time or again. */
  synSent (): void {
    this._nxt = seqAdd(this._iss, 1)
    this._max = this._nxt
  }

  /** Scaling agreed in the handshake (RFC 7323 2.2). */
  setShift (shift: number): void {
    this._shift = shift
  }

  /** The window of a SYN (RFC 7323 2.2: never scaled); the first window update sets SND.WL1/WL2. */
  synWindow (window: number, seq: number, ack: number): void {
    this._wnd = window
    this._maxWnd = window
    this._wl1 = seq
    this._wl2 = ack
  }

  /** Takes the window of the segment <seq, ack> (scaled). */
  takeWindow (window: number, seq: number, ack: number): void {
    this._wnd = window * (1 << this._shift)
    this._wl1 = seq
    this._wl2 = ack
    if (this._wnd > this._maxWnd) this._maxWnd = this._wnd
  }

  /**
   * RFC 9293 3.10.7.4 fifth check: the window is updated only from a segment newer than the one
   * that set it (SND.WL1 < SEG.SEQ, or equal and SND.WL2 =< SEG.ACK). Returns whether it was.
   */
  updateWindow (window: number, seq: number, ack: number): boolean {
    if (!(seqLt(this._wl1, seq) || (this._wl1 === seq && seqLe(this._wl2, ack)))) return false
    this.takeWindow(window, seq, ack)
    return true
  }

  /**
   * SND.UNA moves to `ack` (which the caller checked is in (SND.UNA, SND.MAX]): acknowledged data
   * leaves the buffer and SND.NXT follows if it was behind. Returns the data bytes freed.
   */
  acknowledge (ack: number): number {
    const dataAcked = seqDiff(seqMin(ack, seqAdd(this._bufSeq, this.buffer.length)), this._bufSeq)
    if (dataAcked > 0) {
      this.buffer.consume(dataAcked)
      this._bufSeq = seqAdd(this._bufSeq, dataAcked)
    }
    this._una = ack
    if (seqLt(this._nxt, ack)) this._nxt = ack
    return dataAcked > 0 ? dataAcked : 0
  }

  /** `len` octets (plus FIN when `fin`) were sent from SND.NXT. */
  advance (len: number, fin: boolean): void {
    this._nxt = seqAdd(this._nxt, len + (fin ? 1 : 0))
    this._max = seqMax(this._max, this._nxt)
  }

  /** After a retransmission timeout, SND.NXT skips data the peer SACKed (up to `end`, at most SND.MAX). */
  skipTo (end: number): void {
    this._nxt = seqMin(end, this._max)
  }

  /** RFC 6298 5.4 / RFC 2018 8: a retransmission timeout starts over from SND.UNA. */
  rewind (): void {
    this._nxt = this._una
  }

  /** Copies data[start, end) into the buffer. */
  append (data: Uint8Array, start: number, end: number): void {
    this.buffer.append(data, start, end)
  }

  queueFin (): void {
    this._finQueued = true
  }

  /** Frees the buffer (the connection ended); returns the bytes it held. */
  release (): number {
    const held = this.buffer.length
    this.buffer.clear()
    return held
  }
}
