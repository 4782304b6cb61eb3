/**
 * One TCP connection: the RFC 9293 state machine, sans-IO. Every entry point takes `now` (ms);
 * segments leave through the host, application events are queued while a call runs and
 * delivered at its end (so a handler that writes, ends or destroys from inside a callback never
 * re-enters a half-processed segment), and the host is told the next deadline.
 *
 * Segment arrival lives in input.ts, transmission in output.ts, timer expiry in timers.ts; this
 * file holds the application calls and state changes. The state is grouped by what keeps its
 * invariants: the send sequence space (send-space.ts), the receive space (receive-space.ts), loss
 * recovery (recovery.ts), the timers (deadlines.ts) and the application events (events.ts); the
 * other files read it and change it through their methods.
 */
import type { Logger } from 'pino'
import type { TcpParsed } from '../../../proto/wire/tcp.ts'
import type { ResolvedTcpOptions } from './options.ts'
import type { TcpCounters } from './counters.ts'
import type { HeapItem } from './deadline-heap.ts'
import { emptyTcpRepr } from '../../../proto/wire/tcp.ts'
import { TcpError, type TcpErrorCode } from './errors.ts'
import { SendSpace } from './send-space.ts'
import { ReceiveSpace } from './receive-space.ts'
import { LossRecovery } from './recovery.ts'
import { Deadlines } from './deadlines.ts'
import { ApplicationEvents } from './events.ts'
import { RttEstimator } from './rtt.ts'
import { createCongestionControl, type CongestionControl } from './cc/index.ts'
import { seqAdd, seqDiff } from './seq.ts'
import { TIMESTAMP_OPTION_SPACE, DEFAULT_SEND_MSS } from './constants.ts'
import {
  CLOSED, SYN_SENT, SYN_RECEIVED, ESTABLISHED, FIN_WAIT_1, FIN_WAIT_2, CLOSE_WAIT, CLOSING, LAST_ACK,
  TIME_WAIT, STATE_NAMES, type TcpState, type TcpStateName,
} from './state.ts'
import { segmentArrives } from './input.ts'
import { transmit, sendSyn, sendSynAck, sendReset } from './output.ts'
import { timersDue } from './timers.ts'

/** What the application side (a TcpSocket, or a test) receives from a connection. */
export interface ConnectionHandler {
  /** The handshake completed on an active open. */
  onConnect (): void
  /** In-order payload. The buffer may be a view into a received datagram: do not modify it. */
  onData (data: Buffer): void
  /** The peer sent FIN: no more data will arrive. */
  onEnd (): void
  /** Send-buffer space became free after write() accepted less than it was given. */
  onWritable (): void
  /**
   * The connection is finished for the application: `err` is set on reset, refusal or timeout,
   * null after an orderly close. No callback follows.
   */
  onClose (err: TcpError | null): void
  /** Bytes delivered but not yet consumed by the application; they shrink the advertised window. */
  unreadBytes (): number
}

/** What a connection needs from its stack. */
export interface ConnectionHost {
  readonly options: ResolvedTcpOptions
  readonly counters: TcpCounters
  readonly logger: Logger | undefined
  readonly localAddress: number
  /** True while the global buffer limit is exceeded. */
  readonly memoryPressure: boolean
  /** True when no more connections may enter TIME-WAIT (they close at once instead). */
  readonly timeWaitFull: boolean
  emit (datagram: Buffer): void
  /** A data segment (new or retransmitted) of this connection left: the per-turn cap and burst accounting. */
  dataSent (conn: TcpConnection): void
  /** False when this connection sent its most data segments for this turn (resume follows). */
  turnRoom (conn: TcpConnection): boolean
  nextIpIdent (): number
  adjustMemory (delta: number): void
  reschedule (conn: TcpConnection): void
  stateChanged (conn: TcpConnection, from: TcpState, to: TcpState): void
  release (conn: TcpConnection): void
  /** A passive open reached ESTABLISHED: the handler to attach, or null to refuse. */
  accept (conn: TcpConnection): ConnectionHandler | null
  /** True when the host calls batchEnd() after each batch of input (see TcpCore onBatch). */
  readonly batching: boolean
  /** This connection has work for the end of the current batch. */
  defer (conn: TcpConnection): void
}

