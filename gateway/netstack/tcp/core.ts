/**
 * The sans-IO TCP stack: demultiplexes segments by 4-tuple (per remote address, then by ports),
 * runs LISTEN processing for passive opens, allocates ephemeral ports per peer, enforces the
 * connection and buffer limits, answers segments for unknown connections with RST, and keeps one
 * deadline heap over all connections. Time is always a parameter; datagrams leave through `send`.
 */
import type { Logger } from 'pino'
import type { Metrics } from '../../metrics.ts'
import type { IPv4Parsed } from '../../../proto/wire/ipv4.ts'
import { IPPROTO_TCP } from '../../../proto/wire/ipv4.ts'
import { parseTcp, TCP_SYN, TCP_ACK, TCP_RST, type TcpParsed } from '../../../proto/wire/tcp.ts'
import { WireError } from '../../../proto/wire/errors.ts'
import { TcpConnection, type ConnectionHandler, type ConnectionHost, type ConnectionSettings } from './connection.ts'
import { TcpCounters, burstLabel } from './counters.ts'
import { DeadlineHeap } from './deadline-heap.ts'
import { IsnGenerator } from './isn.ts'
import { TcpError } from './errors.ts'
import { resolveTcpOptions, type ResolvedTcpOptions, type TcpOptions } from './options.ts'
import { buildResetFor } from './segment.ts'
import { seqGt } from './seq.ts'
import { CLOSED, SYN_RECEIVED, TIME_WAIT, STATE_NAMES, type TcpState } from './state.ts'

export interface TcpCoreOptions {
  /** Our tunnel address (uint32). */
  localAddress: number
  /** Hands a complete IPv4 datagram to the IP layer. */
  send: (datagram: Buffer) => void
  metrics: Metrics
  logger?: Logger
  options?: Partial<TcpOptions>
  /** Uniform [0, 1) source for ephemeral port choice; seeded in tests. */
  random?: () => number
  /**
   * Batched input: when set, ACKs owed under the every-second-segment rule (and, with SACK, for
   * out-of-order segments) and in-order data wait for batchEnd(), which the shell calls after each
   * batch of input it read (the stack calls this function once per batch that has such work, and
   * expects batchEnd soon after, e.g. setImmediate).
   */
  onBatch?: () => void
  /**
   * Turns of the event loop: called at the first data segment of a turn; the shell then calls
   * turnEnd() once the turn is over (setImmediate), which counts each peer's segments of the turn
   * in tcp_bursts and lets connections stopped by the per-turn cap continue. Unset: neither
   * accounting nor the per-turn cap (pacing still applies).
   */
  onTurn?: () => void
}

/** Called when a passive connection reaches ESTABLISHED; returns its handler, or null to reset it. */
export type AcceptCallback = (conn: TcpConnection) => ConnectionHandler | null

interface PeerTable {
  readonly conns: Map<number, TcpConnection>
  /** Connections not in TIME-WAIT (the per-peer limit counts these). */
  active: number
}

export class TcpCore implements ConnectionHost {
  readonly options: ResolvedTcpOptions
  readonly counters: TcpCounters
  readonly logger: Logger | undefined
  readonly localAddress: number
  /** Bytes held in send buffers, out-of-order queues and unread receive data. */
  memoryUsed = 0
  private readonly output: (datagram: Buffer) => void
  private readonly peers = new Map<number, PeerTable>()
  private readonly listeners = new Map<number, AcceptCallback>()
  private readonly heap = new DeadlineHeap<TcpConnection>()
  private readonly isn: IsnGenerator
  private readonly random: () => number
  private readonly stateCounts: number[] = new Array(STATE_NAMES.length).fill(0)
  private connectionCount = 0
  private activeCount = 0
  private halfOpen = 0
  private timeWaitCount = 0
  private ident = 1
  private readonly onBatch: (() => void) | undefined
  private readonly batched = new Set<TcpConnection>()
  private batchPending = false
  private readonly onTurn: (() => void) | undefined
  /** Data segments sent to each peer (by address) in the current turn. */
  private readonly turnSegments = new Map<number, number>()
  /** Counts turns; a connection's turnSent is for turn turnMark. */
  private turnNumber = 0
  /** Connections stopped by the per-turn cap (turnRoom); they continue at turnEnd. */
  private readonly turnWaiting = new Set<TcpConnection>()
  /** The most data segments sent to one peer in one turn since start. */
  largestBurst = 0
  private rstWindowStart = -Infinity
  private rstCount = 0
  private closed = false

  constructor (opts: TcpCoreOptions) {
    this.options = resolveTcpOptions(opts.options)
    this.localAddress = opts.localAddress >>> 0
    this.output = opts.send
    this.logger = opts.logger
    this.counters = new TcpCounters(opts.metrics)
    this.isn = new IsnGenerator(this.options.isnSecret)
    this.random = opts.random ?? Math.random
    this.onBatch = opts.onBatch
    this.onTurn = opts.onTurn
  }

