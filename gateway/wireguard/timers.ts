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

export class PeerTimers {
  /** Paper 6.4: resend the initiation if no response within REKEY_TIMEOUT (+ jitter). */
  retransmitHandshakeAt = Infinity
  /** Paper 6.5: passive keepalive KEEPALIVE_TIMEOUT after data was received and nothing sent. */
  sendKeepaliveAt = Infinity
  /** Paper 6.2: data sent but nothing back for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT -> new handshake. */
  newHandshakeAt = Infinity
  /** Paper 6.3: erase all keys 3 * REJECT_AFTER_TIME after the last session was derived. */
  zeroKeyMaterialAt = Infinity
  /** Paper 6.5: persistent keepalive interval after any authenticated packet in either direction. */
  persistentKeepaliveAt = Infinity
  /** Initiations sent in the current series (paper 6.4 gives up after REKEY_ATTEMPT_TIME). */
  handshakeAttempts = 0
  needAnotherKeepalive = false
  /** Paper 6.2: the "last minute" handshake on receive is tried once per session. */
  sentLastMinuteHandshake = false

  earliest (): number {
    return Math.min(this.retransmitHandshakeAt, this.sendKeepaliveAt, this.newHandshakeAt, this.zeroKeyMaterialAt, this.persistentKeepaliveAt)
  }

  clear (): void {
    this.retransmitHandshakeAt = this.sendKeepaliveAt = this.newHandshakeAt = Infinity
    this.zeroKeyMaterialAt = this.persistentKeepaliveAt = Infinity
    this.handshakeAttempts = 0
    this.needAnotherKeepalive = false
    this.sentLastMinuteHandshake = false
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

