/**
 * One TCP connection: the RFC 9293 state machine, sans-IO. Every entry point takes `now` (ms);
 * segments leave through the host, application events are queued while a call runs and
 * delivered at its end (so a handler that writes, ends or destroys from inside a callback never
 * re-enters a half-processed segment), and the host is told the next deadline.
 *
 * Segment arrival lives in input.ts, transmission in output.ts, timer expiry in timers.ts; this
 * file holds the state, the application calls, state changes and the events.
 */
import type { Logger } from 'pino'
import type { TcpParsed } from '../../../proto/wire/tcp.ts'
import type { ResolvedTcpOptions } from './options.ts'
import type { TcpCounters } from './counters.ts'
import type { HeapItem } from './deadline-heap.ts'
import { emptyTcpRepr } from '../../../proto/wire/tcp.ts'
import { TcpError, type TcpErrorCode } from './errors.ts'
import { SendBuffer } from './send-buffer.ts'
import { Reassembly } from './reassembly.ts'
import { SackScoreboard } from './sack.ts'
import { RttEstimator } from './rtt.ts'
import { createCongestionControl, type CongestionControl } from './cc/index.ts'
import { seqAdd, seqDiff, seqLt } from './seq.ts'
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

export class TcpConnection implements HeapItem {
  readonly host: ConnectionHost
  readonly options: ResolvedTcpOptions
  readonly localAddress: number
  readonly localPort: number
  readonly remoteAddress: number
  readonly remotePort: number
  readonly key: number
  readonly passive: boolean
  state: TcpState = CLOSED
  handler: ConnectionHandler | null = null
  /** The application closed its side and left: finish the close without it (RFC 9293 3.10.4). */
  orphaned = false

  // Send sequence space (RFC 9293 3.3.1). sndMax is the highest sequence sent (sndNxt moves
  // back to sndUna after a retransmission timeout).
  iss = 0
  sndUna = 0
  sndNxt = 0
  sndMax = 0
  sndWnd = 0
  sndWl1 = 0
  sndWl2 = 0
  maxSndWnd = 0
  sndShift = 0
  readonly sendBuffer = new SendBuffer()
  /** Sequence number of the first byte in sendBuffer. */
  sndBufSeq = 0
  /** The application asked for FIN; it goes after the buffered data (sequence sndBufSeq + length). */
  finQueued = false
  writeBlocked = false

  // Receive sequence space.
  irs = 0
  rcvNxt = 0
  /** Right edge of the window last advertised (never moved left, RFC 9293 3.8.6.2.2). */
  rcvAdvRight = 0
  rcvShift = 0
  readonly reassembly: Reassembly
  /** A FIN that arrived ahead of missing data: its sequence number, or -1. */
  pendingFinSeq = -1
  finReceived = false
  /** Largest payload seen from the peer, for "every second full-sized segment" ACKs. */
  rcvMss = DEFAULT_SEND_MSS
  ackPendingBytes = 0
  ackNow = false
  /** An ACK owed under the every-second-segment rule, sent at the end of the input batch. */
  ackAtBatchEnd = false
  lastAckSent = 0

  // Negotiated options.
  /** Largest segment payload without options (min of both MSS values). */
  mss = DEFAULT_SEND_MSS
  /** Payload of a full segment once per-segment options are counted: the congestion-control unit. */
  smss = DEFAULT_SEND_MSS
  windowScaling = false
  timestamps = false
  sack = false
  tsRecent = 0
  tsRecentAt = 0
  tsOffset = 0

  // Loss recovery and congestion control.
  readonly rtt: RttEstimator
  cc: CongestionControl
  readonly scoreboard = new SackScoreboard()
  inRecovery = false
  recoveryPoint = 0
  highRxt = 0
  dupAcks = 0
  retransmits = 0
  synRetransmits = 0
  rttTiming = false
  rttSeq = 0
  rttStart = 0
  cwndLimited = false
  noDelay: boolean

