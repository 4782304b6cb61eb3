/**
 * The application events of one connection. They are queued while a call runs and delivered at
 * its end, so a handler that writes, ends or destroys from inside a callback never re-enters a
 * half-processed segment; with batched input, data alone waits for the end of the batch and
 * reaches the application as one chunk.
 */
import type { ConnectionHandler, ConnectionHost, TcpConnection } from './connection.ts'
import type { TcpError } from './errors.ts'

export class ApplicationEvents {
  private readonly host: ConnectionHost
  private readonly conn: TcpConnection
  private _handler: ConnectionHandler | null = null
  private readonly data: Buffer[] = []
  private _pendingBytes = 0
  private connect = false
  private end = false
  private writable = false
  private close = false
  private closeError: TcpError | null = null
  private delivering = false
  /** Data events wait for the end of the input batch (delivered as one chunk). */
  private dataAtBatchEnd = false

  constructor (host: ConnectionHost, conn: TcpConnection) {
    this.host = host
    this.conn = conn
  }

  /** The application side, or null once it left or was told the connection closed. */
  get handler (): ConnectionHandler | null { return this._handler }
  /** Bytes queued for the application and not yet delivered. */
  get pendingBytes (): number { return this._pendingBytes }

  attach (handler: ConnectionHandler): void {
    this._handler = handler
  }

  /** The application left: nothing more is delivered. */
  detach (): void {
    this._handler = null
    this.discard()
  }

  queueData (data: Buffer): void {
    if (this._handler === null) return
    this.data.push(data)
    this._pendingBytes += data.length
  }

  queueConnect (): void {
    this.connect = true
  }

  queueEnd (): void {
    this.end = true
  }

  queueWritable (): void {
    this.writable = true
  }

  /** The connection is finished for the application (only the first call counts). */
  queueClose (err: TcpError | null): void {
    if (this.close) return
    this.close = true
    this.closeError = err
  }

  /** The end of an entry point: deliver what is queued (unless this runs inside a delivery). */
  flush (): void {
    if (!this.delivering) this.deliver(false)
  }

  /** The end of an input batch: the data held for it goes now. */
  batchEnd (): void {
    if (!this.dataAtBatchEnd) return
    this.dataAtBatchEnd = false
    if (!this.delivering) this.deliver(true)
  }

  private discard (): void {
    this.data.length = 0
    this._pendingBytes = 0
    this.connect = false
    this.end = false
    this.writable = false
    this.close = false
  }

  private deliver (batchEnd: boolean): void {
    if (!batchEnd && this.host.batching && this.data.length > 0 && !this.connect && !this.end &&
      !this.writable && !this.close && this._handler !== null) {
      // Only data: it waits for the end of the batch and goes to the application in one chunk.
      if (!this.dataAtBatchEnd) {
        this.dataAtBatchEnd = true
        this.host.defer(this.conn)
      }
      return
    }
    this.dataAtBatchEnd = false
    this.delivering = true
    try {
      while (this._handler !== null) {
        if (this.connect) {
          this.connect = false
          this._handler.onConnect()
          continue
        }
        if (this.data.length > 0) {
          // Nothing adds data while we deliver (input never runs inside a handler callback).
          const data = this.data
          if (data.length > 1) {
            // One chunk: per-chunk costs above us (stream, HTTP parser) are paid once per batch.
            const chunk = Buffer.concat(data, this._pendingBytes)
            data.length = 0
            this._pendingBytes = 0
            this._handler.onData(chunk)
            continue
          }
          for (let i = 0; i < data.length && this._handler !== null; i++) {
            this._pendingBytes -= data[i].length
            this._handler.onData(data[i])
          }
          data.length = 0
          this._pendingBytes = 0
          continue
        }
        if (this.end) {
          this.end = false
          this._handler.onEnd()
          continue
        }
        if (this.writable) {
          this.writable = false
          this._handler.onWritable()
          continue
        }
        if (this.close) {
          const handler = this._handler
          this._handler = null
          handler.onClose(this.closeError)
          this.closeError = null
        }
        break
      }
      if (this._handler === null) this.discard()
    } finally {
      this.delivering = false
    }
  }
}
