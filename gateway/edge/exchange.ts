/**
 * One request relayed to the origin (reverse proxy, proxy.ts): the exchange's state, its undici
 * dispatch handler and its watchdog, from admission to the access-log line. `Exchange` is what
 * ordinary requests and upgrades share (admission, slots, the upstream dispatch, timers, the edge's
 * pages, the log); `RequestExchange` answers through the server's response object, and
 * `UpgradeExchange` (upgrade.ts) writes to the raw connection of an HTTP/1.1 upgrade.
 */
import http, { type IncomingHttpHeaders, type OutgoingHttpHeaders } from 'node:http'
import http2 from 'node:http2'
import type { Readable } from 'node:stream'
import type { Dispatcher } from 'undici'
import { randomBytes } from 'node:crypto'
import type { Route } from './routes.ts'
import { EdgeTimeout, type SlotGrant } from './upstream.ts'
import { downstreamResponseHeaders, publicAuthority, relayedRequestHeaders, upstreamRequestHeaders } from './headers.ts'
import type { RelayTarget } from './relay.ts'
import { clientKey, type UploadInProgress } from './limits.ts'
import { controlPage, pageHeaders, pageStatus, renderPage, type EdgePage } from './pages.ts'
import type { ReverseProxy } from './proxy.ts'

/**
 * RFC 6797 6.1: on control's names (dashboard and API) browsers must use HTTPS for a year. Sent
 * over TLS only (RFC 6797 7.2: never on plain HTTP, where the listener redirects).
 */
export const CONTROL_HSTS = 'max-age=31536000'

export type EdgeRequest = http.IncomingMessage | http2.Http2ServerRequest
export type EdgeResponse = http.ServerResponse | http2.Http2ServerResponse

/** Request IDs: a per-process random prefix and a counter (unique, cheap, sortable per process). */
const ID_PREFIX = randomBytes(4).toString('hex')
let idCounter = 0
export function nextRequestId (): string {
  idCounter++
  return `${ID_PREFIX}-${idCounter.toString(36)}`
}

/** A relayed request keeps the id its first gateway gave it (one id across the fleet's logs). */
export function relayedRequestId (req: EdgeRequest): string {
  const id = req.headers['x-request-id']
  return typeof id === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(id) ? id : nextRequestId()
}

/** The page for a refused slot: the instance is full (503) or this client holds its share (429). */
export function refusalPage (grant: Exclude<SlotGrant, 'granted'>): EdgePage {
  return grant === 'client-full' ? 'client-busy' : 'busy'
}

/** An error as one line of the access log. */
export function errorText (err: unknown): string {
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code
    return code !== undefined ? `${code}: ${err.message}` : err.message
  }
  return String(err)
}

/** Methods whose request has a body only when framing headers say so (HTTP/1) or DATA follows (HTTP/2). */
function hasBody (req: EdgeRequest): boolean {
  if (req.httpVersionMajor >= 2) return !(req as http2.Http2ServerRequest).stream.endAfterHeaders
  const h = req.headers
  if (h['transfer-encoding'] !== undefined) return true
  const len = h['content-length']
  return len !== undefined && len !== '0'
}

/** Which deadline an exchange's watchdog enforces. */
const enum Phase { Sending, Waiting, Receiving }

/**
 * One exchange with the origin: its state and its undici dispatch handler. A class rather than
 * closures: one object per request, methods shared. Subclasses say how the client is answered.
 */
export abstract class Exchange implements Dispatcher.DispatchHandler, UploadInProgress {
  private readonly started = performance.now()
  private readonly startedAt = Date.now()
  private readonly requestId: string
  private readonly hostHeader: string | undefined
  private readonly clientIp: string
  private readonly client: string
  /** The token of an HTTP/1.1 upgrade request (undici sends it with `Connection: upgrade`). */
  protected upgrade: string | undefined
  private status = 0
  private bytesIn = 0
  private bytesOut = 0
  protected failure: string | undefined
  private route: Route | undefined
  /** Fleet: the gateway this exchange is relayed to (undefined: direct). */
  private target: RelayTarget | undefined
  /** The Host names control's route: HSTS on every answer, control's wording on edge pages. */
  private control = false
  private slot = false
  private withBody = false
  private headers: Record<string, string | string[]> | undefined
  // Per attempt (a reset pooled connection may get a second one).
  private attempt = 0
  private controller: Dispatcher.DispatchController | undefined
  private pendingAbort: Error | undefined
  private responded = false
  private upstreamComplete = false
  private answered = false // we answered the client ourselves: later upstream errors are moot
  private cutByEdge = false // the edge destroyed the response: a close then is not the client's
  private waitingForDrain = false
  // One watchdog timer, re-armed lazily: idle while the request body goes up, first byte (504)
  // once it is all sent, idle again while the response (or an upgraded connection) flows.
  private phase = Phase.Waiting
  private lastActivity = 0
  private watchdog: NodeJS.Timeout | undefined
  private watchdogAt = 0

