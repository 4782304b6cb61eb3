/**
 * The WireGuard device core, sans-IO (boringtun / wireguard-go style): fed datagrams with their
 * source and the current time, IP packets from the stack, and `updateTimers(now)`; it answers through
 * a `DeviceIo` (datagrams to send, packets to deliver). No sockets, no timers, no clock reads:
 * `now` is monotonic ms supplied by the caller, and wall-clock time (for TAI64N) is
 * `now + wallClockOffset`.
 *
 * Receive path: message type -> handshake (MAC1, cookie/ratelimit under load, Noise, session) or
 * transport (index -> keypair -> decrypt -> replay window -> cryptokey routing check -> deliver).
 * Send path: destination -> peer (allowed IPs) -> current keypair or stage + handshake.
 */
import type { Logger } from 'pino'
import {
  CookieChecker, mac1Key, verifyMac1, defaultAead, type AeadBackend, type StaticIdentity,
  publicKeyFromPrivate, REKEY_AFTER_TIME, REKEY_TIMEOUT_JITTER_MAX,
} from '../../proto/noise/index.ts'
import {
  messageType, MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_COOKIE_REPLY, MESSAGE_TRANSPORT, MESSAGE_HANDSHAKE_SENDER_OFFSET,
  MESSAGE_RESPONSE_RECEIVER_OFFSET,
} from '../../proto/wire/wireguard.ts'
import { WireError } from '../../proto/wire/errors.ts'
import { formatIPv4, ipv4Destination } from '../../proto/wire/ipv4.ts'
import { addressBytes, clientPrefix, formatHostPort } from '../../proto/net/address.ts'
import type { CounterFamily, Metrics } from '../metrics.ts'
import { TUNNEL_FAILED_ATTEMPTS, type TunnelFailureReason } from '../../proto/metrics.ts'
import { AllowedIps } from './allowed-ips.ts'
import { IndexTable, cryptoRandomUint32, type RandomUint32 } from './index-table.ts'
import type { IndexEntry } from './keypair.ts'
import { NO_PACKETS, Peer, type PeerOptions } from './peer.ts'
import { RateLimiter } from './ratelimiter.ts'
import { TimerSlab, expireTimers, type TimerHost } from './timers.ts'
import { TunnelLifetimes } from './tunnels.ts'
import {
  RATELIMIT_BURST, RATELIMIT_GC_INTERVAL, RATELIMIT_PACKETS_PER_SECOND, UNDER_LOAD_AFTER_TIME,
  UNDER_LOAD_HANDSHAKES_PER_SECOND, MAX_STAGED_PACKETS,
} from './limits.ts'
import * as handshake from './handshake.ts'
import * as data from './data.ts'

export interface DeviceIo {
  /** Sends one UDP datagram. The device does not touch `datagram` afterwards. */
  sendDatagram (datagram: Buffer, address: string, port: number): void
  /** One authenticated IPv4 packet from `peer` (source inside its allowed IPs, padding removed). */
  deliverPacket (packet: Buffer, peer: Peer, now: number): void
  /** The peer's endpoint moved to the source of an authenticated message (roaming, paper 2.1). */
  endpointChanged? (peer: Peer): void
}

export interface DeviceOptions {
  privateKey: Buffer
  io: DeviceIo
  metrics: Metrics
  logger?: Logger
  /** Wall-clock ms minus monotonic ms, for TAI64N timestamps (paper 5.4.2). */
  wallClockOffset?: number
  /** Source of random 32-bit numbers for indices and jitter (tests inject a seeded one). */
  random?: RandomUint32
  aead?: AeadBackend
  /** Handshake messages per second above which the device is under load (paper 5.3). */
  underLoadHandshakesPerSecond?: number
  rateLimitPerSecond?: number
  rateLimitBurst?: number
  /**
   * TEST ONLY: rekey sessions after this many ms instead of REKEY_AFTER_TIME, in both roles, so a
   * test sees sessions rotate within seconds. Never set in production.
   */
  testingRekeyAfterTime?: number
}

