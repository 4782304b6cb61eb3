/**
 * The shell around the sans-IO core: it owns the clock and exactly one timer (armed for the
 * earliest deadline of all connections), batches a tick's writes into one flush per connection,
 * and wraps connections in TcpSocket Duplex streams. See index.ts for the public API.
 */
import type { Logger } from 'pino'
import type { Metrics } from '../../metrics.ts'
import type { IPv4Parsed } from '../../../proto/wire/ipv4.ts'
import { parseIPv4Address } from '../../../proto/wire/ipv4.ts'
import { TcpCore } from './core.ts'
import type { TcpConnection } from './connection.ts'
import type { TcpOptions } from './options.ts'
import { TcpError } from './errors.ts'
import { TcpSocket, type SocketHost } from './socket.ts'

export interface TcpStackOptions {
  /** Our tunnel address, as a dotted quad or uint32. */
  localAddress: number | string
  /** Where outgoing IPv4 datagrams go (the IpLayer). */
  ip: { send (datagram: Buffer): void }
  metrics: Metrics
  logger?: Logger
  options?: Partial<TcpOptions>
  /** Monotonic clock in ms (default performance.now). Every deadline uses it. */
  clock?: () => number
}

export interface TcpConnectOptions {
  /** Peer tunnel address: a dotted quad (no name resolution) or uint32. */
  host?: string | number
  port: number
  /** Idle timeout as socket.setTimeout (ms). */
  timeout?: number
  noDelay?: boolean
  keepAlive?: boolean
  keepAliveInitialDelay?: number
  /** RFC 5482 user timeout (ms, 0 disables). */
  userTimeout?: number
  allowHalfOpen?: boolean
}

export interface TcpListenOptions {
  allowHalfOpen?: boolean
  noDelay?: boolean
}

export class TcpStack implements SocketHost {
  readonly core: TcpCore
  private readonly clock: () => number
  private timer: NodeJS.Timeout | null = null
  private timerAt = Infinity
  private refs = 0
  /** A ref'd timer that keeps the event loop alive while a ref'd socket exists (as a net.Socket handle does). */
  private hold: NodeJS.Timeout | null = null
  private readonly dirty = new Set<TcpConnection>()
  private flushQueued = false
  /** The timer fired and its expiry waits for the check phase (onTimer). */
  private expiryQueued = false
  private closed = false

  constructor (opts: TcpStackOptions) {
    const localAddress = typeof opts.localAddress === 'number' ? opts.localAddress : parseIPv4Address(opts.localAddress)
    this.clock = opts.clock ?? (() => performance.now())
    const ip = opts.ip
    this.core = new TcpCore({
      localAddress,
      send: datagram => ip.send(datagram),
      metrics: opts.metrics,
      logger: opts.logger,
      options: opts.options,
      // Everything node delivers in one poll phase (a socket read loop) is one batch.
      onBatch: () => { setImmediate(this.onBatchEnd) },
      // The turn's datagrams are all in the socket's queue by the check phase.
      onTurn: () => { setImmediate(this.onTurnEnd) },
    })
  }

  now (): number {
    return this.clock()
  }

  /**
   * IpLayer handler for protocol 6. `_now` is ignored: the stack reads its own clock so segment
   * times and timer deadlines always agree.
   */
  input (ip: IPv4Parsed, datagram: Buffer, _now?: number): void {
    this.core.input(ip, datagram, this.clock())
    this.arm()
  }

  /** Opens a connection to a peer's tunnel address; errors arrive as the socket's 'error' event. */
  connect (opts: TcpConnectOptions, connectListener?: () => void): TcpSocket {
    const socket = new TcpSocket(this, { allowHalfOpen: opts.allowHalfOpen })
    if (connectListener !== undefined) socket.once('connect', connectListener)
    if (opts.timeout !== undefined && opts.timeout > 0) socket.setTimeout(opts.timeout)
    const port = Number(opts.port)
    let address: number
    try {
      address = typeof opts.host === 'number' ? opts.host >>> 0 : parseIPv4Address(opts.host ?? '')
    } catch {
      process.nextTick(() => socket.destroy(new TcpError('EINVAL', 'connect', undefined, port, `not an IPv4 address: ${String(opts.host)}`)))
      return socket
    }
    let conn: TcpConnection
    try {
      conn = this.core.connect(address, port, socket, this.clock(), {
        noDelay: opts.noDelay,
        keepAlive: opts.keepAlive,
        keepAliveIdle: opts.keepAliveInitialDelay,
        userTimeout: opts.userTimeout,
      })
    } catch (err) {
      process.nextTick(() => socket.destroy(err as Error))
      return socket
    }
    socket.attach(conn)
    this.arm()
    return socket
  }