  constructor (protected readonly proxy: ReverseProxy, protected readonly req: EdgeRequest) {
    this.requestId = proxy.relayed ? relayedRequestId(req) : nextRequestId()
    this.hostHeader = req.headers[':authority'] as string | undefined ?? req.headers.host
    this.clientIp = proxy.clientIpOf(req)
    this.client = clientKey(this.clientIp)
  }

  // How the client is answered (the server's response object, or an upgrade's raw connection).
  /** The head of an answer has gone to the client: a page can no longer replace it. */
  protected abstract headSent (): boolean
  /** The client's side was written to its end. */
  protected abstract finished (): boolean
  /** The client's side is destroyed. */
  protected abstract gone (): boolean
  /** The origin's response head (may throw for a field the client's side refuses). */
  protected abstract writeHead (statusCode: number, statusMessage: string, headers: OutgoingHttpHeaders): void
  /** A response body chunk; false: the client's buffer is full. */
  protected abstract writeBody (chunk: Buffer): boolean
  /** Call `resume` once the client's buffer has room again. */
  protected abstract whenDrained (resume: () => void): void
  protected abstract endBody (): void
  /** One of the edge's own answers (status, fields, body; the body is left out for HEAD). */
  protected abstract writeAnswer (status: number, headers: OutgoingHttpHeaders, body: string): void
  /** Cut the client's side: it never ends as a complete response. */
  protected abstract cut (): void

  /** Admission, a slot, then the request to the origin. Call once the client's side is watched. */
  protected begin (): void {
    const { req, proxy } = this
    const admitted = proxy.admit(req, this.hostHeader)
    if ('page' in admitted) { this.control = admitted.control; this.answer(admitted.page); return }
    const route = this.route = admitted.route
    this.control = route.control === true
    // `OPTIONS *` asks about the server as a whole (RFC 9110 9.3.7), and the HTTP client cannot
    // send a target that is not a path: the edge answers it (no upstream slot taken).
    if (req.url === '*') {
      this.status = 204
      this.writeAnswer(204, { allow: 'GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS', 'x-request-id': this.requestId, ...(this.control ? { 'strict-transport-security': CONTROL_HSTS } : {}) }, '')
      return
    }
    const grant = proxy.pool.tryAcquire(route, this.client)
    if (grant !== 'granted') { this.answer(refusalPage(grant), { 'retry-after': proxy.retryAfter }); return }
    this.slot = true
    this.target = proxy.relayTarget(route, req) ?? undefined
    if (this.target === undefined && route.remote === true) { this.answer('offline'); return }
    // Connection and Upgrade are hop-by-hop: undici writes them for an upgrade.
    this.headers = (proxy.relayed
      ? relayedRequestHeaders(req.headers)
      : upstreamRequestHeaders(req.headers, {
        clientIp: this.clientIp, host: publicAuthority(this.hostHeader!, 'https'), proto: 'https', requestId: this.requestId,
      })) as Record<string, string | string[]>
    // An upgrade's body bytes (if any) are the connection's `head`, never the request stream.
    this.withBody = this.upgrade === undefined && hasBody(req)
    if (this.withBody) {
      req.once('end', () => { this.requestSent() })
      proxy.uploads?.watch(this)
    }
    this.send()
  }