  // ---- ConnectionHost ----

  get memoryPressure (): boolean {
    return this.memoryUsed > this.options.globalBufferLimit
  }

  get batching (): boolean {
    return this.onBatch !== undefined && this.options.batching
  }

  defer (conn: TcpConnection): void {
    this.batched.add(conn)
    if (!this.batchPending) {
      this.batchPending = true
      this.onBatch!()
    }
  }

  /** The end of an input batch: deferred data and ACKs go out (see TcpCoreOptions.onBatch). */
  batchEnd (now: number): void {
    this.batchPending = false
    if (this.batched.size === 0) return
    const conns = [...this.batched]
    this.batched.clear()
    for (const conn of conns) conn.batchEnd(now)
  }

  dataSent (conn: TcpConnection): void {
    if (this.onTurn === undefined) return
    const turn = this.turnSegments
    if (turn.size === 0) this.onTurn()
    turn.set(conn.remoteAddress, (turn.get(conn.remoteAddress) ?? 0) + 1)
    if (conn.turnMark !== this.turnNumber) {
      conn.turnMark = this.turnNumber
      conn.turnSent = 0
    }
    conn.turnSent++
  }

  /**
   * One more data segment of this connection fits in the current turn (options.maxBurst). If not,
   * the connection continues at turnEnd: a WireGuard peer reads the tunnel from a UDP socket whose
   * buffer (the kernel's default 208 KiB, ~90 datagrams) a whole window written in one turn
   * overflows. Per connection, not per peer: a peer's share split over hundreds of connections
   * held each one's loss recovery back for many turns (RTOs, and user timeouts at 200).
   */
  turnRoom (conn: TcpConnection): boolean {
    const cap = this.options.maxBurst
    if (this.onTurn === undefined || cap === 0 || conn.turnMark !== this.turnNumber || conn.turnSent < cap) return true
    this.turnWaiting.add(conn)
    return false
  }

  /** The turn is over: each peer's data segments of it go into tcp_bursts, and capped connections continue (see onTurn). */
  turnEnd (now: number): void {
    this.turnNumber++
    for (const segments of this.turnSegments.values()) {
      this.counters.bursts.inc(burstLabel(segments))
      if (segments > this.largestBurst) this.largestBurst = segments
    }
    this.turnSegments.clear()
    if (this.turnWaiting.size === 0) return
    const waiting = [...this.turnWaiting]
    this.turnWaiting.clear()
    for (const conn of waiting) conn.resume(now)
  }

  get timeWaitFull (): boolean {
    return this.timeWaitCount >= this.options.maxTimeWait
  }

  emit (datagram: Buffer): void {
    this.output(datagram)
  }

  nextIpIdent (): number {
    const id = this.ident
    this.ident = (this.ident + 1) & 0xffff
    return id
  }

  adjustMemory (delta: number): void {
    this.memoryUsed += delta
  }

  reschedule (conn: TcpConnection): void {
    if (conn.state === CLOSED) this.heap.remove(conn)
    else this.heap.set(conn, conn.nextDeadline())
  }

  stateChanged (conn: TcpConnection, from: TcpState, to: TcpState): void {
    const gauge = this.counters.connections
    if (from !== CLOSED) {
      this.stateCounts[from]--
      gauge.inc(STATE_NAMES[from], -1)
    }
    if (to !== CLOSED) {
      this.stateCounts[to]++
      gauge.inc(STATE_NAMES[to])
    }
    const peer = this.peers.get(conn.remoteAddress)
    const wasActive = from !== CLOSED && from !== TIME_WAIT
    const isActive = to !== CLOSED && to !== TIME_WAIT
    if (wasActive !== isActive) {
      const d = isActive ? 1 : -1
      this.activeCount += d
      if (peer !== undefined) peer.active += d
    }
    if (from === TIME_WAIT) this.timeWaitCount--
    if (to === TIME_WAIT) this.timeWaitCount++
    if (conn.passive && from === SYN_RECEIVED) this.halfOpen--
    if (conn.passive && to === SYN_RECEIVED) this.halfOpen++
  }

  release (conn: TcpConnection): void {
    this.heap.remove(conn)
    const peer = this.peers.get(conn.remoteAddress)
    if (peer === undefined || peer.conns.get(conn.key) !== conn) return
    peer.conns.delete(conn.key)
    this.connectionCount--
    if (peer.conns.size === 0) this.peers.delete(conn.remoteAddress)
  }

  accept (conn: TcpConnection): ConnectionHandler | null {
    const callback = this.listeners.get(conn.localPort)
    return callback === undefined ? null : callback(conn)
  }

