/**
 * The timers of one connection as absolute deadlines in ms (Infinity when off), with the state
 * they back off or count with: the retransmission timer (RFC 6298), the tail loss probe (RFC 8985
 * 7), pacing, the delayed ACK, the persist timer (RFC 9293 3.8.6.1), keepalive (RFC 9293 3.8.4),
 * the closing-state and TIME-WAIT timer, and the time data has waited unacknowledged (RFC 5482).
 * What happens when one fires is in timers.ts.
 */
export class Deadlines {
  private _rtoAt = Infinity
  private _tlpAt = Infinity
  private _paceAt = Infinity
  private _paceNext = -Infinity
  private _delackAt = Infinity
  private _persistAt = Infinity
  private _persistBackoff = 0
  private _keepaliveAt = Infinity
  private _keepaliveProbes = 0
  private _stateAt = Infinity
  private _unackedSince = Infinity

  get rtoAt (): number { return this._rtoAt }
  /** Tail loss probe: when it fires. */
  get tlpAt (): number { return this._tlpAt }
  /** Pacing: when the next data segment may leave (a deadline only while data waits for it). */
  get paceAt (): number { return this._paceAt }
  /** Pacing: the earliest time the next data segment is due at the pacing rate. */
  get paceNext (): number { return this._paceNext }
  get delackAt (): number { return this._delackAt }
  get persistAt (): number { return this._persistAt }
  get keepaliveAt (): number { return this._keepaliveAt }
  /** Keepalive probes sent without an answer. */
  get keepaliveProbes (): number { return this._keepaliveProbes }
  get stateAt (): number { return this._stateAt }
  /** Since when data has been outstanding without an ACK of new data (Infinity when none is). */
  get unackedSince (): number { return this._unackedSince }

  /** Earliest deadline (Infinity when none); `userTimeout` 0 means none. */
  next (userTimeout: number): number {
    let d = this._rtoAt
    if (this._paceAt < d) d = this._paceAt
    if (this._tlpAt < d) d = this._tlpAt
    if (this._delackAt < d) d = this._delackAt
    if (this._persistAt < d) d = this._persistAt
    if (this._keepaliveAt < d) d = this._keepaliveAt
    if (this._stateAt < d) d = this._stateAt
    if (userTimeout > 0 && this._unackedSince !== Infinity) {
      const u = this._unackedSince + userTimeout
      if (u < d) d = u
    }
    return d
  }

  /** (Re)starts the retransmission timer. */
  startRto (at: number): void {
    this._rtoAt = at
  }

  /** RFC 6298 5.1: starts the retransmission timer if it is not running. */
  armRto (at: number): void {
    if (this._rtoAt === Infinity) this._rtoAt = at
  }

  stopRto (): void {
    this._rtoAt = Infinity
  }

  startTlp (at: number): void {
    this._tlpAt = at
  }

  stopTlp (): void {
    this._tlpAt = Infinity
  }

  /** Data waits for the pacing deadline `at`. */
  paceUntil (at: number): void {
    this._paceAt = at
  }

  stopPace (): void {
    this._paceAt = Infinity
  }

  /** The next segment is due at the pacing rate at `at`. */
  nextSegmentDue (at: number): void {
    this._paceNext = at
  }

  /** RFC 5681 4.2: a delayed ACK, if none is pending. */
  armDelack (at: number): void {
    if (this._delackAt === Infinity) this._delackAt = at
  }

  stopDelack (): void {
    this._delackAt = Infinity
  }

  armPersist (at: number): void {
    if (this._persistAt === Infinity) this._persistAt = at
  }

  stopPersist (): void {
    this._persistAt = Infinity
  }

  /** The peer opened its window: the next zero-window probe starts without backoff. */
  resetPersistBackoff (): void {
    this._persistBackoff = 0
  }

  /** A zero-window probe went out: the next one after `rto` doubled per probe, at most `max`. */
  persistBackedOff (now: number, rto: number, max: number): void {
    this._persistBackoff++
    this._persistAt = now + Math.min(rto * 2 ** Math.min(this._persistBackoff, 16), max)
  }

  startKeepalive (at: number): void {
    this._keepaliveAt = at
  }

  stopKeepalive (): void {
    this._keepaliveAt = Infinity
  }

  keepaliveProbeSent (at: number): void {
    this._keepaliveProbes++
    this._keepaliveAt = at
  }

  /** The peer answered (any acceptable segment), or keepalive was reconfigured. */
  resetKeepaliveProbes (): void {
    this._keepaliveProbes = 0
  }

  startStateTimer (at: number): void {
    this._stateAt = at
  }

  /** The state timer fires no later than `at`. */
  limitStateTimer (at: number): void {
    this._stateAt = Math.min(this._stateAt, at)
  }

  stopStateTimer (): void {
    this._stateAt = Infinity
  }

  /** Data is outstanding since `now` unless it already was. */
  unackedFrom (now: number): void {
    if (this._unackedSince === Infinity) this._unackedSince = now
  }

  /**
   * An ACK of new data (RFC 6298 5.2 / 5.3): with all acknowledged the timer stops, else it
   * restarts at `rtoAt` and the user timeout counts from `now`.
   */
  newDataAcked (allAcked: boolean, now: number, rtoAt: number): void {
    if (allAcked) {
      this._rtoAt = Infinity
      this._unackedSince = Infinity
    } else {
      this._rtoAt = rtoAt
      this._unackedSince = now
    }
  }

  /** Nothing is sent any more (TIME-WAIT): every timer but the delayed ACK and the state timer stops. */
  stopSending (): void {
    this._rtoAt = Infinity
    this._paceAt = Infinity
    this._tlpAt = Infinity
    this._persistAt = Infinity
    this._keepaliveAt = Infinity
    this._unackedSince = Infinity
  }

  /** CLOSED: every timer stops. */
  stopAll (): void {
    this.stopSending()
    this._delackAt = Infinity
    this._stateAt = Infinity
  }
}
