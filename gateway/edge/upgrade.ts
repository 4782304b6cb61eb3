/**
 * An HTTP/1.1 upgrade (WebSocket) through the edge: the same exchange as an ordinary request
 * (exchange.ts: admission, slots, the route's undici pool or the relay target's, the first-byte
 * deadline, the edge's pages, the access log and traffic record), answered on the raw connection.
 * After the origin's 101 the two connections are piped both ways with their bytes counted, until
 * either closes or the idle timeout passes without a byte. An origin that answers without
 * switching has its response relayed, then the connection is closed.
 */
import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Dispatcher } from 'undici'
import { Exchange, noop } from './exchange.ts'
import type { ReverseProxy } from './proxy.ts'

/** How long an answered connection may wait for the client to close it before we do. */
const LINGER_MS = 5_000

export class UpgradeExchange extends Exchange {
  private headWritten = false
  /** The origin's connection once it switched protocols. */
  private upstream: Duplex | undefined

  constructor (proxy: ReverseProxy, req: http.IncomingMessage, private readonly socket: Duplex, private readonly head: Buffer) {
    super(proxy, req)
    this.upgrade = req.headers.upgrade
  }

  start (): void {
    this.socket.on('error', noop)
    this.socket.once('close', () => { this.upstream?.destroy(); this.closed() })
    this.begin()
  }

  /** The origin switched protocols: its 101 as it sent it, then bytes both ways. */
  onRequestUpgrade (controller: Dispatcher.DispatchController, statusCode: number, _headers: IncomingHttpHeaders, upstream: Duplex): void {
    const { socket } = this
    upstream.on('error', noop)
    if (socket.destroyed) { upstream.destroy(); return }
    this.switched(statusCode)
    this.headWritten = true
    this.upstream = upstream
    const raw = (controller.rawHeaders ?? []) as Array<Buffer | string>
    const fields: Array<[string, string]> = []
    for (let i = 0; i + 1 < raw.length; i += 2) fields.push([raw[i].toString('latin1'), raw[i + 1].toString('latin1')])
    socket.write(rawHead(statusCode, fields), 'latin1')
    if (this.head.length > 0) { upstream.write(this.head); this.crossed(this.head.length, 0) }
    // Bytes the origin sent after its 101 are read first from `upstream` (undici puts them back).
    socket.on('data', (c: Buffer) => { this.crossed(c.length, 0) })
    upstream.on('data', (c: Buffer) => { this.crossed(0, c.length) })
    // pipe() (not pipeline) keeps the listener count on the client socket low: its one close
    // handler (start) ends both directions.
    socket.pipe(upstream)
    upstream.pipe(socket)
    upstream.once('close', () => { socket.destroy() })
  }

  /** After the switch only the idle watchdog aborts: it ends both connections. */
  protected override abort (err: Error): void {
    if (this.upstream === undefined) { super.abort(err); return }
    this.failure ??= err.message
    this.socket.destroy()
    this.upstream.destroy()
  }

  protected headSent (): boolean { return this.headWritten }
  /** Switched (the pipe ran its course), or the answer written to its end. */
  protected finished (): boolean { return this.upstream !== undefined || this.socket.writableFinished }
  protected gone (): boolean { return this.socket.destroyed }
  protected cut (): void { this.socket.destroy() }

  /** The origin answered without switching: relayed, and the connection closes after it. */
  protected writeHead (statusCode: number, _statusMessage: string, headers: OutgoingHttpHeaders): void {
    this.headWritten = true
    this.socket.write(rawHead(statusCode, fieldsOf({ ...headers, connection: 'close' })), 'latin1')
  }

  protected writeBody (chunk: Buffer): boolean { return this.socket.write(chunk) }
  protected whenDrained (resume: () => void): void { this.socket.once('drain', resume) }
  protected endBody (): void { this.socket.end(); this.linger() }

  protected writeAnswer (status: number, headers: OutgoingHttpHeaders, body: string): void {
    this.headWritten = true
    this.socket.write(rawHead(status, fieldsOf({ ...headers, connection: 'close' })), 'latin1')
    this.socket.end(body)
    this.linger()
  }

  private linger (): void {
    setTimeout(() => { this.socket.destroy() }, LINGER_MS).unref()
  }
}

function fieldsOf (headers: OutgoingHttpHeaders): Array<[string, string]> {
  const fields: Array<[string, string]> = []
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue
    if (Array.isArray(value)) for (const v of value) fields.push([name, v])
    else fields.push([name, String(value)])
  }
  return fields
}

/**
 * An HTTP/1.1 response head, to be written as latin1 as field values are read (the reason phrase
 * is ours: RFC 9112 4, clients ignore it).
 */
function rawHead (status: number, fields: Iterable<[string, string]>): string {
  let head = `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n`
  for (const [name, value] of fields) head += `${name}: ${value}\r\n`
  return head + '\r\n'
}