export interface ConnectionIdentity {
  localPort: number
  remoteAddress: number
  remotePort: number
  /** Key in the peer's table (remotePort * 65536 + localPort). */
  key: number
}

/** What an active open may set before it starts (TcpCore.connect's options). */
export interface ConnectionSettings {
  noDelay?: boolean
  keepAlive?: boolean
  keepAliveIdle?: number
  userTimeout?: number
}

export class TcpConnection implements HeapItem {
  readonly host: ConnectionHost
  readonly options: ResolvedTcpOptions
  readonly localAddress: number
  readonly localPort: number
  readonly remoteAddress: number
  readonly remotePort: number
  readonly key: number
  readonly passive: boolean
  /** Send sequence space and send buffer (send-space.ts). */
  readonly snd = new SendSpace()
  /** Receive sequence space, out-of-order queue and the ACK owed (receive-space.ts). */
  readonly rcv: ReceiveSpace
  /** SACK scoreboard, fast recovery, probes and retransmission counts (recovery.ts). */
  readonly recovery = new LossRecovery()
  /** Every timer's deadline (deadlines.ts; expiry in timers.ts). */
  readonly timers = new Deadlines()
  readonly rtt: RttEstimator
  /** Application events, queued during a call and delivered at its end (events.ts). */
  readonly events: ApplicationEvents
  private _cc: CongestionControl
  private _state: TcpState = CLOSED
  private _orphaned = false

  // Negotiated options (RFC 9293 3.7.1, RFC 7323, RFC 2018).
  private _mss = DEFAULT_SEND_MSS
  private _smss = DEFAULT_SEND_MSS
  private _windowScaling = false
  private _timestamps = false
  private _sack = false
  private _tsRecent = 0
  private _tsRecentAt = 0
  private tsOffset = 0

  // Settings the application may change.
  private _noDelay: boolean
  private _keepAlive: boolean
  private _keepAliveIdle: number
  private _userTimeout: number

  private _lastReceivedAt = 0
  private _lastProgressAt = 0
  private writeBlocked = false
  private challengeWindowStart = -Infinity
  private challengeAcks = 0
  private _bytesReceived = 0
  private _bytesAccepted = 0
  private closeReason = ''

  // Deadline heap bookkeeping (deadline-heap.ts).
  heapIndex = -1
  heapKey = Infinity
  /** The host's per-turn cap (TcpCore.turnRoom): data segments sent in turn number turnMark. */
  turnMark = -1
  turnSent = 0

  /** Unread bytes last reported by the handler, as counted in the host's global total. */
  private lastUnread = 0

  /** Scratch header reused for every outgoing segment (output.ts). */
  readonly repr = emptyTcpRepr()
  readonly sackScratch: number[] = []
  readonly holeEnd: number[] = [0]

  constructor (host: ConnectionHost, id: ConnectionIdentity, passive: boolean) {
    this.host = host
    this.options = host.options
    this.localAddress = host.localAddress
    this.localPort = id.localPort
    this.remoteAddress = id.remoteAddress
    this.remotePort = id.remotePort
    this.key = id.key
    this.passive = passive
    const o = this.options
    this.rcv = new ReceiveSpace(o.maxOutOfOrderSegments)
    this.events = new ApplicationEvents(host, this)
    this.rtt = new RttEstimator(o.minRto, o.maxRto, o.initialRto)
    this._cc = createCongestionControl(o.congestionControl, this._smss, o.initialWindowSegments * this._smss)
    this._noDelay = o.noDelay
    this._keepAlive = o.keepAlive
    this._keepAliveIdle = o.keepAliveIdle
    this._userTimeout = o.userTimeout
  }