export interface PeerStatus {
  publicKey: string
  endpoint: string | null
  allowedIPs: string[]
  persistentKeepalive: number
  /** Wall-clock ms of the last completed handshake, or null. */
  lastHandshakeAt: number | null
  hasSession: boolean
  rxBytes: number
  txBytes: number
  rxPackets: number
  txPackets: number
}

export class Device implements TimerHost {
  readonly identity: StaticIdentity
  readonly io: DeviceIo
  readonly logger: Logger | undefined
  readonly aead: AeadBackend
  readonly wallClockOffset: number
  readonly rekeyAfterTime: number
  readonly rekeyAsResponder: boolean
  readonly peers = new Map<string, Peer>()
  readonly allowedIps = new AllowedIps<Peer>()
  /** Every peer's timer numbers (timers.ts). */
  readonly timerSlab = new TimerSlab()
  readonly indexTable: IndexTable<IndexEntry>
  readonly cookieChecker: CookieChecker
  readonly mac1Key: Buffer
  readonly rateLimiter: RateLimiter
  readonly random: RandomUint32

  // Counters (see gateway/index.ts for the exported names).
  readonly dropped: CounterFamily
  readonly rejected: CounterFamily
  readonly completed: CounterFamily
  readonly sent: CounterFamily
  readonly received: CounterFamily
  /** Tunnel durations for the cc_tunnel_connection_duration_seconds histogram. */
  readonly tunnels: TunnelLifetimes

  private readonly underLoadThreshold: number
  private loadWindowStart = -Infinity
  private loadWindowCount = 0
  private underLoadUntil = -Infinity
  private rateLimiterGcAt = Infinity
  /** Lower bound of every pending deadline; may be early (then updateTimers just rescans). */
  private earliestDeadline = Infinity

  constructor (options: DeviceOptions) {
    this.identity = { privateKey: Buffer.from(options.privateKey), publicKey: publicKeyFromPrivate(options.privateKey) }
    this.io = options.io
    this.logger = options.logger
    this.aead = options.aead ?? defaultAead
    this.wallClockOffset = options.wallClockOffset ?? 0
    this.random = options.random ?? cryptoRandomUint32
    this.indexTable = new IndexTable(this.random)
    this.rekeyAfterTime = options.testingRekeyAfterTime ?? REKEY_AFTER_TIME
    this.rekeyAsResponder = options.testingRekeyAfterTime !== undefined
    this.cookieChecker = new CookieChecker(this.identity.publicKey)
    this.mac1Key = mac1Key(this.identity.publicKey)
    this.underLoadThreshold = options.underLoadHandshakesPerSecond ?? UNDER_LOAD_HANDSHAKES_PER_SECOND
    this.rateLimiter = new RateLimiter(options.rateLimitPerSecond ?? RATELIMIT_PACKETS_PER_SECOND, options.rateLimitBurst ?? RATELIMIT_BURST)
    const m = options.metrics
    this.dropped = m.family('wg_packets_dropped', 'WireGuard datagrams and tunnel packets dropped, by reason')
    this.rejected = m.family('wg_handshakes_rejected', 'WireGuard handshake messages rejected, by reason')
    this.completed = m.family('wg_handshakes_completed', 'WireGuard handshakes completed, by our role')
    this.sent = m.family('wg_messages_sent', 'WireGuard messages sent, by type')
    this.received = m.family('wg_messages_received', 'Authenticated WireGuard messages received, by type')
    const failed = m.sharedCounter(TUNNEL_FAILED_ATTEMPTS)
    this.rejected.mirror((reason, by) => { failed.inc({ reason: FAILED_ATTEMPT_REASON[reason] ?? 'handshake_rejected' }, by) })
    const durations = m.histogram('cc_tunnel_connection_duration_seconds', 'Tunnel lifetimes: from the first handshake to REJECT_AFTER_TIME without one, or to the peer\'s removal', TUNNEL_DURATION_BUCKETS)
    this.tunnels = new TunnelLifetimes(seconds => { durations.observe(seconds) })
  }

  get publicKey (): Buffer { return this.identity.publicKey }

  // Peers

