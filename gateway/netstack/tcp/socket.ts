/**
 * A node-compatible stream socket over one TcpConnection: a Duplex with net.Socket's surface
 * (connect/ready/timeout events, setNoDelay, setKeepAlive, setTimeout, ref/unref, address(),
 * remote/local address and port, bytesRead/bytesWritten, destroySoon, resetAndDestroy), so
 * http.Agent, http.Server (via server.emit('connection', socket)) and proxy libraries use it as is.
 *
 * Backpressure: write() returns false once the connection's send buffer is full and the stream's
 * own buffer passes its high-water mark; 'drain' follows as the peer acknowledges data. Reading:
 * the advertised window shrinks by what sits unread in this stream, and reopens as it is read.
 * destroy() before end() resets the connection (the peer sees ECONNRESET); after end() the
 * connection finishes its orderly close on its own.
 *
 * End of stream: the peer's FIN becomes the readable side's end only once everything before it
 * has been read, and never inside the read() that takes the last bytes. A reader that takes the
 * last chunk and then stops reading (undici's HTTP/1 parser pausing under backpressure) sees
 * 'end' when it next reads, not while it is paused: undici 7 asserts that its parser is not
 * paused when the socket ends (nodejs/undici#5360, fixed only in undici 8, which needs Node 22),
 * and the failed assertion is an uncaught exception that ends the process.
 */
import { Duplex } from 'node:stream'
import type { ConnectionHandler, TcpConnection } from './connection.ts'
import { TcpError } from './errors.ts'
import { formatIPv4 } from '../../../proto/wire/ipv4.ts'

/** What a socket needs from the stack shell. */
export interface SocketHost {
  now (): number
  /** Flush this connection once the current tick's writes are in (cork-like batching). */
  scheduleFlush (conn: TcpConnection): void
  /** Re-arm the stack timer after a direct connection call. */
  afterCall (): void
  /** A socket started (+1) or stopped (-1) holding the event loop open. */
  refChanged (delta: number): void
}

export interface TcpSocketOptions {
  /** As net.Socket: when false (default), the writable side ends when the readable side ends. */
  allowHalfOpen?: boolean
  readableHighWaterMark?: number
  writableHighWaterMark?: number
}

type Callback = (err?: Error | null) => void

export class TcpSocket extends Duplex implements ConnectionHandler {
  connecting = true
  remoteAddress: string | undefined
  remotePort: number | undefined
  remoteFamily: string | undefined
  localAddress: string | undefined
  localPort: number | undefined
  bytesRead = 0
  /** Idle timeout set by setTimeout (ms, 0 = none). */
  timeout = 0
  private written = 0
  private conn: TcpConnection | null = null
  private readonly host: SocketHost
  private queued: Buffer[] = []
  private pendingIndex = 0
  private pendingOffset = 0
  private pendingCallback: Callback | null = null
  private finalCalled = false
  private idleTimer: NodeJS.Timeout | null = null
  private refed = false
  private noDelay: boolean | null = null
  private keepAlive: [boolean, number] | null = null
  /** The peer's FIN arrived while bytes before it were still unread. */
  private eofPending = false
  private eofScheduled = false

  constructor (host: SocketHost, opts: TcpSocketOptions = {}) {
    super({
      allowHalfOpen: opts.allowHalfOpen ?? false,
      readableHighWaterMark: opts.readableHighWaterMark ?? 64 * 1024,
      writableHighWaterMark: opts.writableHighWaterMark ?? 64 * 1024,
      decodeStrings: true,
    })
    this.host = host
    this.ref()
  }

  /** Binds the socket to its connection (the stack calls this once). */
  attach (conn: TcpConnection): void {
    this.conn = conn
    this.remoteAddress = formatIPv4(conn.remoteAddress)
    this.remotePort = conn.remotePort
    this.remoteFamily = 'IPv4'
    this.localAddress = formatIPv4(conn.localAddress)
    this.localPort = conn.localPort
    const now = this.host.now()
    if (this.noDelay !== null) conn.setNoDelay(this.noDelay, now)
    if (this.keepAlive !== null) conn.setKeepAlive(this.keepAlive[0], this.keepAlive[1], now)
  }

  /** The connection behind this socket (null once it is closed). */
  get connection (): TcpConnection | null {
    return this.conn
  }

  get bytesWritten (): number {
    return this.written + this.writableLength
  }

  /** As net.Socket: true until connected. */
  get pending (): boolean {
    return this.connecting
  }

  get readyState (): string {
    if (this.connecting) return 'opening'
    if (this.readable && this.writable) return 'open'
    if (this.readable) return 'readOnly'
    if (this.writable) return 'writeOnly'
    return 'closed'
  }

  get bufferSize (): number {
    return this.writableLength
  }

  // ---- ConnectionHandler (events from the connection) ----

  onConnect (): void {
    this.connecting = false
    this.touch()
    this.emit('connect')
    this.emit('ready')
  }

  onData (data: Buffer): void {
    this.bytesRead += data.length
    this.touch()
    this.push(data)
  }

  onEnd (): void {
    this.endOfStream()
  }

  onWritable (): void {
    this.pump()
  }

  onClose (err: TcpError | null): void {
    this.conn = null
    this.connecting = false
    this.clearIdle()
    if (this.pendingCallback !== null) {
      const cb = this.pendingCallback
      this.pendingCallback = null
      this.queued = []
      cb(err ?? new TcpError('EPIPE', 'write', undefined, undefined))
    }
    if (err !== null) this.destroy(err)
    else this.endOfStream()
  }

  /** The peer will send nothing more: end the readable side now if all is read, else once it is. */
  private endOfStream (): void {
    if (this.destroyed || this.readableEnded || this.eofPending) return
    if (this.readableLength === 0) this.push(null)
    else this.eofPending = true
  }

