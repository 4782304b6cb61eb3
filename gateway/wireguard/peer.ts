/** One configured peer: identity, cryptokey routing entries, sessions, timers, queue and counters. */
import { CookieGenerator } from '../../proto/noise/index.ts'
import type { IPv4Prefix } from '../../proto/wire/ipv4.ts'
import type { Keypair, PendingHandshake } from './keypair.ts'
import { PeerTimers, type TimerSlab } from './timers.ts'

export interface Endpoint { address: string, port: number }

export interface PeerOptions {
  publicKey: Buffer
  presharedKey?: Buffer | null
  allowedIPs: IPv4Prefix[]
  /** Where to send before the peer has sent us anything (it then roams, paper 2.1). */
  endpoint?: Endpoint | null
  /** Seconds between keepalives when nothing else is sent; 0 = off (paper 6.5). */
  persistentKeepalive?: number
}

/** The staged queue of every peer with nothing staged (frozen: a push throws; Device.stage replaces it). */
export const NO_PACKETS = Object.freeze([]) as unknown as Buffer[]

export class Peer {
  /** Base64 public key: the peer's name in logs, maps and status, and the only copy of the key it keeps. */
  readonly name: string
  presharedKey: Buffer | null
  persistentKeepaliveMs: number
  endpoint: Endpoint | null
  /** Built when first needed: a peer that never handshakes keeps none (three keys and a MAC buffer). */
  private cookies: CookieGenerator | null = null

  // Sessions (paper 6.1; wireguard-go keypairs.previous/current/next).
  previous: Keypair | null = null
  current: Keypair | null = null
  /** Responder-side keypair not yet confirmed by a data packet from the initiator. */
  next: Keypair | null = null
  handshake: PendingHandshake | null = null

  // Replay/flood protection of initiations from this peer (paper 5.1).
  lastTimestamp: Buffer | null = null

  readonly timers: PeerTimers
  /** Outgoing packets waiting for a session (zero-length = keepalive); NO_PACKETS while none are. */
  staged: Buffer[] = NO_PACKETS

  rxBytes = 0
  txBytes = 0
  rxPackets = 0
  txPackets = 0
  /** Monotonic ms of the last completed handshake, or null. */
  lastHandshakeAt: number | null = null
  /** Monotonic ms of the first handshake of the tunnel now up, or null (tunnels.ts). */
  tunnelSince: number | null = null

  /** `timerSlab`: the device's, where this peer's timer numbers live (default: one of its own). */
  constructor (options: PeerOptions, timerSlab?: TimerSlab) {
    this.timers = new PeerTimers(timerSlab)
    this.name = options.publicKey.toString('base64')
    this.presharedKey = options.presharedKey ?? null
    this.endpoint = options.endpoint ?? null
    this.persistentKeepaliveMs = (options.persistentKeepalive ?? 0) * 1000
  }

  // Replay/flood protection of initiations from this peer (paper 5.1), kept in the timer slab.
  get lastInitiationAt (): number { return this.timers.lastInitiationAt }
  set lastInitiationAt (at: number) { this.timers.lastInitiationAt = at }
  get lastSentHandshakeAt (): number { return this.timers.lastSentHandshakeAt }
  set lastSentHandshakeAt (at: number) { this.timers.lastSentHandshakeAt = at }

  /**
   * The 32-byte key, decoded from `name` at each use (a handshake, the cookie generator's
   * construction): an idle peer keeps no Buffer for it.
   */
  get publicKey (): Buffer {
    return Buffer.from(this.name, 'base64')
  }

  /** Macs for the messages we send this peer and the cookie it last gave us (paper 5.4.4, 5.4.7). */
  get cookieGenerator (): CookieGenerator {
    this.cookies ??= new CookieGenerator(this.publicKey)
    return this.cookies
  }

  /** Roaming (paper 2.1): the endpoint follows the latest authenticated packet. True when it changed. */
  setEndpoint (address: string, port: number): boolean {
    const current = this.endpoint
    if (current !== null && current.port === port && current.address === address) return false
    this.endpoint = { address, port }
    return true
  }
}