  private send (): void {
    const { req } = this
    this.controller = undefined
    this.pendingAbort = undefined
    this.responded = false
    if (this.withBody) {
      this.enter(Phase.Sending)
    } else {
      this.enter(Phase.Waiting)
      // Not an upgrade's: resuming its stream would set the raw connection flowing before the pipe.
      if (this.attempt === 0 && this.upgrade === undefined) req.resume()
    }
    try {
      const dispatcher = this.target?.dispatcher ?? this.proxy.pool.dispatcherFor(this.route!)
      dispatcher.dispatch({
        method: req.method ?? 'GET',
        path: req.url ?? '/',
        headers: this.headers,
        // Read as the client sends it (backpressure). (undici takes async iterables; its types
        // list only streams.)
        body: this.withBody ? this.countedBody() as unknown as Readable : null,
        upgrade: this.upgrade,
      }, this)
    } catch (err) {
      this.disarm()
      this.failure = errorText(err)
      this.answer('offline')
    }
  }

  /** The request body as undici reads it: each chunk counted and keeping the idle watchdog fed. */
  private async * countedBody (): AsyncGenerator<Buffer> {
    for await (const chunk of this.req as AsyncIterable<Buffer>) {
      this.bytesIn += chunk.length
      this.lastActivity = performance.now()
      yield chunk
    }
  }

  private requestSent (): void {
    this.proxy.uploads?.unwatch(this)
    // Not once the exchange is over or answered by us: an HTTP/2 request body also ends when its
    // stream closes, and a first-byte deadline armed then would only hold the exchange for nothing.
    if (!this.slot || this.answered) return
    if (!this.responded && this.phase === Phase.Sending) this.enter(Phase.Waiting)
  }

  bytesReceived (): number {
    return this.bytesIn
  }

  /** Sending the body, no answer yet, the upstream request under way and nothing of the body left unread. */
  waitingForClient (): boolean {
    return this.phase === Phase.Sending && !this.responded && !this.answered && this.controller !== undefined && this.req.readableLength === 0
  }

  slotsScarce (): boolean {
    return this.route !== undefined && this.proxy.slotsScarce(this.route)
  }

  /** The body stalled while slots are scarce: 408, and the slot goes back when the response closes. */
  endSlowUpload (): void {
    this.failure = 'slow upload while the instance\'s slots are scarce'
    this.answered = true
    this.answer('slow-upload')
  }

  private enter (phase: Phase): void {
    const now = performance.now()
    this.phase = phase
    this.lastActivity = now
    const at = now + (phase === Phase.Waiting ? this.proxy.upstreamTimeoutMs : this.proxy.idleTimeoutMs)
    // A watchdog already due no later than this deadline checks it then; an earlier one is needed now.
    if (this.watchdog !== undefined && this.watchdogAt <= at) return
    this.arm(at - now, at)
  }

  private arm (ms: number, at: number): void {
    clearTimeout(this.watchdog)
    this.watchdogAt = at
    this.watchdog = setTimeout(watchdogFired, ms, this)
  }

  private disarm (): void {
    clearTimeout(this.watchdog)
    this.watchdog = undefined
  }

  /** The watchdog's turn: abort if the phase's deadline has passed, else sleep until it. */
  checkDeadline (): void {
    this.watchdog = undefined
    const waiting = this.phase === Phase.Waiting
    // Waiting for the first byte, nothing moves: lastActivity is when the phase began.
    const at = this.lastActivity + (waiting ? this.proxy.upstreamTimeoutMs : this.proxy.idleTimeoutMs)
    const now = performance.now()
    if (at > now) { this.arm(at - now, at); return }
    this.abort(new EdgeTimeout(waiting ? 'UPSTREAM_TIMEOUT' : 'IDLE_TIMEOUT'))
  }

  /**
   * The origin switched protocols (RFC 9110 15.2.2): the exchange with it is complete, and from
   * now on the watchdog ends the upgraded connection after idleTimeoutMs without a byte.
   */
  protected switched (statusCode: number): void {
    this.status = statusCode
    this.responded = true
    this.upstreamComplete = true
    this.enter(Phase.Receiving)
  }

  /** Bytes that crossed an upgraded connection: counted, and they keep the idle watchdog fed. */
  protected crossed (bytesIn: number, bytesOut: number): void {
    this.bytesIn += bytesIn
    this.bytesOut += bytesOut
    this.lastActivity = performance.now()
  }

  /** Stop the upstream side (the watchdog, or the client left). */
  protected abort (err: Error): void {
    if (this.controller !== undefined) this.controller.abort(err)
    else this.pendingAbort = err
  }

  private resume (): void {
    this.waitingForDrain = false
    this.controller?.resume()
  }

