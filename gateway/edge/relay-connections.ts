/**
 * Whole client connections relayed between the gateways of a fleet (passthrough.ts describes the
 * two modes), the edge's side of them:
 *
 *   out: attach() puts a ClientHello reader in front of the HTTPS listener; a connection whose
 *        route relays goes to a gateway holding the instance's session, as a stream (its TLS ends
 *        here, streamOut) or untouched (passThrough). Every other connection goes on as before.
 *   in:  acceptStream / acceptPassthrough take a client's connection another gateway relayed to
 *        us (RelayListener calls them) and serve it as if the client had connected here.
 *
 * The Edge builds one when it has a relay, and lends it what its HTTPS listener uses (EdgeSide):
 * the same certificates, limits, handlers and counters apply to relayed clients.
 */
import http from 'node:http'
import http2 from 'node:http2'
import tls from 'node:tls'
import type net from 'node:net'
import type { Duplex, Readable, Writable } from 'node:stream'
import type { Logger } from 'pino'
import type { CounterFamily, Metrics } from '../metrics.ts'
import type { FleetGateway } from '../../proto/rpc/index.ts'
import type { RouteMap } from './routes.ts'
import type { ReverseProxy } from './proxy.ts'
import type { RelayClient } from './relay.ts'
import { PASSTHROUGH_ALPN, STREAM_ALPN, encodePreamble, passthroughClient, readServerName, type Preamble } from './passthrough.ts'
import { intercept } from './intercept.ts'
import { EDGE_DEFAULTS, type RelayMode } from './options.ts'

/**
 * Copies `from` into `to` like pipe(), but stops reading `from` only once `to` holds `limit` bytes
 * unsent: meanwhile the records that arrive together are written together (one writev, one TLS
 * write and one send) instead of one pause and resume of `from` per record.
 */
export function forward (from: Readable, to: Writable, limit: number): void {
  const resume = (): void => { from.resume() }
  from.on('data', (chunk: Buffer) => {
    // A false return only says `to` holds more than its 16 KiB mark; 'drain' comes once it is empty.
    if (!to.write(chunk) && to.writableLength >= limit && !from.isPaused()) {
      from.pause()
      to.once('drain', resume)
    }
  })
  from.once('end', () => { to.end() })
}

/** What the edge's HTTPS listener uses, lent to the relayed connections. */
export interface EdgeSide {
  routes: RouteMap
  proxy: ReverseProxy
  logger: Logger
  clientErrors: CounterFamily | undefined
  idleTimeoutMs: number
  tlsHandshakeTimeoutMs: number
  http2: boolean
  /** TLS of the HTTPS listener: certificates by SNI, versions, ciphers, handshake timeout. */
  tlsOptions: () => tls.TlsOptions
  h2Settings: (streamWindow?: number) => http2.Settings
  /** The HTTPS listener's HTTP/1.1 limits, set on another server. */
  applyHttp1Limits: (server: http.Server | http2.Http2Server) => void
  watchSessions: (server: http2.Http2Server, connectionWindow?: number) => void
  onClientError: (err: Error, socket: Duplex) => void
  /** Count a client socket among the edge's own (closed with it). */
  track: (socket: net.Socket) => void
  /** The HTTPS listener accepts connections. */
  listening: () => boolean
}

export class RelayConnections {
  private readonly passthroughCount: CounterFamily | undefined
  private readonly streamCount: CounterFamily | undefined
  /** Node's own TLS 'connection' listener of the HTTPS server (passthrough connections go straight to it). */
  private tlsConnection: ((socket: Duplex) => void) | undefined
  /** Out: the client's TLS ends here (same certificates and limits as the HTTPS listener). */
  private streamTls: tls.Server | undefined
  /** Out: the relay connection waiting for each client's TLS handshake (by the client's socket). */
  private readonly streamUpstreams = new WeakMap<object, tls.TLSSocket>()
  /** In: the client's plaintext HTTP/1.1 and HTTP/2, served by the edge's own proxy. */
  private streamHttp1: http.Server | undefined
  private streamHttp2: http2.Http2Server | undefined

  constructor (private readonly relay: RelayClient, private readonly mode: RelayMode, private readonly edge: EdgeSide, metrics: Metrics | undefined) {
    this.passthroughCount = metrics?.family('relay_passthrough', 'Client TLS connections passed through between gateways: out (to the holder), in (from another gateway), fallback (holder unreachable, served here)')
    this.streamCount = metrics?.family('relay_stream', 'Client connections whose TLS ended on one gateway and whose plaintext was piped to the holder: out (to the holder), in (from another gateway), fallback (holder unreachable, served here)')
  }