  get state (): TcpState { return this._state }
  get handler (): ConnectionHandler | null { return this.events.handler }
  /** The application closed its side and left: finish the close without it (RFC 9293 3.10.4). */
  get orphaned (): boolean { return this._orphaned }
  get cc (): CongestionControl { return this._cc }
  /** Largest segment payload without options (min of both MSS values). */
  get mss (): number { return this._mss }
  /** Payload of a full segment once per-segment options are counted: the congestion-control unit. */
  get smss (): number { return this._smss }
  get windowScaling (): boolean { return this._windowScaling }
  get timestamps (): boolean { return this._timestamps }
  get sack (): boolean { return this._sack }
  get tsRecent (): number { return this._tsRecent }
  get tsRecentAt (): number { return this._tsRecentAt }
  get noDelay (): boolean { return this._noDelay }
  get keepAlive (): boolean { return this._keepAlive }
  get keepAliveIdle (): number { return this._keepAliveIdle }
  /** RFC 5482 user timeout (ms, 0 = none). */
  get userTimeout (): number { return this._userTimeout }
  get lastReceivedAt (): number { return this._lastReceivedAt }
  get lastProgressAt (): number { return this._lastProgressAt }
  /** Payload delivered in order (counted also after the application left). */
  get bytesReceived (): number { return this._bytesReceived }
  /** Bytes write() accepted. */
  get bytesAccepted (): number { return this._bytesAccepted }

  get stateName (): TcpStateName {
    return STATE_NAMES[this.state]
  }

  /** Bytes written by the application and not yet acknowledged. */
  get sendBuffered (): number {
    return this.snd.buffer.length
  }

  /** Our current timestamp clock (RFC 7323 5.4: ms ticks plus a per-connection random offset). */
  tsNow (now: number): number {
    return (Math.floor(now) + this.tsOffset) >>> 0
  }

  /** RFC 7323 4.3: TS.Recent follows the segment that covers Last.ACK.sent. */
  updateTsRecent (tsVal: number, now: number): void {
    this._tsRecent = tsVal
    this._tsRecentAt = now
  }

  /** An acceptable segment arrived: the peer is alive, and answered any keepalive probe. */
  segmentAccepted (now: number): void {
    this._lastReceivedAt = now
    this.timers.resetKeepaliveProbes()
  }

  /** The connection moved data (written by the application or acknowledged by the peer). */
  progressed (now: number): void {
    this._lastProgressAt = now
  }

  /** RFC 5961 7: challenge ACKs are rate limited per connection; true when one may go now. */
  challengeAckAllowed (now: number): boolean {
    if (now - this.challengeWindowStart >= 1000) {
      this.challengeWindowStart = now
      this.challengeAcks = 0
    }
    if (this.challengeAcks >= this.options.challengeAcksPerSecond) return false
    this.challengeAcks++
    return true
  }

  /** Settings of an active open, before open(). */
  configure (handler: ConnectionHandler, opts: ConnectionSettings): void {
    this.events.attach(handler)
    if (opts.noDelay !== undefined) this._noDelay = opts.noDelay
    if (opts.keepAlive !== undefined) this._keepAlive = opts.keepAlive
    if (opts.keepAliveIdle !== undefined && opts.keepAliveIdle > 0) this._keepAliveIdle = opts.keepAliveIdle
    if (opts.userTimeout !== undefined) this._userTimeout = Math.max(0, opts.userTimeout)
  }

  // ---- Opening ----

  /** Active open (RFC 9293 3.10.1): send SYN, enter SYN-SENT. */
  open (isn: number, tsOffset: number, now: number): void {
    this.initSend(isn, tsOffset, now)
    this.setState(SYN_SENT, now)
    sendSyn(this, now)
    this.timers.startRto(now + this.rtt.rto)
    this.finishCall()
  }

  /** Passive open: a SYN reached a listening port (RFC 9293 3.10.7.2). */
  acceptSyn (seg: TcpParsed, isn: number, tsOffset: number, now: number): void {
    this.initSend(isn, tsOffset, now)
    this.rcv.synReceived(seg.seq)
    this.negotiate(seg, now)
    this.snd.synWindow(seg.window, seg.seq, 0)
    this.setState(SYN_RECEIVED, now)
    sendSynAck(this, now)
    this.timers.startRto(now + this.rtt.rto)
    this.finishCall()
  }