  addPeer (options: PeerOptions): Peer {
    const peer = new Peer(options, this.timerSlab)
    if (this.peers.has(peer.name)) {
      peer.timers.detach()
      throw new Error(`peer ${peer.name} already exists`)
    }
    this.peers.set(peer.name, peer)
    for (const prefix of options.allowedIPs) this.allowedIps.insert(prefix, peer)
    // A peer we can reach and must keep alive gets a handshake right away (wireguard-go: keepalive on up).
    if (peer.persistentKeepaliveMs > 0 && peer.endpoint !== null) {
      peer.timers.persistentKeepaliveAt = -Infinity
      this.noteDeadline(-Infinity)
    }
    return peer
  }

  /** Updates the mutable settings of an existing peer (keeps its sessions). */
  updatePeer (options: PeerOptions): Peer {
    const peer = this.peers.get(Buffer.from(options.publicKey).toString('base64'))
    if (peer === undefined) throw new Error('no such peer')
    peer.presharedKey = options.presharedKey ?? null
    if (options.endpoint != null) peer.endpoint = options.endpoint
    peer.persistentKeepaliveMs = (options.persistentKeepalive ?? 0) * 1000
    this.allowedIps.removeOwner(peer)
    for (const prefix of options.allowedIPs) this.allowedIps.insert(prefix, peer)
    return peer
  }

  /** `now` ends the peer's tunnel for the duration histogram (default: at its lapse). */
  removePeer (publicKey: Buffer, now = Infinity): boolean {
    const peer = this.peers.get(publicKey.toString('base64'))
    if (peer === undefined) return false
    this.tunnels.removed(peer, now)
    this.zeroKeyMaterial(peer)
    peer.timers.clear()
    peer.timers.detach()
    this.allowedIps.removeOwner(peer)
    this.peers.delete(peer.name)
    return true
  }

  peer (publicKey: Buffer | string): Peer | undefined {
    return this.peers.get(typeof publicKey === 'string' ? publicKey : publicKey.toString('base64'))
  }

  // Input

  /** One UDP datagram from `address`:`port`. Never throws: bad input is counted and dropped. */
  receive (datagram: Buffer, address: string, port: number, now: number): void {
    try {
      this.dispatch(datagram, address, port, now)
    } catch (err) {
      this.dropped.inc('internal_error')
      this.logger?.error({ err, address, port }, 'datagram processing failed')
    }
  }

  /** One IPv4 packet from the stack, routed to a peer by its destination (cryptokey routing). */
  send (packet: Buffer, now: number): void {
    try {
      if (packet.length < 20 || packet[0] >> 4 !== 4) {
        this.dropped.inc('tx_not_ipv4')
        return
      }
      const peer = this.allowedIps.lookup(ipv4Destination(packet))
      if (peer === undefined) {
        this.dropped.inc('no_route')
        this.logger?.debug({ dst: formatIPv4(ipv4Destination(packet)) }, 'no peer for destination')
        return
      }
      data.sendPacket(this, peer, packet, now)
    } catch (err) {
      this.dropped.inc('internal_error')
      this.logger?.error({ err }, 'packet send failed')
    }
  }

  // Time

  /** Fires every timer due at `now`. Call at `nextDeadline()` (or any time: early calls are harmless). */
  updateTimers (now: number): void {
    let earliest = Infinity
    this.earliestDeadline = Infinity
    for (const peer of this.peers.values()) {
      if (peer.timers.earliest() <= now) {
        try {
          expireTimers(this, peer, now)
        } catch (err) {
          this.dropped.inc('internal_error')
          this.logger?.error({ err, peer: peer.name }, 'timer processing failed')
        }
      }
      earliest = Math.min(earliest, peer.timers.earliest())
    }
    if (this.rateLimiterGcAt <= now) {
      this.rateLimiter.collect(now)
      this.rateLimiterGcAt = this.rateLimiter.size > 0 ? now + RATELIMIT_GC_INTERVAL : Infinity
    }
    this.earliestDeadline = Math.min(this.earliestDeadline, earliest, this.rateLimiterGcAt)
  }

  /** Monotonic ms of the earliest pending timer (Infinity if none). May be early, never late. */
  nextDeadline (): number {
    return this.earliestDeadline
  }

  // Status

  underLoad (now: number): boolean {
    return now < this.underLoadUntil
  }