  unreadBytes (): number {
    return this.readableLength
  }

  // ---- Duplex implementation ----

  override _write (chunk: Buffer, _encoding: BufferEncoding, callback: Callback): void {
    this.queued = [chunk]
    this.startWrite(callback)
  }

  override _writev (chunks: Array<{ chunk: Buffer }>, callback: Callback): void {
    this.queued = chunks.map(c => c.chunk)
    this.startWrite(callback)
  }

  private startWrite (callback: Callback): void {
    this.pendingIndex = 0
    this.pendingOffset = 0
    this.pendingCallback = callback
    this.touch()
    this.pump()
  }

  /** Moves pending chunks into the send buffer as room allows; completes the write when all fit. */
  private pump (): void {
    const conn = this.conn
    if (this.pendingCallback === null) return
    if (conn === null || !conn.writable) {
      const cb = this.pendingCallback
      this.pendingCallback = null
      this.queued = []
      cb(new TcpError('EPIPE', 'write', conn?.remoteAddress, conn?.remotePort))
      return
    }
    while (this.pendingIndex < this.queued.length) {
      const chunk = this.queued[this.pendingIndex]
      const n = conn.write(chunk, this.pendingOffset, chunk.length)
      this.written += n
      this.pendingOffset += n
      if (this.pendingOffset < chunk.length) break
      this.pendingIndex++
      this.pendingOffset = 0
    }
    this.host.scheduleFlush(conn)
    if (this.pendingIndex >= this.queued.length) {
      const cb = this.pendingCallback
      this.pendingCallback = null
      this.queued = []
      cb()
    }
  }

  override _final (callback: Callback): void {
    this.finalCalled = true
    const conn = this.conn
    if (conn !== null) {
      conn.shutdown(this.host.now())
      this.host.afterCall()
    }
    callback()
  }

  override read (size?: number): any { // eslint-disable-line @typescript-eslint/no-explicit-any -- Readable's own signature
    const chunk: unknown = super.read(size)
    // The last bytes before a FIN were just taken: the end follows on a later turn, outside this
    // read(), so that it reaches the reader only when it reads again.
    if (this.eofPending && !this.eofScheduled && this.readableLength === 0) {
      this.eofScheduled = true
      process.nextTick(deliverPendingEof, this)
    }
    return chunk
  }

  /** @internal the deferred end of stream (see read()). */
  deliverPendingEof (): void {
    this.eofScheduled = false
    if (this.destroyed || this.readableLength !== 0) return // unread bytes again: a later read() schedules it
    this.eofPending = false
    this.push(null)
  }

  override _read (): void {
    const conn = this.conn
    if (conn === null) return
    conn.windowUpdate(this.host.now())
    this.host.afterCall()
  }

  override _destroy (err: Error | null, callback: Callback): void {
    this.clearIdle()
    const conn = this.conn
    this.conn = null
    if (conn !== null) {
      const now = this.host.now()
      // After end() the close is orderly and completes without us; otherwise reset the peer.
      if (this.finalCalled && err === null) conn.detach(now)
      else conn.abort(now)
      this.host.afterCall()
    }
    if (this.pendingCallback !== null) {
      this.pendingCallback = null
      this.queued = []
    }
    this.unref()
    callback(err)
  }

  // ---- net.Socket surface ----

  setNoDelay (noDelay = true): this {
    this.noDelay = noDelay
    if (this.conn !== null) {
      this.conn.setNoDelay(noDelay, this.host.now())
      this.host.afterCall()
    }
    return this
  }

  setKeepAlive (enable = false, initialDelay = 0): this {
    this.keepAlive = [enable, initialDelay]
    if (this.conn !== null) {
      this.conn.setKeepAlive(enable, initialDelay, this.host.now())
      this.host.afterCall()
    }
    return this
  }

  /** RFC 5482 user timeout for this connection (ms, 0 disables). */
  setUserTimeout (ms: number): this {
    this.conn?.setUserTimeout(ms)
    this.host.afterCall()
    return this
  }

  /** As net.Socket: emit 'timeout' after `ms` without activity (the socket stays open). */
  setTimeout (ms: number, callback?: () => void): this {
    this.timeout = ms
    if (callback !== undefined) {
      if (ms === 0) this.removeListener('timeout', callback)
      else this.once('timeout', callback)
    }
    this.clearIdle()
    if (ms > 0 && !this.destroyed) {
      this.idleTimer = setTimeout(() => {
        this.idleTimer = null
        this.emit('timeout')
      }, ms)
      this.idleTimer.unref()
    }
    return this
  }

  address (): { address: string, family: string, port: number } | Record<string, never> {
    if (this.localAddress === undefined || this.localPort === undefined) return {}
    return { address: this.localAddress, family: 'IPv4', port: this.localPort }
  }

  ref (): this {
    if (!this.refed && !this.destroyed) {
      this.refed = true
      this.host.refChanged(1)
    }
    return this
  }

  unref (): this {
    if (this.refed) {
      this.refed = false
      this.host.refChanged(-1)
    }
    return this
  }

  /** As net.Socket: end, then destroy once everything is written. */
  destroySoon (): void {
    if (this.writable) this.end()
    if (this.writableFinished) this.destroy()
    else this.once('finish', () => this.destroy())
  }

  /** As net.Socket: close with RST now. */
  resetAndDestroy (): this {
    this.finalCalled = false
    this.destroy()
    return this
  }

  private touch (): void {
    this.idleTimer?.refresh()
  }

  private clearIdle (): void {
    if (this.idleTimer !== null) {
      clearTimeout(this.idleTimer)
      this.idleTimer = null
    }
  }
}

function deliverPendingEof (socket: TcpSocket): void {
  socket.deliverPendingEof()
}