  private initSend (isn: number, tsOffset: number, now: number): void {
    this.snd.init(isn)
    this.recovery.init(isn)
    this.tsOffset = tsOffset
    this._lastReceivedAt = now
    this._lastProgressAt = now
  }

  /** Applies the peer's SYN options (RFC 9293 3.7.1, RFC 7323 2.2 and 3.2, RFC 2018 2). */
  negotiate (seg: TcpParsed, now: number): void {
    const o = this.options
    const peerMss = seg.mss > 0 ? seg.mss : DEFAULT_SEND_MSS
    this._mss = Math.max(64, Math.min(peerMss, o.mss))
    this._windowScaling = o.windowScaling && seg.windowScale >= 0
    this.snd.setShift(this._windowScaling ? seg.windowScale : 0)
    this._timestamps = o.timestamps && seg.timestamp
    if (this._timestamps) this.updateTsRecent(seg.tsVal, now)
    this._sack = o.sack && seg.sackPermitted
    // RFC 6691: the MSS excludes options, so each segment's payload shrinks by the timestamp.
    this._smss = this._mss - (this._timestamps ? TIMESTAMP_OPTION_SPACE : 0)
    this.rcv.negotiated(this._windowScaling ? o.windowShift : 0, this._smss)
    this._cc = createCongestionControl(o.congestionControl, this._smss, o.initialWindowSegments * this._smss)
  }

  /** The handshake completed (RFC 9293 3.10.7.3 / 3.10.7.4). */
  established (now: number): void {
    this.setState(this.snd.finQueued ? FIN_WAIT_1 : ESTABLISHED, now)
    this.recovery.synDone()
    if (this.passive) {
      const handler = this.host.accept(this)
      if (handler === null) {
        this.host.counters.dropped.inc('accept_refused')
        sendReset(this, now)
        this.close(null, 'refused_by_application', now)
        return
      }
      this.events.attach(handler)
    } else {
      this.events.queueConnect()
    }
    if (this._keepAlive) this.timers.startKeepalive(now + this._keepAliveIdle)
  }

  // ---- Application calls ----

  /** Send-buffer room left (the global limit shrinks it to minBuffer under pressure). */
  writableRoom (): number {
    const o = this.options
    const limit = this.host.memoryPressure ? Math.min(o.sendBuffer, o.minBuffer) : o.sendBuffer
    return Math.max(0, limit - this.snd.buffer.length)
  }

  /** True while write() may still accept data (before end() and before the connection closed). */
  get writable (): boolean {
    const state = this._state
    return !this.snd.finQueued && (state === SYN_SENT || state === SYN_RECEIVED || state === ESTABLISHED || state === CLOSE_WAIT)
  }

  /**
   * Queues data[start, end) for sending and returns how many bytes were accepted (less than
   * given when the send buffer is full: onWritable follows when room appears). Does not send:
   * call flush(now) after one or more writes.
   */
  write (data: Uint8Array, start = 0, end = data.length): number {
    if (!this.writable) return 0
    const n = Math.min(end - start, this.writableRoom())
    if (n < end - start) this.writeBlocked = true
    if (n <= 0) return 0
    this.snd.append(data, start, start + n)
    this.host.adjustMemory(n)
    this._bytesAccepted += n
    return n
  }

  /** Sends what the windows allow. */
  flush (now: number): void {
    if (this._state === CLOSED) return
    this._lastProgressAt = now
    transmit(this, now)
    this.finishCall()
  }

  /** The host's turn ended after this connection was stopped by the per-turn cap: send on. */
  resume (now: number): void {
    if (this._state === CLOSED) return
    transmit(this, now)
    this.finishCall()
  }