  // ---- Segments in ----

  /** One IPv4 datagram carrying TCP. Never throws: bad input is counted and dropped. */
  input (ip: IPv4Parsed, datagram: Buffer, now: number): void {
    const c = this.counters
    c.segments.inc('in')
    let seg: TcpParsed
    try {
      if (ip.protocol !== IPPROTO_TCP) return drop(c, 'not_tcp')
      if (ip.dst !== this.localAddress) return drop(c, 'not_our_address')
      if (ip.isFragment) return drop(c, 'fragment')
      // RFC 9293 3.10.7.2 / RFC 1122 4.2.3.10: never talk to broadcast, multicast or unspecified sources.
      if (ip.src === 0 || ip.src === 0xffffffff || (ip.src >>> 28) === 0xe) return drop(c, 'bad_source')
      seg = parseTcp(datagram, ip.headerLen, ip.payloadLen, this.options.verifyChecksums ? { src: ip.src, dst: ip.dst } : undefined)
    } catch (err) {
      if (err instanceof WireError) return drop(c, err.code === 'tcp_checksum' ? 'bad_checksum' : err.code)
      return this.internalError(err)
    }
    if (seg.srcPort === 0 || seg.dstPort === 0) return drop(c, 'port_zero')
    try {
      this.dispatch(ip, seg, datagram, now)
    } catch (err) {
      this.internalError(err)
    }
  }

  private dispatch (ip: IPv4Parsed, seg: TcpParsed, datagram: Buffer, now: number): void {
    const c = this.counters
    const peer = this.peers.get(ip.src)
    const conn = peer?.conns.get(seg.srcPort * 65536 + seg.dstPort)
    if (conn !== undefined) {
      if (conn.state === TIME_WAIT && (seg.flags & (TCP_SYN | TCP_ACK | TCP_RST)) === TCP_SYN && this.timeWaitReusable(conn, seg)) {
        // RFC 6191 / RFC 9293 3.6.1: a new SYN above the old connection's sequence space ends TIME-WAIT.
        c.events.inc('time_wait_reused')
        conn.close(null, 'time_wait_reused', now)
      } else {
        conn.input(seg, datagram, now)
        return
      }
    }
    const accept = this.closed ? undefined : this.listeners.get(seg.dstPort)
    if (accept === undefined) {
      drop(c, 'no_connection')
      if ((seg.flags & TCP_RST) === 0) this.resetFor(seg, ip.src, now)
      return
    }
    // LISTEN (RFC 9293 3.10.7.2).
    if ((seg.flags & TCP_RST) !== 0) return drop(c, 'listen_rst')
    if ((seg.flags & TCP_ACK) !== 0) {
      drop(c, 'listen_ack')
      this.resetFor(seg, ip.src, now)
      return
    }
    if ((seg.flags & TCP_SYN) === 0) return drop(c, 'listen_no_syn')
    const o = this.options
    if (this.activeCount >= o.maxConnections) return drop(c, 'connection_limit')
    if (peer !== undefined && peer.active >= o.maxConnectionsPerPeer) return drop(c, 'peer_connection_limit')
    if (this.halfOpen >= o.maxHalfOpen) return drop(c, 'syn_backlog_full')
    const created = this.create(ip.src, seg.srcPort, seg.dstPort, true)
    c.opened.inc('passive')
    const [isn, tsOffset] = this.isn.generate(this.localAddress, seg.dstPort, ip.src, seg.srcPort, now)
    created.acceptSyn(seg, isn, tsOffset, now)
  }

  private timeWaitReusable (conn: TcpConnection, seg: TcpParsed): boolean {
    if (conn.timestamps && seg.timestamp) return seqGt(seg.tsVal, conn.tsRecent)
    return seqGt(seg.seq, conn.rcv.nxt)
  }

  private resetFor (seg: TcpParsed, remote: number, now: number): void {
    if (now - this.rstWindowStart >= 1000) {
      this.rstWindowStart = now
      this.rstCount = 0
    }
    if (this.rstCount >= this.options.rstsPerSecond) {
      this.counters.dropped.inc('rst_rate_limited')
      return
    }
    this.rstCount++
    this.counters.events.inc('rst_sent')
    this.counters.segments.inc('out')
    this.output(buildResetFor(seg, this.localAddress, remote, this.nextIpIdent()))
  }

  private internalError (err: unknown): void {
    this.counters.dropped.inc('internal_error')
    this.logger?.error({ err }, 'TCP input failed')
  }

  // ---- Opening and listening ----

