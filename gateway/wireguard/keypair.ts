/**
 * Session state of one peer (paper 5.4.5, 6.1): a keypair per completed handshake, and the
 * initiator's handshake while it waits for a response. Both are what a receiver index names.
 */
import { ReplayWindow, type InitiatorHandshake, type SessionKeys } from '../../proto/noise/index.ts'
import type { Peer } from './peer.ts'

export class Keypair {
  readonly kind = 'keypair'
  readonly peer: Peer
  readonly sendKey: Buffer
  readonly receiveKey: Buffer
  readonly localIndex: number
  readonly remoteIndex: number
  readonly isInitiator: boolean
  /** Monotonic ms when the keys were derived. */
  readonly createdAt: number
  /** Next nonce to send (paper 5.4.6). */
  sendCounter = 0n
  readonly replay = new ReplayWindow()

  constructor (peer: Peer, keys: SessionKeys, now: number) {
    this.peer = peer
    this.sendKey = keys.sendKey
    this.receiveKey = keys.receiveKey
    this.localIndex = keys.localIndex
    this.remoteIndex = keys.remoteIndex
    this.isInitiator = keys.isInitiator
    this.createdAt = now
  }

  /** Overwrites the key material (called when the keypair leaves the index table). */
  zero (): void {
    this.sendKey.fill(0)
    this.receiveKey.fill(0)
  }
}

/** Our initiation in flight; `state` is null only for the instant an index is being reserved. */
export class PendingHandshake {
  readonly kind = 'handshake'
  readonly peer: Peer
  state: InitiatorHandshake | null = null
  localIndex = 0
  /** A response has reached it past the load gate (device.ts lets one through without a cookie). */
  responseSeen = false
  constructor (peer: Peer) {
    this.peer = peer
  }
}

export type IndexEntry = Keypair | PendingHandshake