  peerStatus (peer: Peer, now: number): PeerStatus {
    const current = peer.current
    return {
      publicKey: peer.name,
      endpoint: peer.endpoint === null ? null : formatEndpoint(peer.endpoint.address, peer.endpoint.port),
      allowedIPs: this.allowedIps.prefixesOf(peer).map(p => `${formatIPv4(p.network)}/${p.prefixLength}`),
      persistentKeepalive: peer.persistentKeepaliveMs / 1000,
      lastHandshakeAt: peer.lastHandshakeAt === null ? null : Math.round(peer.lastHandshakeAt + this.wallClockOffset),
      hasSession: current !== null && data.keypairUsable(current, now),
      rxBytes: peer.rxBytes,
      txBytes: peer.txBytes,
      rxPackets: peer.rxPackets,
      txPackets: peer.txPackets,
    }
  }

  // TimerHost (also used by handshake.ts / data.ts)

  noteDeadline (at: number): void {
    if (at < this.earliestDeadline) this.earliestDeadline = at
  }

  jitter (): number {
    return this.random() % REKEY_TIMEOUT_JITTER_MAX
  }

  sendInitiation (peer: Peer, now: number, isRetry: boolean): void {
    handshake.sendInitiation(this, peer, now, isRetry)
  }

  sendKeepalive (peer: Peer, now: number): void {
    data.sendKeepalive(this, peer, now)
  }

  abandonHandshake (peer: Peer): void {
    this.logger?.debug({ peer: peer.name }, 'handshake did not complete after REKEY_ATTEMPT_TIME; giving up')
    this.dropStaged(peer, 'handshake_timeout')
  }

  zeroKeyMaterial (peer: Peer): void {
    for (const kp of [peer.previous, peer.current, peer.next]) {
      if (kp !== null) this.deleteKeypairIndex(kp.localIndex, kp)
    }
    peer.previous = peer.current = peer.next = null
    if (peer.handshake !== null) this.indexTable.delete(peer.handshake.localIndex)
    peer.handshake = null
    this.dropStaged(peer, 'keys_zeroed')
  }

  // Helpers for handshake.ts / data.ts

  /** Sends an authenticated message to the peer's endpoint and counts it. False without endpoint. */
  transmit (peer: Peer, datagram: Buffer): boolean {
    const endpoint = peer.endpoint
    if (endpoint === null) return false
    peer.txBytes += datagram.length
    peer.txPackets++
    this.io.sendDatagram(datagram, endpoint.address, endpoint.port)
    return true
  }

  /** Removes a keypair from the index table and erases its keys. */
  deleteKeypairIndex (index: number, kp: { zero (): void }): void {
    if (this.indexTable.get(index) === kp) this.indexTable.delete(index)
    kp.zero()
  }

  stage (peer: Peer, packet: Buffer): void {
    if (peer.staged.length >= MAX_STAGED_PACKETS) {
      peer.staged.shift()
      this.dropped.inc('queue_full')
    }
    if (peer.staged === NO_PACKETS) peer.staged = [packet]
    else peer.staged.push(packet)
  }

  dropStaged (peer: Peer, reason: string): void {
    let n = 0
    for (const p of peer.staged) if (p.length > 0) n++
    if (n > 0) this.dropped.inc(reason, n)
    peer.staged = NO_PACKETS
  }

  // Dispatch

