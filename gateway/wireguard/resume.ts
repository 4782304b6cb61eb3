/**
 * After a restart, the gateway initiates to the peers whose last endpoint it kept (endpoint-file.ts)
 * instead of waiting for each to notice its session is gone: wireguard-go notices only when it has
 * data to send or a persistent keepalive is due, then waits REKEY_TIMEOUT for every initiation the
 * restarting process missed. Paper 5.1: either side may initiate.
 *
 * Paced: at most `perSecond` initiations a second, in ticks of TICK_MS, so a gateway with tens of
 * thousands of peers does not spend its first seconds on handshakes alone, and at most
 * `maxInFlight` of them unanswered (younger than REKEY_TIMEOUT) at once: when the answers come back
 * slower than the pace (peers or the machine short of CPU), sending more only makes retransmissions
 * (each replaces the initiation before it, so a late answer is lost work on both sides). A peer that has handshaken (or started to) by its turn is
 * skipped; an unanswered initiation is retransmitted by the peer's own timers (paper 6.4) and given
 * up after REKEY_ATTEMPT_TIME like any other.
 */
import { REKEY_TIMEOUT } from '../../proto/noise/index.ts'
import type { Device } from './device.ts'
import type { Peer } from './peer.ts'

const TICK_MS = 50
/** Default cap on resumed handshakes awaiting their response. */
export const RESUME_MAX_IN_FLIGHT = 1_000

export class HandshakeResumer {
  private readonly device: Device
  private readonly now: () => number
  private readonly wake: () => void
  private readonly perSecond: number
  private readonly maxInFlight: number
  /** Resumed peers whose initiation is unanswered, with when it was sent. */
  private readonly inFlight = new Map<Peer, number>()
  private queue: Peer[] = []
  private head = 0
  private timer: NodeJS.Timeout | null = null
  private started = false
  /** Initiations sent so far. */
  sent = 0

  private readonly onBatch: (peers: number) => void
  constructor (device: Device, options: { perSecond: number, maxInFlight?: number, now: () => number, wake: () => void, onBatch?: (peers: number) => void }) {
    this.device = device
    this.onBatch = options.onBatch ?? (() => {})
    this.perSecond = options.perSecond
    this.maxInFlight = Math.max(1, options.maxInFlight ?? RESUME_MAX_IN_FLIGHT)
    this.now = options.now
    this.wake = options.wake
  }

  get pending (): number { return this.queue.length - this.head }

  add (peer: Peer): void {
    if (this.perSecond <= 0) return
    this.queue.push(peer)
    if (this.started && this.timer === null) this.schedule(0)
  }

  /** Call once the UDP socket is bound. */
  start (): void {
    this.started = true
    if (this.pending > 0 && this.timer === null) this.schedule(0)
  }

  close (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.queue = []
    this.head = 0
    this.inFlight.clear()
    this.started = false
  }

  private schedule (ms: number): void {
    this.timer = setTimeout(() => { this.timer = null; this.tick() }, ms)
  }

  private tick (): void {
    const now = this.now()
    // A queue's first tick (peers added together arrive in one): how many it will initiate to.
    if (this.head === 0) this.onBatch(this.pending)
    for (const [peer, at] of this.inFlight) {
      if (peer.lastHandshakeAt !== null || now - at >= REKEY_TIMEOUT || this.device.peers.get(peer.name) !== peer) this.inFlight.delete(peer)
    }
    const batch = Math.min(Math.max(1, Math.round(this.perSecond * TICK_MS / 1000)), this.maxInFlight - this.inFlight.size)
    let sent = 0
    while (sent < batch && this.head < this.queue.length) {
      const peer = this.queue[this.head++]
      // Removed since, already handshaken (the peer was faster), or a handshake in flight.
      if (this.device.peers.get(peer.name) !== peer || peer.lastHandshakeAt !== null || peer.handshake !== null || peer.endpoint === null) continue
      this.device.sendInitiation(peer, now, false)
      this.inFlight.set(peer, now)
      sent++
    }
    this.sent += sent
    if (sent > 0) this.wake()
    if (this.head < this.queue.length) this.schedule(TICK_MS)
    else { this.queue = []; this.head = 0; this.inFlight.clear() }
  }
}