  // Timers: absolute deadlines in ms, Infinity when off.
  rtoAt = Infinity
  /** Tail loss probe (RFC 8985 7): when it fires (Infinity when none is armed). */
  tlpAt = Infinity
  /** SND.MAX after the outstanding probe, or -1: one probe until an ACK of new data. */
  tlpEnd = -1
  /** SND.MAX when the hole at SND.UNA was last retransmitted in recovery, or -1 (lost-retransmission detection). */
  rxtMark = -1
  /**
   * The retransmissions of this recovery as flat [seq, SND.MAX then] pairs, oldest first (at most
   * MAX_RETRANSMIT_MARKS): when a partial ACK moves SND.UNA to a hole retransmitted earlier, its
   * mark becomes rxtMark, so a lost retransmission of any hole is found, not only of the first.
   */
  readonly rxtLog: number[] = []
  /**
   * Holes below this sequence are lost whatever RFC 6675's IsLost says, or -1: a tail loss probe
   * sent after them was SACKed (RFC 8985's rule, applied to the probe). Cleared with recovery.
   */
  lostBelow = -1
  /** Pacing: when the next data segment may leave (a deadline only while data waits for it). */
  paceAt = Infinity
  /** Pacing: the earliest time the next data segment is due at the pacing rate. */
  paceNext = -Infinity
  delackAt = Infinity
  persistAt = Infinity
  keepaliveAt = Infinity
  stateAt = Infinity
  persistBackoff = 0
  unackedSince = Infinity
  lastReceivedAt = 0
  lastProgressAt = 0
  keepAlive: boolean
  keepAliveIdle: number
  keepaliveProbes = 0
  userTimeout: number
  challengeWindowStart = -Infinity
  challengeAcks = 0

  // Counters visible to the application.
  bytesReceived = 0
  bytesAccepted = 0
  closeReason = ''

  // Deadline heap bookkeeping (deadline-heap.ts).
  heapIndex = -1
  heapKey = Infinity

