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

/**
 * The timer numbers of many peers in one Float64Array (a device's): a number in an object field is
 * a heap number of its own (16 bytes each, seven per peer); here each is 8 bytes in one array.
 * Slots of removed peers are reused.
 */
export class TimerSlab {
  values: Float64Array
  private readonly free: number[] = []
  private used = 0

  constructor (peers = 16) {
    this.values = new Float64Array(Math.max(1, peers) * SLOTS)
  }

  /** A cleared slot's first index. */
  allocate (): number {
    let base = this.free.pop()
    if (base === undefined) {
      if (this.used === this.values.length) {
        const grown = new Float64Array(this.values.length * 2)
        grown.set(this.values)
        this.values = grown
      }
      base = this.used
      this.used += SLOTS
    }
    this.values.fill(Infinity, base, base + LAST_INITIATION)
    this.values.fill(-Infinity, base + LAST_INITIATION, base + SLOTS)
    return base
  }

  release (base: number): void {
    this.free.push(base)
  }

  /** Slots in use (tests). */
  get size (): number { return this.used / SLOTS - this.free.length }
}

export class PeerTimers {
  private slab: TimerSlab
  private base: number
  /** Initiations sent in the current series (paper 6.4 gives up after REKEY_ATTEMPT_TIME). */
  handshakeAttempts = 0
  needAnotherKeepalive = false
  /** Paper 6.2: the "last minute" handshake on receive is tried once per session. */
  sentLastMinuteHandshake = false

  /** Without a slab (a peer outside a device): one of its own. */
  constructor (slab: TimerSlab = new TimerSlab(1)) {
    this.slab = slab
    this.base = slab.allocate()
  }

  /** Paper 6.4: resend the initiation if no response within REKEY_TIMEOUT (+ jitter). */
  get retransmitHandshakeAt (): number { return this.slab.values[this.base + RETRANSMIT_HANDSHAKE] }
  set retransmitHandshakeAt (at: number) { this.slab.values[this.base + RETRANSMIT_HANDSHAKE] = at }
  /** Paper 6.5: passive keepalive KEEPALIVE_TIMEOUT after data was received and nothing sent. */
  get sendKeepaliveAt (): number { return this.slab.values[this.base + SEND_KEEPALIVE] }
  set sendKeepaliveAt (at: number) { this.slab.values[this.base + SEND_KEEPALIVE] = at }
  /** Paper 6.2: data sent but nothing back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT -> new handshake. */
  get newHandshakeAt (): number { return this.slab.values[this.base + NEW_HANDSHAKE] }
  set newHandshakeAt (at: number) { this.slab.values[this.base + NEW_HANDSHAKE] = at }
  /** Paper 6.3: erase all keys 3 * REJECT_AFTER_TIME after the last session was derived. */
  get zeroKeyMaterialAt (): number { return this.slab.values[this.base + ZERO_KEY_MATERIAL] }
  set zeroKeyMaterialAt (at: number) { this.slab.values[this.base + ZERO_KEY_MATERIAL] = at }
  /** Paper 6.5: persistent keepalive interval after any authenticated packet in either direction. */
  get persistentKeepaliveAt (): number { return this.slab.values[this.base + PERSISTENT_KEEPALIVE] }
  set persistentKeepaliveAt (at: number) { this.slab.values[this.base + PERSISTENT_KEEPALIVE] = at }
  /** Peer.lastInitiationAt (handshake.ts): the last initiation taken from the peer. */
  get lastInitiationAt (): number { return this.slab.values[this.base + LAST_INITIATION] }
  set lastInitiationAt (at: number) { this.slab.values[this.base + LAST_INITIATION] = at }
  /** Peer.lastSentHandshakeAt (handshake.ts): our last initiation to the peer. */
  get lastSentHandshakeAt (): number { return this.slab.values[this.base + LAST_SENT_HANDSHAKE] }
  set lastSentHandshakeAt (at: number) { this.slab.values[this.base + LAST_SENT_HANDSHAKE] = at }

  earliest (): number {
    const v = this.slab.values
    const b = this.base
    return Math.min(v[b + RETRANSMIT_HANDSHAKE], v[b + SEND_KEEPALIVE], v[b + NEW_HANDSHAKE], v[b + ZERO_KEY_MATERIAL], v[b + PERSISTENT_KEEPALIVE])
  }

  clear (): void {
    this.slab.values.fill(Infinity, this.base, this.base + LAST_INITIATION)
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
    const base = own.allocate()
    own.values.set(this.slab.values.subarray(this.base, this.base + SLOTS), base)
    this.slab.release(this.base)
    this.slab = own
    this.base = base
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

