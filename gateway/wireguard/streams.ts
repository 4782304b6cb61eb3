/**
 * Stream connections as WireGuard endpoints. The device knows an endpoint as an address and a port;
 * a stream's address is its remote address prefixed with `tls:` (`tls:198.18.0.2`, port 40122), so
 * it never equals a UDP endpoint and the device's roaming (paper 2.1: replies go where the last
 * authenticated packet came from) moves a peer between UDP and a stream without knowing either.
 * The device's io sends to such an address through `send`, which frames the message onto the stream.
 *
 * Limits: at most `maxPerClient` open streams per client address (limits.ts clientKey: an IPv4
 * address or an IPv6 /64), a stream silent for `idleTimeoutMs` is closed, a message that would
 * push a stream's unsent bytes past `maxSendBacklogBytes` is dropped (as a full UDP socket would),
 * and a bad frame closes the stream. Every one of these is counted in `wg_streams` by reason.
 */
import type net from 'node:net'
import type { Logger } from 'pino'
import type { CounterFamily, Metrics } from '../metrics.ts'
import { clientKey } from '../edge/limits.ts'
import { FrameDecoder, encodeFrame } from './stream.ts'

/** The prefix of a stream endpoint's address. */
export const STREAM_ADDRESS_PREFIX = 'tls:'

export function isStreamAddress (address: string): boolean {
  return address.startsWith(STREAM_ADDRESS_PREFIX)
}

export const STREAM_LIMIT_DEFAULTS = {
  maxPerClient: 8,
  /** Longer than REJECT_AFTER_TIME: a peer with a live session and keepalives never hits it. */
  idleTimeoutMs: 180_000,
  maxSendBacklogBytes: 4 * 1024 * 1024,
} as const

export type StreamLimits = { -readonly [K in keyof typeof STREAM_LIMIT_DEFAULTS]: number }

export interface StreamEndpointsOptions {
  metrics: Metrics
  /** One message from a stream, with the stream's endpoint (address `tls:...`, port). */
  receive: (message: Buffer, address: string, port: number) => void
  limits?: Partial<StreamLimits>
  logger?: Logger
}

interface OpenStream {
  socket: net.Socket
  client: string
}

export class StreamEndpoints {
  readonly counters: CounterFamily
  private readonly limits: StreamLimits
  private readonly receive: StreamEndpointsOptions['receive']
  private readonly logger: Logger | undefined
  /** By endpoint key (`tls:address/port`). */
  private readonly streams = new Map<string, OpenStream>()
  private readonly perClient = new Map<string, number>()
  private readonly corked = new Set<net.Socket>()
  private uncorkScheduled = false
  private closed = false

  constructor (options: StreamEndpointsOptions) {
    this.limits = { ...STREAM_LIMIT_DEFAULTS, ...options.limits }
    this.receive = options.receive
    this.logger = options.logger
    this.counters = options.metrics.family('wg_streams', 'WireGuard stream connections (TLS): opened, closed, and refused or dropped by reason')
  }

  /** Open streams. */
  get size (): number {
    return this.streams.size
  }

  /** Open streams of `address`'s client key. */
  openFor (address: string): number {
    return this.perClient.get(clientKey(plainAddress(address))) ?? 0
  }

  /**
   * Takes a connected stream from `remote` (the client's address and port). Returns its endpoint
   * address, or null when it was refused (client at its cap, or closed) and destroyed.
   */
  accept (socket: net.Socket, remote: { address: string, port: number }): string | null {
    const address = plainAddress(remote.address)
    const client = clientKey(address)
    const open = this.perClient.get(client) ?? 0
    if (this.closed || open >= this.limits.maxPerClient) {
      if (!this.closed) this.counters.inc('client_cap')
      this.logger?.debug({ client }, 'WireGuard stream refused: client address at its stream cap')
      socket.destroy()
      return null
    }
    const endpoint = STREAM_ADDRESS_PREFIX + address
    const key = `${endpoint}/${remote.port}`
    // The same address and port again (a reconnect through the same NAT binding): the old one goes.
    this.streams.get(key)?.socket.destroy()
    this.streams.set(key, { socket, client })
    this.perClient.set(client, open + 1)
    this.counters.inc('opened')
    const decoder = new FrameDecoder()
    socket.setNoDelay?.(true)
    socket.setTimeout(this.limits.idleTimeoutMs, () => {
      this.counters.inc('idle')
      socket.destroy()
    })
    socket.on('data', (chunk: Buffer) => {
      const error = decoder.push(chunk, message => { this.receive(message, endpoint, remote.port) })
      if (error !== null) {
        this.counters.inc(error)
        this.logger?.debug({ client, reason: error }, 'WireGuard stream closed: bad frame')
        socket.destroy()
      }
    })
    socket.on('error', err => { this.logger?.debug({ client, err: err.message }, 'WireGuard stream error') })
    // A socket paused while its HTTP head was read (upgrade, proxy) flows again.
    socket.resume()
    socket.once('close', () => {
      this.counters.inc('closed')
      if (this.streams.get(key)?.socket === socket) this.streams.delete(key)
      const left = (this.perClient.get(client) ?? 1) - 1
      if (left <= 0) this.perClient.delete(client)
      else this.perClient.set(client, left)
    })
    return endpoint
  }

  /** DeviceIo.sendDatagram for a stream endpoint. False (counted) when there is no such stream or it is backed up. */
  send (datagram: Buffer, address: string, port: number): boolean {
    const stream = this.streams.get(`${address}/${port}`)
    if (stream === undefined || stream.socket.destroyed || !stream.socket.writable) {
      this.counters.inc('no_stream')
      return false
    }
    const socket = stream.socket
    if (socket.writableLength + datagram.length > this.limits.maxSendBacklogBytes) {
      this.counters.inc('send_backlog')
      return false
    }
    // Frames written in one turn of the event loop leave as one write (one TLS record where they fit).
    if (!this.corked.has(socket)) {
      socket.cork()
      this.corked.add(socket)
      if (!this.uncorkScheduled) {
        this.uncorkScheduled = true
        process.nextTick(this.uncork)
      }
    }
    socket.write(encodeFrame(datagram))
    return true
  }

  /** Whether a stream for this endpoint is open. */
  has (address: string, port: number): boolean {
    const stream = this.streams.get(`${address}/${port}`)
    return stream !== undefined && !stream.socket.destroyed
  }

  /** Closes the stream of one endpoint, if open. */
  closeEndpoint (address: string, port: number): void {
    this.streams.get(`${address}/${port}`)?.socket.destroy()
  }

  /** Closes every stream; later ones are refused. */
  close (): void {
    this.closed = true
    for (const { socket } of this.streams.values()) socket.destroy()
    this.streams.clear()
  }

  private readonly uncork = (): void => {
    this.uncorkScheduled = false
    for (const socket of this.corked) socket.uncork()
    this.corked.clear()
  }
}

/** An IPv4 client on a dual-stack listener is named by its IPv4 address. */
function plainAddress (address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address
}
