/**
 * Fairness limits at the edge: one client address must not be able to take an instance (or the
 * edge) away from everyone else, while idle time alone still ends a transfer (slow uploads are
 * legitimate; there is never a total-time limit).
 *
 *   connections  at most maxConnectionsPerClient open TCP connections per client address on the
 *                edge's listeners together; one more is closed at accept, before any TLS work
 *   slots        at most clientSlotShare of an instance's upstream slots per client address, but
 *                at least 8 (upstream.ts MIN_CLIENT_SLOTS) or all of a smaller instance's (429)
 *   streams      at most maxConcurrentStreams HTTP/2 streams per connection (SETTINGS)
 *   progress     while more than scarceSlotShare of an instance's slots are in use, a request body
 *                that arrived slower than minUploadBytesPerSecond over the last
 *                uploadProgressWindowMs is ended with 408 to free its slot; below that share it is
 *                left alone
 *   contexts     at most tlsContextCache TLS contexts in memory (certificates.ts): a name whose
 *                context was evicted has it rebuilt from the certificate store on its next handshake
 *   wireguard    at most wireguardStreamsPerClient WireGuard-over-TLS streams per client address,
 *                each closed after wireguardStreamIdleMs without a frame
 *
 * A client address is an IPv4 address or an IPv6 /64: one subscriber gets a whole /64, so a count
 * per IPv6 address would be no limit at all.
 */
import type net from 'node:net'
import { intercept } from './intercept.ts'

export const EDGE_LIMIT_DEFAULTS = {
  maxConnectionsPerClient: 256,
  clientSlotShare: 0.25,
  maxConcurrentStreams: 32,
  tlsHandshakeTimeoutMs: 10_000,
  scarceSlotShare: 0.75,
  minUploadBytesPerSecond: 1_024,
  uploadProgressWindowMs: 10_000,
  tlsContextCache: 1_000,
  /** WireGuard over TLS (wg-over-tls.ts): open tunnel streams per client address. */
  wireguardStreamsPerClient: 8,
  /** ... and how long one may stay silent (longer than a session's REJECT_AFTER_TIME, 180 s). */
  wireguardStreamIdleMs: 185_000,
} as const

export type EdgeLimits = { -readonly [K in keyof typeof EDGE_LIMIT_DEFAULTS]: number }

/** The key client limits are counted under: the IPv4 address, or the IPv6 address's /64. */
export function clientKey (address: string | undefined): string {
  if (address === undefined || address === '') return 'unknown'
  if (address.startsWith('::ffff:') && address.includes('.')) return address.slice(7)
  if (!address.includes(':')) return address
  return `${ipv6Groups(address).slice(0, 4).join(':')}::/64`
}

/** The eight groups of an IPv6 address, in hex without leading zeros (`::` expanded, zone dropped). */
function ipv6Groups (address: string): string[] {
  const zone = address.indexOf('%')
  const text = zone === -1 ? address : address.slice(0, zone)
  const halves = text.split('::', 2)
  const split = (part: string): string[] => part === '' ? [] : part.split(':').flatMap(g => g.includes('.') ? ['0', '0'] : [g])
  const head = split(halves[0])
  const tail = halves.length === 2 ? split(halves[1]) : []
  const missing = Math.max(0, 8 - head.length - tail.length)
  return [...head, ...new Array<string>(missing).fill('0'), ...tail].map(g => (Number.parseInt(g, 16) || 0).toString(16))
}

/**
 * Open connections per client address, counted at accept. `attach` puts the gate in front of a
 * server's own 'connection' listeners, so a refused socket is closed before TLS or HTTP sees it.
 */
export class ConnectionGate {
  private readonly open = new Map<string, number>()

  constructor (private readonly maxPerClient: number, private readonly onRefused: (client: string) => void = () => {}) {}

  /** Count `socket` against its client address until it closes; false (nothing counted) at the cap. */
  admit (socket: net.Socket): boolean {
    if (socket.remoteAddress === undefined) return false // already gone
    const client = clientKey(socket.remoteAddress)
    const n = this.open.get(client) ?? 0
    if (n >= this.maxPerClient) { this.onRefused(client); return false }
    this.open.set(client, n + 1)
    socket.once('close', () => {
      const left = (this.open.get(client) ?? 1) - 1
      if (left <= 0) this.open.delete(client)
      else this.open.set(client, left)
    })
    return true
  }

  openConnections (address: string): number {
    return this.open.get(clientKey(address)) ?? 0
  }

  /** Put the gate in front of `server`'s connection handling (once, after every other 'connection' listener is on). */
  attach (server: net.Server): void {
    intercept<net.Socket>(server, 'connection', (socket, handOn) => {
      if (!this.admit(socket)) { socket.on('error', () => {}); socket.destroy(); return }
      handOn(socket)
    })
  }
}

/** What the progress watch needs from an exchange whose request body is on its way up. */
export interface UploadInProgress {
  /** Request body bytes received so far. */
  bytesReceived (): number
  /** True while the exchange waits for the client's next body bytes (not for the origin to read). */
  waitingForClient (): boolean
  /** True while the instance's slots are scarce (above scarceSlotShare in use). */
  slotsScarce (): boolean
  /** End the exchange with 408 and free its slot. */
  endSlowUpload (): void
}

/**
 * Minimum progress for request bodies, enforced only while an instance's slots are scarce. One
 * timer for all uploads, running while there are any. A window counts only time spent waiting for
 * the client: while the body waits for the origin to read it, the window starts again.
 */
export class UploadProgressWatch {
  private readonly marks = new Map<UploadInProgress, { at: number, bytes: number }>()
  private readonly sweepMs: number
  private timer: NodeJS.Timeout | undefined

  constructor (private readonly minBytesPerSecond: number, private readonly windowMs: number) {
    this.sweepMs = Math.min(1_000, Math.max(25, Math.floor(windowMs / 4)))
  }

  watch (upload: UploadInProgress): void {
    this.marks.set(upload, { at: performance.now(), bytes: upload.bytesReceived() })
    if (this.timer === undefined) {
      this.timer = setInterval(() => { this.sweep(performance.now()) }, this.sweepMs)
      this.timer.unref()
    }
  }

  unwatch (upload: UploadInProgress): void {
    this.marks.delete(upload)
    if (this.marks.size === 0 && this.timer !== undefined) { clearInterval(this.timer); this.timer = undefined }
  }

  get watching (): number {
    return this.marks.size
  }

  private sweep (now: number): void {
    const slow: UploadInProgress[] = []
    for (const [upload, mark] of this.marks) {
      const bytes = upload.bytesReceived()
      if (!upload.waitingForClient()) { mark.at = now; mark.bytes = bytes; continue }
      const elapsed = now - mark.at
      if (elapsed < this.windowMs) continue
      if ((bytes - mark.bytes) * 1_000 < this.minBytesPerSecond * elapsed && upload.slotsScarce()) { slow.push(upload); continue }
      mark.at = now
      mark.bytes = bytes
    }
    for (const upload of slow) { this.unwatch(upload); upload.endSlowUpload() }
  }
}