  onRequestStart (controller: Dispatcher.DispatchController): void {
    this.controller = controller
    if (this.pendingAbort !== undefined) controller.abort(this.pendingAbort)
  }

  onResponseStart (controller: Dispatcher.DispatchController, statusCode: number, upstreamHeaders: IncomingHttpHeaders, statusMessage?: string): void {
    if (statusCode < 200) return // 1xx informational: nothing to relay
    this.responded = true
    this.enter(Phase.Receiving)
    this.status = statusCode
    const responseHeaders = downstreamResponseHeaders(upstreamHeaders)
    if (this.control) responseHeaders['strict-transport-security'] = CONTROL_HSTS
    try {
      this.writeHead(statusCode, statusMessage ?? '', responseHeaders)
    } catch (err) {
      // A header the client side refuses (e.g. invalid in HTTP/2): the origin's fault.
      this.failure = errorText(err)
      this.status = 0
      this.answer('offline')
      this.answered = true
      controller.abort(err instanceof Error ? err : new Error(String(err)))
    }
  }

  onResponseData (controller: Dispatcher.DispatchController, chunk: Buffer): void {
    this.bytesOut += chunk.length
    this.lastActivity = performance.now()
    if (!this.writeBody(chunk) && !this.waitingForDrain) {
      this.waitingForDrain = true
      controller.pause()
      this.whenDrained(() => { this.resume() })
    }
  }

  onResponseEnd (): void {
    this.upstreamComplete = true
    this.disarm()
    this.endBody()
  }

  onResponseError (_controller: Dispatcher.DispatchController, err: Error): void {
    this.disarm()
    if (this.answered) return
    // The origin's side failed mid-body: cut the client's response, never end it as complete.
    if (this.responded) { this.failure ??= errorText(err); this.cutByEdge = true; this.cut(); return }
    if (this.gone()) return
    // A pooled connection the origin closed just as we reused it: an idempotent request without
    // a body may go once more (RFC 9110 9.2.2; nothing was taken from the client).
    if (!this.withBody && this.attempt === 0 && idempotent(this.req.method ?? 'GET') && isConnectionReset(err)) {
      this.attempt = 1
      this.send()
      return
    }
    this.failure = errorText(err)
    this.answer(err instanceof EdgeTimeout && err.code !== 'CONNECT_TIMEOUT' ? 'timeout' : 'offline')
  }

  /** Answer with one of the edge's own pages (or cut the response if it has begun). */
  protected answer (refused: EdgePage, extra: Record<string, string> = {}): void {
    const { req } = this
    const page = this.control ? controlPage(refused) : refused
    if (this.control) extra = { ...extra, 'strict-transport-security': CONTROL_HSTS }
    this.failure ??= page
    this.proxy.errors?.inc(page)
    if (this.headSent()) { this.status = this.status || 502; this.cutByEdge = true; this.cut(); return }
    this.status = pageStatus(page)
    const body = renderPage(page, { host: this.hostHeader, requestId: this.requestId })
    // HTTP/1: a body we will not read makes the connection unusable for the next request. A slot
    // refusal to a request without one keeps it (RFC 9112 9.3, 9.6): the client would otherwise
    // reconnect, a TLS handshake per refused request. The refusal took no slot.
    const keep = req.complete || ((refused === 'client-busy' || refused === 'busy') && !hasBody(req))
    if (req.httpVersionMajor < 2 && !keep) extra = { ...extra, connection: 'close' }
    try {
      this.writeAnswer(this.status, { ...pageHeaders(body, this.requestId), ...extra }, body)
    } catch {
      this.cutByEdge = true
      this.cut()
    }
    // Unread request bodies are discarded (HTTP/1 keeps the connection only if it can drain).
    if (!req.readableEnded) req.resume()
  }