  /** Half close (RFC 9293 3.10.4 CLOSE): FIN after the queued data; receiving continues. */
  shutdown (now: number): void {
    if (this.snd.finQueued || this._state === CLOSED) return
    this.snd.queueFin()
    if (this._state === ESTABLISHED) this.setState(FIN_WAIT_1, now)
    else if (this._state === CLOSE_WAIT) this.setState(LAST_ACK, now)
    // In SYN-SENT / SYN-RECEIVED the FIN waits for the handshake (established()).
    if (this._state !== SYN_SENT && this._state !== SYN_RECEIVED) transmit(this, now)
    this.finishCall()
  }

  /** The application leaves gracefully: shut down if not yet, and finish the close without it. */
  detach (now: number): void {
    if (this._state === CLOSED) return
    this._orphaned = true
    this.events.detach()
    if (this._state === SYN_SENT) {
      this.close(null, 'aborted', now)
      this.finishCall()
      return
    }
    if (this._state === TIME_WAIT) return
    if (!this.snd.finQueued) this.shutdown(now)
    if (this._state === FIN_WAIT_1 || this._state === CLOSING || this._state === LAST_ACK) {
      this.timers.limitStateTimer(now + this.options.lastAckTimeout)
    }
    this.finishCall()
  }

  /** RFC 9293 3.10.5 ABORT: RST (except in SYN-SENT) and CLOSED. No further events. */
  abort (now: number): void {
    if (this._state === CLOSED) return
    this.events.detach()
    if (this._state !== SYN_SENT && this._state !== TIME_WAIT) sendReset(this, now)
    this.close(null, 'aborted', now)
    this.finishCall()
  }

  /** The application consumed data: advertise the reopened window if it grew enough. */
  windowUpdate (now: number): void {
    if (this._state === CLOSED || this._state < ESTABLISHED || this.rcv.finReceived) return
    const space = this.receiveSpace()
    const grow = seqDiff(seqAdd(this.rcv.nxt, space), this.rcv.advRight)
    // RFC 9293 3.8.6.2.2: announce once the window can grow by min(RCV.BUFF / 2, MSS), and (as
    // Linux's tcp_cleanup_rbuf) only while the peer is short of window: the window it may still use
    // is at most half the buffer and the update at least doubles it. Otherwise the next ACK carries
    // the update; a reader that keeps up would else cost one extra ACK per segment.
    const open = seqDiff(this.rcv.advRight, this.rcv.nxt)
    if (grow >= Math.min(this.options.receiveBuffer >> 1, this._mss) && 2 * open <= this.options.receiveBuffer && space >= 2 * open) {
      this.rcv.requestAck()
      transmit(this, now)
      this.finishCall()
    }
  }

  setNoDelay (noDelay: boolean, now: number): void {
    this._noDelay = noDelay
    if (noDelay) this.flush(now)
  }

  setKeepAlive (enable: boolean, idle: number, now: number): void {
    this._keepAlive = enable
    if (idle > 0) this._keepAliveIdle = idle
    this.timers.resetKeepaliveProbes()
    if (enable && this._state >= ESTABLISHED && this._state !== TIME_WAIT) this.timers.startKeepalive(now + this._keepAliveIdle)
    else this.timers.stopKeepalive()
    this.finishCall()
  }

  setUserTimeout (ms: number): void {
    this._userTimeout = Math.max(0, ms)
    this.finishCall()
  }

  // ---- Segments and timers (called by the stack) ----

  input (seg: TcpParsed, datagram: Buffer, now: number): void {
    segmentArrives(this, seg, datagram, now)
    this.finishCall()
  }

  /**
   * The end of a batch of input (the host's I/O batch, like GRO in a kernel): deliver the data
   * that arrived in it as one chunk and send the ACK it owes, once.
   */
  batchEnd (now: number): void {
    this.events.batchEnd()
    // Nothing carried the deferred ACK meanwhile (a data segment or another ACK would have cleared the count).
    if (this.rcv.takeDeferredAck() && this._state !== CLOSED && this.rcv.ackPendingBytes > 0) {
      this.rcv.requestAck()
      transmit(this, now)
    }
    this.host.reschedule(this)
  }

  /** Earliest deadline of this connection (Infinity when none). */
  nextDeadline (): number {
    return this.timers.next(this._userTimeout)
  }

