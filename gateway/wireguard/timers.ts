/**
 * The per-peer timer state machine of the WireGuard paper section 6 (as wireguard-go timers.go
 * arranges it): five deadlines driven by packet events, expired by `expireTimers(now)`. Deadlines
 * are monotonic ms; Infinity means "not pending". Nothing here reads a clock.
 */
import {
  KEEPALIVE_TIMEOUT, REJECT_AFTER_TIME, REKEY_TIMEOUT,
} from '../../proto/noise/index.ts'
import { MAX_HANDSHAKE_ATTEMPTS } from './limits.ts'
import type { Peer } from './peer.ts'

/** Numbers per peer in a TimerSlab: the five deadlines, then the two handshake times Peer keeps. */
const SLOTS = 7
const RETRANSMIT_HANDSHAKE = 0
const SEND_KEEPALIVE = 1
const NEW_HANDSHAKE = 2
const ZERO_KEY_MATERIAL = 3
const PERSISTENT_KEEPALIVE = 4
const LAST_INITIATION = 5
const LAST_SENT_HANDSHAKE = 6

/** Peers per TimerSlab chunk: what a device holds beyond its peers' slots is under one chunk (14 KB). */
const CHUNK_PEERS = 256

/**
 * The timer numbers of many peers in Float64Array chunks (a device's): a number in an object field
 * is a heap number of its own (16 bytes each, seven per peer); here each is 8 bytes in a chunk.
 * Slots of removed peers are reused; chunks never move, so a peer keeps its chunk and index.
 */
export class TimerSlab {
  private readonly chunkPeers: number
  private last: Float64Array | null = null
  private lastUsed = 0
  private readonly freeChunks: Float64Array[] = []
  private readonly freeBases: number[] = []
  private used = 0

  constructor (chunkPeers = CHUNK_PEERS) {
    this.chunkPeers = Math.max(1, chunkPeers)
  }

  /** A cleared slot: its chunk and first index. */
  allocate (): { values: Float64Array, base: number } {
    let values = this.freeChunks.pop()
    let base = this.freeBases.pop()
    if (values === undefined || base === undefined) {
      if (this.last === null || this.lastUsed === this.last.length) {
        this.last = new Float64Array(this.chunkPeers * SLOTS)
        this.lastUsed = 0
      }
      values = this.last
      base = this.lastUsed
      this.lastUsed += SLOTS
    }
    this.used++
    values.fill(Infinity, base, base + LAST_INITIATION)
    values.fill(-Infinity, base + LAST_INITIATION, base + SLOTS)
    return { values, base }
  }

  release (values: Float64Array, base: number): void {
    this.freeChunks.push(values)
    this.freeBases.push(base)
    this.used--
  }

  /** Slots in use. */
  get size (): number { return this.used }
}

export class PeerTimers {
  private slab: TimerSlab
  private values: Float64Array
  private base: number
  /** Initiations sent in the current series (paper 6.4 gives up after REKEY_ATTEMPT_TIME). */
  handshakeAttempts = 0
  needAnotherKeepalive = false
  /** Paper 6.2: the "last minute" handshake on receive is tried once per session. */
  sentLastMinuteHandshake = false

  /** Without a slab (a peer outside a device): one of its own. */
  constructor (slab: TimerSlab = new TimerSlab(1)) {
    this.slab = slab
    const slot = slab.allocate()
    this.values = slot.values
    this.base = slot.base
  }

  /** Paper 6.4: resend the initiation if no response within REKEY_TIMEOUT (+ jitter). */
  get retransmitHandshakeAt (): number { return this.values[this.base + RETRANSMIT_HANDSHAKE] }
  set retransmitHandshakeAt (at: number) { this.values[this.base + RETRANSMIT_HANDSHAKE] = at }
  /** Paper 6.5: passive keepalive KEEPALIVE_TIMEOUT after data was received and nothing sent. */
  get sendKeepaliveAt (): number { return this.values[this.base + SEND_KEEPALIVE] }
  set sendKeepaliveAt (at: number) { this.values[this.base + SEND_KEEPALIVE] = at }
  /** Paper 6.2: data sent but nothing back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT -> new handshake. */
  get newHandshakeAt (): number { return this.values[this.base + NEW_HANDSHAKE] }
  set newHandshakeAt (at: number) { this.values[this.base + NEW_HANDSHAKE] = at }
  /** Paper 6.3: erase all keys 3 * REJECT_AFTER_TIME after the last session was derived. */
  get zeroKeyMaterialAt (): number { return this.values[this.base + ZERO_KEY_MATERIAL] }
  set zeroKeyMaterialAt (at: number) { this.values[this.base + ZERO_KEY_MATERIAL] = at }
  /** Paper 6.5: persistent keepalive interval after any authenticated packet in either direction. */
  get persistentKeepaliveAt (): number { return this.values[this.base + PERSISTENT_KEEPALIVE] }
  set persistentKeepaliveAt (at: number) { this.values[this.base + PERSISTENT_KEEPALIVE] = at }
  /** Peer.lastInitiationAt (handshake.ts): the last initiation taken from the peer. */
  get lastInitiationAt (): number { return this.values[this.base + LAST_INITIATION] }
  set lastInitiationAt (at: number) { this.values[this.base + LAST_INITIATION] = at }
  /** Peer.lastSentHandshakeAt (handshake.ts): our last initiation to the peer. */
  get lastSentHandshakeAt (): number { return this.values[this.base + LAST_SENT_HANDSHAKE] }
  set lastSentHandshakeAt (at: number) { this.values[this.base + LAST_SENT_HANDSHAKE] = at }