  /** The client's side closed (finished or cut): stop the upstream side, free the slot, log. */
  protected closed (): void {
    const { req, proxy } = this
    const finished = this.finished()
    // The client left before the whole response was sent: nginx's 499, not the origin's status.
    const cancelled = !finished && !this.cutByEdge
    this.disarm()
    proxy.uploads?.unwatch(this)
    if (!this.upstreamComplete && this.slot) this.abort(new Error('client closed'))
    if (this.slot) proxy.pool.release(this.route!, this.client)
    this.slot = false
    const upstreamStatus = this.status
    if (cancelled) this.status = 499
    proxy.requests?.inc(`${Math.floor(this.status / 100)}xx`)
    const durationMs = performance.now() - this.started
    proxy.trafficOf(this.route)?.record({
      instanceId: this.route!.instanceId, startedAt: this.startedAt, method: req.method ?? 'GET', target: req.url ?? '', status: this.status, bytesIn: this.bytesIn, bytesOut: this.bytesOut, durationMs, client: this.clientIp,
    })
    if (!proxy.logger.isLevelEnabled('info')) return
    proxy.logger.info({
      reqId: this.requestId,
      method: req.method,
      host: this.hostHeader,
      path: (req.url ?? '').split('?', 1)[0],
      status: this.status,
      bytesIn: this.bytesIn,
      bytesOut: this.bytesOut,
      durationMs: Math.round(durationMs),
      instanceId: this.route?.instanceId,
      client: this.clientIp,
      proto: req.httpVersionMajor >= 2 ? 'h2' : 'http/1.1',
      ...(this.upgrade !== undefined ? { upgrade: this.upgrade } : {}),
      ...(this.target !== undefined ? { relay: this.target.gateway.id } : {}),
      ...(proxy.relayed ? { relayed: true } : {}),
      ...(this.failure !== undefined && !cancelled ? { error: this.failure } : {}),
      ...(cancelled ? { cancelled: true, ...(upstreamStatus !== 0 ? { upstreamStatus } : {}) } : {}),
      ...(!finished && !cancelled ? { aborted: true } : {}),
    }, 'request')
  }
}

/** An ordinary request (HTTP/1.1 or HTTP/2), answered through the server's response object. */
export class RequestExchange extends Exchange {
  constructor (proxy: ReverseProxy, req: EdgeRequest, private readonly res: EdgeResponse) {
    super(proxy, req)
  }

  start (): void {
    this.req.on('error', noop) // an aborted upload closes `res`, handled there
    this.res.on('error', noop)
    this.res.once('close', () => { this.closed() })
    this.begin()
  }

  override endSlowUpload (): void {
    super.endSlowUpload()
    // RFC 9113 8.1: after a complete response, RST_STREAM(NO_ERROR) tells the client to stop
    // sending; without it the stream (and its slot) stays open until the client ends the body.
    if (this.req.httpVersionMajor >= 2) {
      const stream = (this.res as http2.Http2ServerResponse).stream
      // The stream's own 'finish' (the compat response's waits for the stream to close).
      stream.once('finish', () => { if (!stream.closed) stream.close(http2.constants.NGHTTP2_NO_ERROR) })
    }
  }

  protected headSent (): boolean { return this.res.headersSent }
  protected finished (): boolean { return this.res.writableFinished }
  protected gone (): boolean { return this.res.destroyed }
  protected cut (): void { this.res.destroy() }

  protected writeHead (statusCode: number, statusMessage: string, headers: OutgoingHttpHeaders): void {
    if (this.req.httpVersionMajor >= 2) (this.res as http2.Http2ServerResponse).writeHead(statusCode, headers)
    else (this.res as http.ServerResponse).writeHead(statusCode, statusMessage, headers)
  }

  protected writeBody (chunk: Buffer): boolean { return (this.res as NodeJS.WritableStream).write(chunk) }
  protected whenDrained (resume: () => void): void { this.res.once('drain', resume) }

  protected endBody (): void { this.res.end() }

  protected writeAnswer (status: number, headers: OutgoingHttpHeaders, body: string): void {
    this.res.writeHead(status, headers)
    if (this.req.method === 'HEAD') this.res.end()
    else this.res.end(body)
  }
}

export function noop (): void {}

function watchdogFired (exchange: Exchange): void {
  exchange.checkDeadline()
}

/** The origin closed or reset the connection (undici reports a close before the response as UND_ERR_SOCKET). */
function isConnectionReset (err: Error): boolean {
  const code = (err as NodeJS.ErrnoException).code
  return code === 'ECONNRESET' || code === 'EPIPE' || code === 'UND_ERR_SOCKET'
}

const IDEMPOTENT = new Set(['GET', 'HEAD', 'OPTIONS', 'TRACE', 'PUT', 'DELETE'])
function idempotent (method: string): boolean {
  return IDEMPOTENT.has(method)
}