  /**
   * Both directions on the HTTPS listener: call before any other 'connection' check is put in
   * front of it (those then run first).
   */
  attach (server: net.Server): void {
    const [tlsConnection] = server.listeners('connection') as Array<(socket: Duplex) => void>
    this.tlsConnection = socket => { tlsConnection.call(server, socket) }
    // A client's HTTP/2 passed through from another gateway: the same larger windows as a piped
    // stream's (createStreamServers), set once the listener's own settings are acknowledged.
    server.on('session', (session: http2.ServerHttp2Session) => {
      if (passthroughClient(session.socket) === undefined) return
      session.once('localSettings', () => {
        try {
          session.settings({ initialWindowSize: EDGE_DEFAULTS.relayedH2StreamWindow })
          session.setLocalWindowSize(EDGE_DEFAULTS.relayedH2ConnectionWindow)
        } catch { /* closed meanwhile */ }
      })
    })
    this.attachOut(server)
    this.createStreamServers()
  }

  /**
   * A connection whose ClientHello names a route that relays goes to a gateway holding the
   * instance's session, whole: in mode 'stream' its TLS ends here and the plaintext is piped to the
   * holder (streamOut); in mode 'passthrough' its raw TLS is (passThrough). Every other connection,
   * and one whose holder cannot be reached, is served here (mode 'request': all of them, each
   * request relayed by the proxy). Nothing is inspected while the fleet has no other gateway.
   */
  private attachOut (server: net.Server): void {
    const { relay, mode, edge } = this
    if (mode === 'request') return
    if (mode === 'stream') this.streamTls = this.createStreamTls()
    intercept<net.Socket>(server, 'connection', (socket, handOn) => {
      if (!relay.fleet.hasOthers) { handOn(socket); return }
      let buffered: Buffer = Buffer.alloc(0)
      const onError = (): void => { socket.destroy() }
      const stop = (): void => {
        clearTimeout(timer)
        socket.off('data', onData)
        socket.off('error', onError)
        socket.pause()
        if (buffered.length > 0) socket.unshift(buffered)
      }
      const onData = (chunk: Buffer): void => {
        buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk])
        const hello = readServerName(buffered)
        if (!hello.done) return
        stop()
        const route = hello.servername === null ? undefined : edge.routes.lookup(hello.servername)
        const target = route === undefined ? null : relay.targetFor(route)
        if (target === null) { handOn(socket); return }
        if (mode === 'stream') this.streamOut(socket, target.gateway, handOn)
        else this.passThrough(socket, target.gateway, handOn)
      }
      // A client that sends no ClientHello is closed like a TLS handshake that times out.
      const timer = setTimeout(() => {
        stop()
        edge.clientErrors?.inc('tls_handshake')
        socket.destroy()
      }, edge.tlsHandshakeTimeoutMs)
      socket.on('data', onData)
      socket.on('error', onError)
    })
  }

  /**
   * Opens a relay connection (ALPN `alpn`) to `gateway` for `socket` (its ClientHello unread). If
   * that fails, counts a fallback in `counter` and serves the socket here; otherwise the two close
   * together and `connected` carries on.
   */
  private connectFor (socket: net.Socket, gateway: FleetGateway, alpn: string, counter: CounterFamily | undefined, serveHere: (socket: net.Socket) => void, connected: (upstream: tls.TLSSocket, close: () => void) => void): void {
    const { edge } = this
    socket.on('error', () => {})
    this.relay.connect(gateway, alpn, (err, upstream) => {
      if (err !== null || upstream === null) {
        counter?.inc('fallback')
        edge.logger.warn({ gateway: gateway.id, err: err?.message, client: socket.remoteAddress, alpn }, 'relay: holder unreachable, serving here')
        if (socket.destroyed) return
        serveHere(socket)
        return
      }
      if (socket.destroyed) { upstream.destroy(); return }
      edge.track(socket)
      upstream.on('error', () => {})
      const close = (): void => { socket.destroy(); upstream.destroy() }
      socket.once('close', close)
      upstream.once('close', close)
      connected(upstream, close)
    })
  }

  /** Pipes `socket` (its ClientHello unread) to `gateway` in a passthrough relay connection; if that fails, serves it here. */
  private passThrough (socket: net.Socket, gateway: FleetGateway, serveHere: (socket: net.Socket) => void): void {
    this.connectFor(socket, gateway, PASSTHROUGH_ALPN, this.passthroughCount, serveHere, (upstream, close) => {
      this.passthroughCount?.inc('out')
      // The holder's edge runs the idle deadline of the client's exchanges; this only frees a pair
      // whose other end vanished without a word.
      const idle = this.edge.idleTimeoutMs + 2_000
      socket.setTimeout(idle, close)
      upstream.setTimeout(idle, close)
      upstream.write(encodePreamble({ client: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 }))
      forward(socket, upstream, EDGE_DEFAULTS.relayPipeBuffer)
      forward(upstream, socket, EDGE_DEFAULTS.relayPipeBuffer)
      socket.resume()
    })
  }

  /**
   * Pipes `socket` (its ClientHello unread) to `gateway` as a stream: the relay connection first,
   * then the client's TLS handshake here, then the preamble and the plaintext both ways. If the
   * relay connection fails, the socket is served here.
   */
  private streamOut (socket: net.Socket, gateway: FleetGateway, serveHere: (socket: net.Socket) => void): void {
    this.connectFor(socket, gateway, STREAM_ALPN, this.streamCount, serveHere, upstream => {
      this.streamUpstreams.set(socket, upstream)
      // Until the handshake ends, the TLS server's handshake timeout bounds the wait.
      this.streamTls!.emit('connection', socket)
    })
  }

  /** A client's TLS handshake for a stream ended here: the preamble, then the plaintext both ways. */
  private streamSecured (client: tls.TLSSocket): void {
    const raw = (client as unknown as { _parent?: object })._parent
    const upstream = raw === undefined ? undefined : this.streamUpstreams.get(raw)
    if (upstream === undefined || upstream.destroyed) { client.destroy(); return }
    client.on('error', () => {})
    client.once('close', () => upstream.destroy())
    upstream.once('close', () => client.destroy())
    const address = (raw as net.Socket).remoteAddress ?? ''
    const port = (raw as net.Socket).remotePort ?? 0
    const servername = typeof client.servername === 'string' ? client.servername : ''
    upstream.write(encodePreamble({ client: address, port, alpn: client.alpnProtocol === 'h2' ? 'h2' : 'http/1.1', servername }))
    // The holder's edge runs the idle deadline of the client's exchanges; this only frees a pair
    // whose other end vanished without a word.
    const idle = this.edge.idleTimeoutMs + 2_000
    client.setTimeout(idle, () => client.destroy())
    upstream.setTimeout(idle, () => upstream.destroy())
    forward(client, upstream, EDGE_DEFAULTS.relayPipeBuffer)
    forward(upstream, client, EDGE_DEFAULTS.relayPipeBuffer)
    this.streamCount?.inc('out')
  }

  /** The TLS server that ends the TLS of clients whose connections are relayed as streams. */
  private createStreamTls (): tls.Server {
    const { edge } = this
    const server = tls.createServer({
      ...edge.tlsOptions(),
      ALPNProtocols: edge.http2 ? ['h2', 'http/1.1'] : ['http/1.1'],
    })
    server.on('secureConnection', socket => { this.streamSecured(socket) })
    server.on('tlsClientError', (err: Error, socket: tls.TLSSocket) => {
      socket.destroy()
      edge.clientErrors?.inc('tls_handshake')
      edge.logger.debug({ err: err.message, servername: socket.servername }, 'TLS handshake failed')
    })
    return server
  }

  /**
   * The servers a stream from another gateway is handed to (HTTP/1.1 or HTTP/2 by the client's
   * ALPN): the HTTPS listener's limits and handlers, over the relay connection instead of TLS.
   */
  private createStreamServers (): void {
    const { edge } = this
    const h1 = http.createServer()
    // Larger receive windows than the HTTPS listener's: the relay hop lengthens the round trip.
    const h2 = http2.createServer({ settings: edge.h2Settings(EDGE_DEFAULTS.relayedH2StreamWindow) })
    edge.applyHttp1Limits(h1)
    edge.applyHttp1Limits(h2)
    for (const server of [h1, h2]) {
      server.setTimeout(edge.idleTimeoutMs + 1_000)
      server.on('request', edge.proxy.handleRequest)
    }
    h1.on('upgrade', edge.proxy.handleUpgrade)
    h1.on('clientError', (err: Error, socket: Duplex) => edge.onClientError(err, socket))
    edge.watchSessions(h2, EDGE_DEFAULTS.relayedH2ConnectionWindow)
    this.streamHttp1 = h1
    this.streamHttp2 = h2
  }

  /**
   * A client's connection another gateway relays to us as a stream: served as if the client had
   * connected here, by the edge's own proxy (into the local tunnel only: the socket is marked).
   */
  acceptStream (socket: tls.TLSSocket, preamble: Preamble): void {
    if (this.streamHttp1 === undefined || this.streamHttp2 === undefined || !this.edge.listening()) { socket.destroy(); return }
    this.streamCount?.inc('in')
    // The relay connection now stands for the client's: requests on it are checked against the
    // client's server name (proxy.ts connectionServername; RFC 9110 7.4).
    ;(socket as unknown as { servername: string }).servername = preamble.servername!
    if (preamble.alpn === 'h2') {
      // The HTTP/2 session takes bytes already read from the socket itself.
      this.streamHttp2.emit('connection', socket)
      return
    }
    // The HTTP/1.1 server reads the socket natively and would not see the bytes that came with the
    // preamble: they go to its parser first, then the socket flows again.
    const pending = socket.read() as Buffer | null
    this.streamHttp1.emit('connection', socket)
    if (pending !== null) socket.emit('data', pending)
    socket.resume()
  }

  /** A client's TLS another gateway passed through to us: served as if it had connected here. */
  acceptPassthrough (socket: tls.TLSSocket): void {
    if (this.tlsConnection === undefined || !this.edge.listening()) { socket.destroy(); return }
    this.passthroughCount?.inc('in')
    this.tlsConnection(socket)
  }
}