  private dispatch (datagram: Buffer, address: string, port: number, now: number): void {
    let type: number
    try {
      type = messageType(datagram)
    } catch (err) {
      if (!(err instanceof WireError)) throw err
      this.dropped.inc(err.code)
      return
    }
    if (type === MESSAGE_TRANSPORT) {
      data.receiveTransport(this, datagram, address, port, now)
      return
    }
    if (type === MESSAGE_COOKIE_REPLY) {
      handshake.receiveCookieReply(this, datagram, now)
      return
    }
    // A response to an initiation of ours in flight: the work it costs is bounded by the initiations
    // we chose to send (one response each passes here), so it neither counts as load nor needs a
    // cookie; a gateway resuming thousands of peers at once is not turned away by its own replies.
    if (type === MESSAGE_RESPONSE && this.firstResponseToOwnInitiation(datagram)) {
      if (!verifyMac1(datagram, this.mac1Key)) {
        this.rejected.inc('mac1')
        return
      }
      handshake.receiveResponse(this, datagram, address, port, now)
      return
    }
    // Initiation or response: the DoS gate of paper 5.3 before any Diffie-Hellman.
    this.countHandshakeLoad(now)
    if (!verifyMac1(datagram, this.mac1Key)) {
      this.rejected.inc('mac1')
      return
    }
    if (this.underLoad(now)) {
      const source = sourceBytes(address, port)
      if (!this.cookieChecker.verifyMac2(datagram, source, now)) {
        const reply = this.cookieChecker.createReply(datagram, datagram.readUInt32LE(MESSAGE_HANDSHAKE_SENDER_OFFSET), source, now)
        this.io.sendDatagram(reply, address, port)
        this.sent.inc('cookie_reply')
        this.rejected.inc('cookie_sent')
        return
      }
      // An IPv6 sender is limited by its /64, as wireguard-go does: one host holds a whole prefix.
      if (!this.rateLimiter.allow(clientPrefix(address), now)) {
        this.rejected.inc('ratelimit')
        return
      }
      if (this.rateLimiterGcAt === Infinity) {
        this.rateLimiterGcAt = now + RATELIMIT_GC_INTERVAL
        this.noteDeadline(this.rateLimiterGcAt)
      }
    }
    if (type === MESSAGE_INITIATION) handshake.receiveInitiation(this, datagram, address, port, now)
    else if (type === MESSAGE_RESPONSE) handshake.receiveResponse(this, datagram, address, port, now)
  }

  /** True once per pending handshake of ours: the first response naming its index. */
  private firstResponseToOwnInitiation (datagram: Buffer): boolean {
    const entry = this.indexTable.get(datagram.readUInt32LE(MESSAGE_RESPONSE_RECEIVER_OFFSET))
    if (entry === undefined || entry.kind !== 'handshake' || entry.state === null || entry.responseSeen) return false
    entry.responseSeen = true
    return true
  }

  /** Under load = more handshake messages in the current one-second window than the threshold. */
  private countHandshakeLoad (now: number): void {
    if (now - this.loadWindowStart >= 1000) {
      this.loadWindowStart = now
      this.loadWindowCount = 0
    }
    this.loadWindowCount++
    if (this.loadWindowCount > this.underLoadThreshold) this.underLoadUntil = now + UNDER_LOAD_AFTER_TIME
  }
}

/** wg_handshakes_rejected reasons as failed connection attempts (anything else: handshake_rejected). */
const FAILED_ATTEMPT_REASON: Record<string, TunnelFailureReason> = {
  mac1: 'invalid_mac',
  unknown_peer: 'unknown_key',
  cookie_sent: 'cookie_under_load',
  ratelimit: 'cookie_under_load',
}

/** Seconds: a minute to a week. */
const TUNNEL_DURATION_BUCKETS = [60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 24 * 3600, 3 * 24 * 3600, 7 * 24 * 3600]

/** Peers with a live tunnel (a handshake within REJECT_AFTER_TIME); ends the lapsed ones' tunnels. */
export function activeTunnels (device: Device, now: number): number {
  let live = 0
  for (const peer of device.peers.values()) {
    device.tunnels.lapse(peer, now)
    if (TunnelLifetimes.live(peer, now)) live++
  }
  return live
}

/**
 * The sender for cookies (paper 5.4.7: its external IP address and UDP port): the address's bytes
 * (4 for IPv4, a mapped address included; 16 for IPv6) and the port, so one sender has one form.
 */
export function sourceBytes (address: string, port: number): Buffer {
  const ip = addressBytes(address)
  if (ip === null) return Buffer.from(`${address}/${port}`, 'latin1')
  const out = Buffer.alloc(ip.length + 2)
  out.set(ip)
  out.writeUInt16BE(port, ip.length)
  return out
}

export function formatEndpoint (address: string, port: number): string {
  // A stream endpoint (streams.ts) shows its transport: tls:198.18.0.2:40122.
  if (address.startsWith('tls:')) return `tls:${formatEndpoint(address.slice(4), port)}`
  return formatHostPort(address, port)
}

export { Peer }