  /** Active open to remoteAddress:remotePort. Throws TcpError (EMFILE, EADDRNOTAVAIL, ENETDOWN). */
  connect (remoteAddress: number, remotePort: number, handler: ConnectionHandler, now: number, opts: ConnectionSettings = {}): TcpConnection {
    remoteAddress >>>= 0
    if (this.closed) throw new TcpError('ENETDOWN', 'connect', remoteAddress, remotePort)
    if (!Number.isInteger(remotePort) || remotePort < 1 || remotePort > 65535) throw new TcpError('EINVAL', 'connect', remoteAddress, remotePort, 'bad port')
    const o = this.options
    if (this.activeCount >= o.maxConnections) throw new TcpError('EMFILE', 'connect', remoteAddress, remotePort)
    const peer = this.peers.get(remoteAddress)
    if (peer !== undefined && peer.active >= o.maxConnectionsPerPeer) throw new TcpError('EMFILE', 'connect', remoteAddress, remotePort, 'per-peer limit')
    const localPort = this.ephemeralPort(peer, remotePort)
    if (localPort < 0) throw new TcpError('EADDRNOTAVAIL', 'connect', remoteAddress, remotePort)
    const conn = this.create(remoteAddress, remotePort, localPort, false)
    conn.configure(handler, opts)
    this.counters.opened.inc('active')
    const [isn, tsOffset] = this.isn.generate(this.localAddress, localPort, remoteAddress, remotePort, now)
    conn.open(isn, tsOffset, now)
    return conn
  }

  /** Accepts connections to `port` on our address. */
  listen (port: number, accept: AcceptCallback): void {
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new RangeError(`bad TCP port ${port}`)
    if (this.listeners.has(port)) throw new Error(`TCP port ${port} is already listening`)
    this.listeners.set(port, accept)
  }

  unlisten (port: number): void {
    this.listeners.delete(port)
  }

  /** RFC 6056: a random start in the range, then the next free port for this peer and remote port. */
  private ephemeralPort (peer: PeerTable | undefined, remotePort: number): number {
    const o = this.options
    const range = o.ephemeralPortMax - o.ephemeralPortMin + 1
    const start = Math.floor(this.random() * range)
    for (let i = 0; i < range; i++) {
      const port = o.ephemeralPortMin + ((start + i) % range)
      if (this.listeners.has(port)) continue
      if (peer === undefined || !peer.conns.has(remotePort * 65536 + port)) return port
    }
    return -1
  }

  private create (remoteAddress: number, remotePort: number, localPort: number, passive: boolean): TcpConnection {
    let peer = this.peers.get(remoteAddress)
    if (peer === undefined) {
      peer = { conns: new Map(), active: 0 }
      this.peers.set(remoteAddress, peer)
    }
    const key = remotePort * 65536 + localPort
    const conn = new TcpConnection(this, { localPort, remoteAddress, remotePort, key }, passive)
    peer.conns.set(key, conn)
    this.connectionCount++
    return conn
  }

  // ---- Time ----

  /** Runs every timer due at `now`. */
  poll (now: number): void {
    let guard = this.heap.size * 4 + 16
    while (this.heap.minKey <= now && guard-- > 0) {
      const conn = this.heap.peek()!
      try {
        conn.onTimer(now)
      } catch (err) {
        this.internalError(err)
      }
      if (conn.heapIndex >= 0 && conn.heapKey <= now) {
        // A deadline that did not move would spin: push it forward and count it.
        this.counters.events.inc('timer_stalled')
        this.heap.set(conn, now + 1)
      }
    }
  }

  /** Earliest deadline over all connections (Infinity when idle). */
  nextDeadline (): number {
    return this.heap.minKey
  }

  // ---- Introspection and shutdown ----

  /** Connections in the table, TIME-WAIT included. */
  get size (): number {
    return this.connectionCount
  }

  connectionsByState (): Record<string, number> {
    const out: Record<string, number> = {}
    for (let s = 0; s < STATE_NAMES.length; s++) if (this.stateCounts[s] > 0) out[STATE_NAMES[s]] = this.stateCounts[s]
    return out
  }

  /** The connection for a 4-tuple (our address implied), if any. */
  find (remoteAddress: number, remotePort: number, localPort: number): TcpConnection | undefined {
    return this.peers.get(remoteAddress >>> 0)?.conns.get(remotePort * 65536 + localPort)
  }

  /** Every connection (a snapshot). */
  connections (): TcpConnection[] {
    const out: TcpConnection[] = []
    for (const peer of this.peers.values()) for (const conn of peer.conns.values()) out.push(conn)
    return out
  }

  /** Stops listening and resets every connection. */
  close (now: number): void {
    this.closed = true
    this.listeners.clear()
    for (const conn of this.connections()) {
      const handler = conn.handler
      conn.abort(now)
      handler?.onClose(new TcpError('ENETDOWN', 'read', conn.remoteAddress, conn.remotePort))
    }
  }
}

function drop (c: TcpCounters, reason: string): void {
  c.dropped.inc(reason)
}