  // Events queued during a call, delivered at its end.
  private readonly eventData: Buffer[] = []
  pendingBytes = 0
  private eventConnect = false
  private eventEnd = false
  private eventWritable = false
  private eventClose = false
  private closeError: TcpError | null = null
  private delivering = false
  /** Data events wait for the end of the input batch (delivered as one chunk). */
  private dataAtBatchEnd = false
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
    this.reassembly = new Reassembly(o.maxOutOfOrderSegments)
    this.rtt = new RttEstimator(o.minRto, o.maxRto, o.initialRto)
    this.cc = createCongestionControl(o.congestionControl, this.smss, o.initialWindowSegments * this.smss)
    this.noDelay = o.noDelay
    this.keepAlive = o.keepAlive
    this.keepAliveIdle = o.keepAliveIdle
    this.userTimeout = o.userTimeout
  }

  get stateName (): TcpStateName {
    return STATE_NAMES[this.state]
  }

  /** Bytes written by the application and not yet acknowledged. */
  get sendBuffered (): number {
    return this.sendBuffer.length
  }

  /** Our current timestamp clock (RFC 7323 5.4: ms ticks plus a per-connection random offset). */
  tsNow (now: number): number {
    return (Math.floor(now) + this.tsOffset) >>> 0
  }

  // ---- Opening ----

  /** Active open (RFC 9293 3.10.1): send SYN, enter SYN-SENT. */
  open (isn: number, tsOffset: number, now: number): void {
    this.initSend(isn, tsOffset, now)
    this.setState(SYN_SENT, now)
    sendSyn(this, now)
    this.rtoAt = now + this.rtt.rto
    this.finishCall()
  }

  /** Passive open: a SYN reached a listening port (RFC 9293 3.10.7.2). */
  acceptSyn (seg: TcpParsed, isn: number, tsOffset: number, now: number): void {
    this.initSend(isn, tsOffset, now)
    this.irs = seg.seq
    this.rcvNxt = seqAdd(seg.seq, 1)
    this.rcvAdvRight = this.rcvNxt
    this.negotiate(seg, now)
    this.sndWnd = seg.window
    this.maxSndWnd = seg.window
    this.sndWl1 = seg.seq
    this.sndWl2 = 0
    this.setState(SYN_RECEIVED, now)
    sendSynAck(this, now)
    this.rtoAt = now + this.rtt.rto
    this.finishCall()
  }

  private initSend (isn: number, tsOffset: number, now: number): void {
    this.iss = isn
    this.sndUna = isn
    this.sndNxt = isn
    this.sndMax = isn
    this.sndBufSeq = seqAdd(isn, 1)
    this.recoveryPoint = isn
    this.highRxt = isn
    this.tsOffset = tsOffset
    this.lastReceivedAt = now
    this.lastProgressAt = now
  }

  /** Applies the peer's SYN options (RFC 9293 3.7.1, RFC 7323 2.2 and 3.2, RFC 2018 2). */
  negotiate (seg: TcpParsed, now: number): void {
    const o = this.options
    const peerMss = seg.mss > 0 ? seg.mss : DEFAULT_SEND_MSS
    this.mss = Math.max(64, Math.min(peerMss, o.mss))
    this.windowScaling = o.windowScaling && seg.windowScale >= 0
    this.sndShift = this.windowScaling ? seg.windowScale : 0
    this.rcvShift = this.windowScaling ? o.windowShift : 0
    this.timestamps = o.timestamps && seg.timestamp
    if (this.timestamps) {
      this.tsRecent = seg.tsVal
      this.tsRecentAt = now
    }
    this.sack = o.sack && seg.sackPermitted
    // RFC 6691: the MSS excludes options, so each segment's payload shrinks by the timestamp.
    this.smss = this.mss - (this.timestamps ? TIMESTAMP_OPTION_SPACE : 0)
    this.rcvMss = this.smss
    this.cc = createCongestionControl(o.congestionControl, this.smss, o.initialWindowSegments * this.smss)
  }

  /** The handshake completed (RFC 9293 3.10.7.3 / 3.10.7.4). */
  established (now: number): void {
    this.setState(this.finQueued ? FIN_WAIT_1 : ESTABLISHED, now)
    this.synRetransmits = 0
    if (this.passive) {
      const handler = this.host.accept(this)
      if (handler === null) {
        this.host.counters.dropped.inc('accept_refused')
        sendReset(this, now)
        this.close(null, 'refused_by_application', now)
        return
      }
      this.handler = handler
    } else {
      this.eventConnect = true
    }
    if (this.keepAlive) this.keepaliveAt = now + this.keepAliveIdle
  }

  // ---- Application calls ----

  /** Send-buffer room left (the global limit shrinks it to minBuffer under pressure). */
  writableRoom (): number {
    const o = this.options
    const limit = this.host.memoryPressure ? Math.min(o.sendBuffer, o.minBuffer) : o.sendBuffer
    return Math.max(0, limit - this.sendBuffer.length)
  }

  /** True while write() may still accept data (before end() and before the connection closed). */
  get writable (): boolean {
    return !this.finQueued && (this.state === SYN_SENT || this.state === SYN_RECEIVED || this.state === ESTABLISHED || this.state === CLOSE_WAIT)
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
    this.sendBuffer.append(data, start, start + n)
    this.host.adjustMemory(n)
    this.bytesAccepted += n
    return n
  }

  /** Sends what the windows allow. */
  flush (now: number): void {
    if (this.state === CLOSED) return
    this.lastProgressAt = now
    transmit(this, now)
    this.finishCall()
  }

  /** Half close (RFC 9293 3.10.4 CLOSE): FIN after the queued data; receiving continues. */
  shutdown (now: number): void {
    if (this.finQueued || this.state === CLOSED) return
    this.finQueued = true
    if (this.state === ESTABLISHED) this.setState(FIN_WAIT_1, now)
    else if (this.state === CLOSE_WAIT) this.setState(LAST_ACK, now)
    // In SYN-SENT / SYN-RECEIVED the FIN waits for the handshake (established()).
    if (this.state !== SYN_SENT && this.state !== SYN_RECEIVED) transmit(this, now)
    this.finishCall()
  }

  /** The application leaves gracefully: shut down if not yet, and finish the close without it. */
  detach (now: number): void {
    if (this.state === CLOSED) return
    this.handler = null
    this.orphaned = true
    this.discardEvents()
    if (this.state === SYN_SENT) {
      this.close(null, 'aborted', now)
      this.finishCall()
      return
    }
    if (this.state === TIME_WAIT) return
    if (!this.finQueued) this.shutdown(now)
    if (this.state === FIN_WAIT_1 || this.state === CLOSING || this.state === LAST_ACK) {
      this.stateAt = Math.min(this.stateAt, now + this.options.lastAckTimeout)
    }
    this.finishCall()
  }

  /** RFC 9293 3.10.5 ABORT: RST (except in SYN-SENT) and CLOSED. No further events. */
  abort (now: number): void {
    if (this.state === CLOSED) return
    this.handler = null
    this.discardEvents()
    if (this.state !== SYN_SENT && this.state !== TIME_WAIT) sendReset(this, now)
    this.close(null, 'aborted', now)
    this.finishCall()
  }

  /** The application consumed data: advertise the reopened window if it grew enough. */
  windowUpdate (now: number): void {
    if (this.state === CLOSED || this.state < ESTABLISHED || this.finReceived) return
    const space = this.receiveSpace()
    const grow = seqDiff(seqAdd(this.rcvNxt, space), this.rcvAdvRight)
    // RFC 9293 3.8.6.2.2: announce once the window can grow by min(RCV.BUFF / 2, MSS), and (as
    // Linux's tcp_cleanup_rbuf) only while the peer is short of window: the window it may still use
    // is at most half the buffer and the update at least doubles it. Otherwise the next ACK carries
    // the update; a reader that keeps up would else cost one extra ACK per segment.
    const open = seqDiff(this.rcvAdvRight, this.rcvNxt)
    if (grow >= Math.min(this.options.receiveBuffer >> 1, this.mss) && 2 * open <= this.options.receiveBuffer && space >= 2 * open) {
      this.ackNow = true
      transmit(this, now)
      this.finishCall()
    }
  }

  setNoDelay (noDelay: boolean, now: number): void {
    this.noDelay = noDelay
    if (noDelay) this.flush(now)
  }

  setKeepAlive (enable: boolean, idle: number, now: number): void {
    this.keepAlive = enable
    if (idle > 0) this.keepAliveIdle = idle
    this.keepaliveProbes = 0
    this.keepaliveAt = enable && this.state >= ESTABLISHED && this.state !== TIME_WAIT ? now + this.keepAliveIdle : Infinity
    this.finishCall()
  }

  setUserTimeout (ms: number): void {
    this.userTimeout = Math.max(0, ms)
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
    if (this.dataAtBatchEnd) {
      this.dataAtBatchEnd = false
      if (!this.delivering) this.deliverEvents(true)
    }
    if (this.ackAtBatchEnd) {
      this.ackAtBatchEnd = false
      // Nothing carried it meanwhile (a data segment or another ACK would have cleared the count).
      if (this.state !== CLOSED && this.ackPendingBytes > 0) {
        this.ackNow = true
        transmit(this, now)
      }
    }
    this.host.reschedule(this)
  }

  /** Earliest deadline of this connection (Infinity when none). */
  nextDeadline (): number {
    let d = this.rtoAt
    if (this.paceAt < d) d = this.paceAt
    if (this.tlpAt < d) d = this.tlpAt
    if (this.delackAt < d) d = this.delackAt
    if (this.persistAt < d) d = this.persistAt
    if (this.keepaliveAt < d) d = this.keepaliveAt
    if (this.stateAt < d) d = this.stateAt
    if (this.userTimeout > 0 && this.unackedSince !== Infinity) {
      const u = this.unackedSince + this.userTimeout
      if (u < d) d = u
    }
    return d
  }

  onTimer (now: number): void {
    timersDue(this, now)
    this.finishCall()
  }

  // ---- State changes ----

  setState (to: TcpState, now: number): void {
    const from = this.state
    if (from === to) return
    this.state = to
    this.host.stateChanged(this, from, to)
    const o = this.options
    switch (to) {
      case FIN_WAIT_2:
        this.stateAt = now + o.finWait2Timeout
        break
      case CLOSE_WAIT:
        this.stateAt = now + o.closeWaitTimeout
        break
      case LAST_ACK:
      case CLOSING:
        this.stateAt = now + o.lastAckTimeout
        break
      case FIN_WAIT_1:
        this.stateAt = this.orphaned ? now + o.lastAckTimeout : Infinity
        break
      default:
        this.stateAt = Infinity
    }
  }

  /** Enters TIME-WAIT (RFC 9293 3.10.7.4): the application is done, the 4-tuple stays reserved briefly. */
  enterTimeWait (now: number): void {
    this.releaseBuffers()
    this.rtoAt = Infinity
    this.paceAt = Infinity
    this.tlpAt = Infinity
    this.persistAt = Infinity
    this.keepaliveAt = Infinity
    this.unackedSince = Infinity
    this.queueClose(null)
    if (this.options.timeWait === 0 || this.host.timeWaitFull) {
      this.close(null, 'normal', now)
      return
    }
    this.setState(TIME_WAIT, now)
    this.stateAt = now + this.options.timeWait
    this.closeReason = 'normal'
  }

  /** Aborts with an error for the application; sends RST first when `reset`. */
  fail (code: TcpErrorCode, reason: string, now: number, reset: boolean): void {
    if (this.state === CLOSED) return
    if (reset && this.state !== SYN_SENT) sendReset(this, now)
    const syscall = this.state === SYN_SENT ? 'connect' : 'read'
    this.close(new TcpError(code, syscall, this.remoteAddress, this.remotePort), reason, now)
  }

  /** Moves to CLOSED, frees everything and tells the application (once). */
  close (err: TcpError | null, reason: string, now: number): void {
    if (this.state === CLOSED) return
    const wasTimeWait = this.state === TIME_WAIT
    this.setState(CLOSED, now)
    this.releaseBuffers()
    this.rtoAt = Infinity
    this.paceAt = Infinity
    this.tlpAt = Infinity
    this.delackAt = Infinity
    this.persistAt = Infinity
    this.keepaliveAt = Infinity
    this.stateAt = Infinity
    this.unackedSince = Infinity
    if (!wasTimeWait) this.queueClose(err)
    this.host.counters.closed.inc(wasTimeWait ? this.closeReason : reason)
    this.host.release(this)
  }

  private releaseBuffers (): void {
    const held = this.sendBuffer.length + this.reassembly.bytes + this.lastUnread
    if (held > 0) this.host.adjustMemory(-held)
    this.lastUnread = 0
    this.sendBuffer.clear()
    this.reassembly.clear()
    this.scoreboard.clear()
    this.pendingFinSeq = -1
  }

  // ---- Receive window ----

  /**
   * Bytes we can accept beyond RCV.NXT now: the buffer limit (smaller under global pressure)
   * minus unread, undelivered and out-of-order data, capped by what the window field can carry.
   */
  receiveSpace (): number {
    const o = this.options
    const unread = this.handler === null ? 0 : this.handler.unreadBytes()
    if (unread !== this.lastUnread) {
      this.host.adjustMemory(unread - this.lastUnread)
      this.lastUnread = unread
    }
    const used = unread + this.pendingBytes + this.reassembly.bytes
    const limit = this.host.memoryPressure ? Math.min(o.receiveBuffer, o.minBuffer) : o.receiveBuffer
    const free = Math.max(0, limit - used)
    const cap = this.windowScaling ? 0xffff * (1 << this.rcvShift) : 0xffff
    return Math.min(free, cap)
  }

  hasUnsentData (): boolean {
    return seqLt(this.sndNxt, seqAdd(this.sndBufSeq, this.sendBuffer.length))
  }

  // ---- Events ----

  deliver (data: Buffer): void {
    this.bytesReceived += data.length
    if (this.handler === null) return
    this.eventData.push(data)
    this.pendingBytes += data.length
  }

  queueEnd (): void {
    this.eventEnd = true
  }

  queueWritable (): void {
    if (this.writeBlocked && this.writableRoom() > 0) {
      this.writeBlocked = false
      this.eventWritable = true
    }
  }

  private queueClose (err: TcpError | null): void {
    if (this.eventClose) return
    this.eventClose = true
    this.closeError = err
  }

  private discardEvents (): void {
    this.eventData.length = 0
    this.pendingBytes = 0
    this.eventConnect = false
    this.eventEnd = false
    this.eventWritable = false
    this.eventClose = false
  }

  /** Ends every entry point: deliver queued events, then tell the host the next deadline. */
  private finishCall (): void {
    if (!this.delivering) this.deliverEvents()
    this.host.reschedule(this)
  }

  private deliverEvents (batchEnd = false): void {
    if (!batchEnd && this.host.batching && this.eventData.length > 0 && !this.eventConnect && !this.eventEnd &&
      !this.eventWritable && !this.eventClose && this.handler !== null) {
      // Only data: it waits for the end of the batch and goes to the application in one chunk.
      if (!this.dataAtBatchEnd) {
        this.dataAtBatchEnd = true
        this.host.defer(this)
      }
      return
    }
    this.dataAtBatchEnd = false
    this.delivering = true
    try {
      while (this.handler !== null) {
        if (this.eventConnect) {
          this.eventConnect = false
          this.handler.onConnect()
          continue
        }
        if (this.eventData.length > 0) {
          // Nothing adds data while we deliver (input never runs inside a handler callback).
          const data = this.eventData
          if (data.length > 1) {
            // One chunk: per-chunk costs above us (stream, HTTP parser) are paid once per batch.
            const chunk = Buffer.concat(data, this.pendingBytes)
            data.length = 0
            this.pendingBytes = 0
            this.handler.onData(chunk)
            continue
          }
          for (let i = 0; i < data.length && this.handler !== null; i++) {
            this.pendingBytes -= data[i].length
            this.handler.onData(data[i])
          }
          data.length = 0
          this.pendingBytes = 0
          continue
        }
        if (this.eventEnd) {
          this.eventEnd = false
          this.handler.onEnd()
          continue
        }
        if (this.eventWritable) {
          this.eventWritable = false
          this.handler.onWritable()
          continue
        }
        if (this.eventClose) {
          const handler = this.handler
          this.handler = null
          handler.onClose(this.closeError)
          this.closeError = null
        }
        break
      }
      if (this.handler === null) this.discardEvents()
    } finally {
      this.delivering = false
    }
  }
}