  /**
   * net.createConnection-shaped factory for http.Agent (`new http.Agent({...})` with
   * `agent.createConnection = stack.createConnection`, or as a request's createConnection option).
   */
  readonly createConnection = (opts: TcpConnectOptions, connectListener?: () => void): TcpSocket => this.connect(opts, connectListener)

  /** Accepts connections on our address at `port`; each becomes a TcpSocket. */
  listen (port: number, onConnection: (socket: TcpSocket) => void, opts: TcpListenOptions = {}): void {
    this.core.listen(port, conn => {
      const socket = new TcpSocket(this, { allowHalfOpen: opts.allowHalfOpen })
      socket.attach(conn)
      socket.connecting = false
      if (opts.noDelay !== undefined) socket.setNoDelay(opts.noDelay)
      // Outside the segment being processed: the application may write or destroy at once.
      process.nextTick(onConnection, socket)
      return socket
    })
  }

  unlisten (port: number): void {
    this.core.unlisten(port)
  }

  /** Resets every connection and stops the timer. */
  close (): void {
    if (this.closed) return
    this.closed = true
    this.core.close(this.clock())
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.timerAt = Infinity
    if (this.hold !== null) clearInterval(this.hold)
    this.hold = null
  }

  // ---- SocketHost ----

  scheduleFlush (conn: TcpConnection): void {
    this.dirty.add(conn)
    if (!this.flushQueued) {
      this.flushQueued = true
      process.nextTick(this.flushDirty)
    }
  }

  afterCall (): void {
    this.arm()
  }

  refChanged (delta: number): void {
    this.refs += delta
    if (this.refs > 0 && this.hold === null && !this.closed) {
      this.hold = setInterval(noop, 0x7fffffff)
    } else if (this.refs <= 0 && this.hold !== null) {
      clearInterval(this.hold)
      this.hold = null
    }
  }

  private readonly flushDirty = (): void => {
    this.flushQueued = false
    const now = this.clock()
    for (const conn of this.dirty) conn.flush(now)
    this.dirty.clear()
    this.arm()
  }

  /** Keeps the one timer armed no later than the core's earliest deadline. */
  private arm (): void {
    if (this.closed || this.expiryQueued) return
    const next = this.core.nextDeadline()
    if (next === Infinity) {
      if (this.timer !== null) {
        clearTimeout(this.timer)
        this.timer = null
        this.timerAt = Infinity
      }
      return
    }
    if (this.timer !== null && this.timerAt <= next) return
    if (this.timer !== null) clearTimeout(this.timer)
    this.timerAt = next
    this.timer = setTimeout(this.onTimer, Math.max(0, next - this.clock()))
    this.timer.unref()
  }

  private readonly onTurnEnd = (): void => {
    if (this.closed) return
    this.core.turnEnd(this.clock())
    this.arm()
  }

  private readonly onBatchEnd = (): void => {
    if (this.closed) return
    this.core.batchEnd(this.clock())
    this.arm()
  }

  /**
   * The deadline came: expire timers after the next poll for I/O, not now. libuv runs due timers
   * before it reads the sockets, so after the event loop was held (a long task, or the process not
   * scheduled on a loaded machine) the ACKs that came meanwhile still wait in the WireGuard socket
   * while the retransmission timer fires: a spurious RTO (RFC 6298 5.4-5.6: cwnd down to one
   * segment and every segment in flight sent again) for data the peer has. With an immediate
   * pending, the poll phase does not wait and reads what is there; the check phase then runs this.
   */
  private readonly onTimer = (): void => {
    this.timer = null
    this.timerAt = Infinity
    this.expiryQueued = true
    setImmediate(this.expire)
  }

  private readonly expire = (): void => {
    this.expiryQueued = false
    if (this.closed) return
    this.core.poll(this.clock())
    this.arm()
  }
}

function noop (): void {}