  earliest (): number {
    const v = this.values
    const b = this.base
    return Math.min(v[b + RETRANSMIT_HANDSHAKE], v[b + SEND_KEEPALIVE], v[b + NEW_HANDSHAKE], v[b + ZERO_KEY_MATERIAL], v[b + PERSISTENT_KEEPALIVE])
  }

  clear (): void {
    this.values.fill(Infinity, this.base, this.base + LAST_INITIATION)
    this.handshakeAttempts = 0
    this.needAnotherKeepalive = false
    this.sentLastMinuteHandshake = false
  }

  /**
   * The peer left its device: its numbers move to a slab of their own and the slot is freed, so a
   * late write through a stale reference cannot reach the peer that takes the slot next.
   */
  detach (): void {
    const own = new TimerSlab(1)
    const slot = own.allocate()
    slot.values.set(this.values.subarray(this.base, this.base + SLOTS), slot.base)
    this.slab.release(this.values, this.base)
    this.slab = own
    this.values = slot.values
    this.base = slot.base
  }
}

/** What the timers need from the device: to hear about new deadlines, randomness, and actions. */
export interface TimerHost {
  /** A deadline was set; the host keeps the earliest so its shell can arm one timer. */
  noteDeadline (at: number): void
  /** Uniform jitter in [0, REKEY_TIMEOUT_JITTER_MAX) ms. */
  jitter (): number
  sendInitiation (peer: Peer, now: number, isRetry: boolean): void
  sendKeepalive (peer: Peer, now: number): void
  /** The handshake series failed: drop queued packets. */
  abandonHandshake (peer: Peer, now: number): void
  zeroKeyMaterial (peer: Peer): void
}

// Events (names follow wireguard-go timers.go).

/** After sending a transport message with data. */
export function timersDataSent (host: TimerHost, peer: Peer, now: number): void {
  const t = peer.timers
  if (t.newHandshakeAt === Infinity) arm(host, t, 'newHandshakeAt', now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + host.jitter())
}

/** After receiving a transport message with data. */
export function timersDataReceived (host: TimerHost, peer: Peer, now: number): void {
  const t = peer.timers
  if (t.sendKeepaliveAt === Infinity) arm(host, t, 'sendKeepaliveAt', now + KEEPALIVE_TIMEOUT)
  else t.needAnotherKeepalive = true
}

/** After sending any authenticated message (data, keepalive, handshake). */
export function timersAnyAuthenticatedPacketSent (peer: Peer): void {
  peer.timers.sendKeepaliveAt = Infinity
}

/** After receiving any authenticated message. */
export function timersAnyAuthenticatedPacketReceived (peer: Peer): void {
  peer.timers.newHandshakeAt = Infinity
}

/** After sending or receiving any authenticated message. */
export function timersAnyAuthenticatedPacketTraversal (host: TimerHost, peer: Peer, now: number): void {
  if (peer.persistentKeepaliveMs > 0) arm(host, peer.timers, 'persistentKeepaliveAt', now + peer.persistentKeepaliveMs)
}

/** After sending a handshake initiation. */
export function timersHandshakeInitiated (host: TimerHost, peer: Peer, now: number): void {
  arm(host, peer.timers, 'retransmitHandshakeAt', now + REKEY_TIMEOUT + host.jitter())
}

/** A session was confirmed (initiator: response consumed; responder: first data on the new keys). */
export function timersHandshakeComplete (peer: Peer, now: number): void {
  peer.timers.retransmitHandshakeAt = Infinity
  peer.timers.handshakeAttempts = 0
  peer.timers.sentLastMinuteHandshake = false
  peer.lastHandshakeAt = now
}

/** New keys were derived (either role). */
export function timersSessionDerived (host: TimerHost, peer: Peer, now: number): void {
  arm(host, peer.timers, 'zeroKeyMaterialAt', now + REJECT_AFTER_TIME * 3)
}

/** Fires every deadline of `peer` that is due at `now`. */
export function expireTimers (host: TimerHost, peer: Peer, now: number): void {
  const t = peer.timers
  if (t.retransmitHandshakeAt <= now) {
    t.retransmitHandshakeAt = Infinity
    if (t.handshakeAttempts >= MAX_HANDSHAKE_ATTEMPTS) {
      // Paper 6.4: stop after REKEY_ATTEMPT_TIME; forget the keys later if nothing revives the peer.
      t.sendKeepaliveAt = Infinity
      host.abandonHandshake(peer, now)
      if (t.zeroKeyMaterialAt === Infinity) arm(host, t, 'zeroKeyMaterialAt', now + REJECT_AFTER_TIME * 3)
    } else {
      host.sendInitiation(peer, now, true)
    }
  }
  if (t.sendKeepaliveAt <= now) {
    t.sendKeepaliveAt = Infinity
    host.sendKeepalive(peer, now)
    if (t.needAnotherKeepalive) {
      t.needAnotherKeepalive = false
      arm(host, t, 'sendKeepaliveAt', now + KEEPALIVE_TIMEOUT)
    }
  }
  if (t.newHandshakeAt <= now) {
    t.newHandshakeAt = Infinity
    host.sendInitiation(peer, now, false)
  }
  if (t.zeroKeyMaterialAt <= now) {
    t.zeroKeyMaterialAt = Infinity
    host.zeroKeyMaterial(peer)
  }
  if (t.persistentKeepaliveAt <= now) {
    t.persistentKeepaliveAt = Infinity
    if (peer.persistentKeepaliveMs > 0) host.sendKeepalive(peer, now)
  }
}

type Deadline = 'retransmitHandshakeAt' | 'sendKeepaliveAt' | 'newHandshakeAt' | 'zeroKeyMaterialAt' | 'persistentKeepaliveAt'

function arm (host: TimerHost, timers: PeerTimers, which: Deadline, at: number): void {
  timers[which] = at
  host.noteDeadline(at)
}

