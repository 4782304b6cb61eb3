/**
 * Tunnel lifetimes, for metrics. A peer's tunnel is up from its first completed handshake until
 * REJECT_AFTER_TIME passes without another (paper 6.1: no session key is usable after that), or
 * until the peer is removed. Sans-IO like the device: `now` is the caller's monotonic ms, and the
 * end of a lapsed tunnel is its computed lapse time, whenever the lapse is noticed.
 */
import { REJECT_AFTER_TIME } from '../../proto/noise/index.ts'
import type { Peer } from './peer.ts'

export class TunnelLifetimes {
  /** Called with each ended tunnel's duration in seconds. */
  private readonly observe: (seconds: number) => void

  constructor (observe: (seconds: number) => void) {
    this.observe = observe
  }

  /** A handshake completed (before `lastHandshakeAt` moves): a lapsed tunnel ends, a new one begins. */
  handshake (peer: Peer, now: number): void {
    this.lapse(peer, now)
    if (peer.tunnelSince === null) peer.tunnelSince = now
  }

  /** Ends the peer's tunnel if its last handshake is REJECT_AFTER_TIME old. */
  lapse (peer: Peer, now: number): void {
    const last = peer.lastHandshakeAt
    if (peer.tunnelSince !== null && last !== null && now - last >= REJECT_AFTER_TIME) this.end(peer, last + REJECT_AFTER_TIME)
  }

  /** The peer is going away: its tunnel ends now (or at its lapse, if that came first). */
  removed (peer: Peer, now: number): void {
    if (peer.tunnelSince === null) return
    this.end(peer, Math.min(now, (peer.lastHandshakeAt ?? now) + REJECT_AFTER_TIME))
  }

  /** Live: a handshake within REJECT_AFTER_TIME. */
  static live (peer: Peer, now: number): boolean {
    return peer.lastHandshakeAt !== null && now - peer.lastHandshakeAt < REJECT_AFTER_TIME
  }

  private end (peer: Peer, at: number): void {
    this.observe(Math.max(0, at - peer.tunnelSince!) / 1000)
    peer.tunnelSince = null
  }
}