  onTimer (now: number): void {
    timersDue(this, now)
    this.finishCall()
  }

  // ---- State changes ----

  setState (to: TcpState, now: number): void {
    const from = this._state
    if (from === to) return
    this._state = to
    this.host.stateChanged(this, from, to)
    const o = this.options
    switch (to) {
      case FIN_WAIT_2:
        this.timers.startStateTimer(now + o.finWait2Timeout)
        break
      case CLOSE_WAIT:
        this.timers.startStateTimer(now + o.closeWaitTimeout)
        break
      case LAST_ACK:
      case CLOSING:
        this.timers.startStateTimer(now + o.lastAckTimeout)
        break
      case FIN_WAIT_1:
        if (this._orphaned) this.timers.startStateTimer(now + o.lastAckTimeout)
        else this.timers.stopStateTimer()
        break
      default:
        this.timers.stopStateTimer()
    }
  }

  /** Enters TIME-WAIT (RFC 9293 3.10.7.4): the application is done, the 4-tuple stays reserved briefly. */
  enterTimeWait (now: number): void {
    this.releaseBuffers()
    this.timers.stopSending()
    this.events.queueClose(null)
    if (this.options.timeWait === 0 || this.host.timeWaitFull) {
      this.close(null, 'normal', now)
      return
    }
    this.setState(TIME_WAIT, now)
    this.timers.startStateTimer(now + this.options.timeWait)
    this.closeReason = 'normal'
  }

  /** Aborts with an error for the application; sends RST first when `reset`. */
  fail (code: TcpErrorCode, reason: string, now: number, reset: boolean): void {
    if (this._state === CLOSED) return
    if (reset && this._state !== SYN_SENT) sendReset(this, now)
    const syscall = this._state === SYN_SENT ? 'connect' : 'read'
    this.close(new TcpError(code, syscall, this.remoteAddress, this.remotePort), reason, now)
  }

  /** Moves to CLOSED, frees everything and tells the application (once). */
  close (err: TcpError | null, reason: string, now: number): void {
    if (this._state === CLOSED) return
    const wasTimeWait = this._state === TIME_WAIT
    this.setState(CLOSED, now)
    this.releaseBuffers()
    this.timers.stopAll()
    if (!wasTimeWait) this.events.queueClose(err)
    this.host.counters.closed.inc(wasTimeWait ? this.closeReason : reason)
    this.host.release(this)
  }

  private releaseBuffers (): void {
    const held = this.snd.release() + this.rcv.release() + this.lastUnread
    if (held > 0) this.host.adjustMemory(-held)
    this.lastUnread = 0
    this.recovery.release()
  }

  // ---- Receive window ----

  /**
   * Bytes we can accept beyond RCV.NXT now: the buffer limit (smaller under global pressure)
   * minus unread, undelivered and out-of-order data, capped by what the window field can carry.
   */
  receiveSpace (): number {
    const o = this.options
    const handler = this.events.handler
    const unread = handler === null ? 0 : handler.unreadBytes()
    if (unread !== this.lastUnread) {
      this.host.adjustMemory(unread - this.lastUnread)
      this.lastUnread = unread
    }
    const used = unread + this.events.pendingBytes + this.rcv.reassembly.bytes
    const limit = this.host.memoryPressure ? Math.min(o.receiveBuffer, o.minBuffer) : o.receiveBuffer
    const free = Math.max(0, limit - used)
    const cap = this._windowScaling ? 0xffff * (1 << this.rcv.shift) : 0xffff
    return Math.min(free, cap)
  }

  // ---- Events ----

  deliver (data: Buffer): void {
    this._bytesReceived += data.length
    this.events.queueData(data)
  }

  queueWritable (): void {
    if (this.writeBlocked && this.writableRoom() > 0) {
      this.writeBlocked = false
      this.events.queueWritable()
    }
  }

  /** Ends every entry point: deliver queued events, then tell the host the next deadline. */
  private finishCall (): void {
    this.events.flush()
    this.host.reschedule(this)
  }
}
