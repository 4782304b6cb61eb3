/** Stack options: every limit and default in one validated place (defaults in constants.ts). */
import * as C from './constants.ts'
import type { CongestionControlName } from './cc/index.ts'

export interface TcpOptions {
  /** Tunnel MTU; the MSS we advertise is MTU - 40 (1420 -> 1380). */
  mtu: number
  /** Receive window ceiling per connection. */
  receiveBuffer: number
  /** Send buffer ceiling per connection (write() returns false beyond it). */
  sendBuffer: number
  /** What a connection may still buffer each way once the global limit is reached. */
  minBuffer: number
  /** Send buffers + out-of-order data + unread data of all connections together. */
  globalBufferLimit: number
  congestionControl: CongestionControlName
  initialWindowSegments: number
  /** Nagle's algorithm is off unless this is false (sockets: setNoDelay). */
  noDelay: boolean
  /**
   * Verify the checksum of every segment received. Off by default: segments reach the stack only
   * through WireGuard, whose Poly1305 tag already authenticated every byte (the kernel's
   * drivers/net/wireguard/receive.c marks decrypted packets CHECKSUM_UNNECESSARY for that reason).
   */
  verifyChecksums: boolean
  /** Pace data segments at a multiple of cwnd / SRTT instead of sending each window as one burst. */
  pacing: boolean
  /**
   * The most data segments one connection sends back to back: at its pacing rate, and in one turn
   * of the event loop (with a shell that reports turns: TcpStack). 0: no cap but the pacing rate's.
   */
  maxBurst: number
  /**
   * Tail loss probes (RFC 8985 7): when an ACK is overdue by ~2 SRTT, send one segment to draw one,
   * instead of waiting for the retransmission timeout (at least 200 ms).
   */
  tailLossProbe: boolean
  /**
   * With a shell that reports input batches (TcpStack: one poll phase of the event loop): in-order
   * data reaches the application and the every-second-segment ACK leaves once per batch, as does
   * the ACK for out-of-order segments when SACK is in use.
   */
  batching: boolean
  sack: boolean
  timestamps: boolean
  windowScaling: boolean
  delayedAck: number
  minRto: number
  maxRto: number
  initialRto: number
  synRetries: number
  synAckRetries: number
  maxRetransmits: number
  timeWait: number
  finWait2Timeout: number
  closeWaitTimeout: number
  lastAckTimeout: number
  /** RFC 5482 user timeout; 0 disables. */
  userTimeout: number
  keepAlive: boolean
  keepAliveIdle: number
  keepAliveInterval: number
  keepAliveProbes: number
  maxConnections: number
  maxConnectionsPerPeer: number
  maxHalfOpen: number
  maxTimeWait: number
  maxOutOfOrderSegments: number
  challengeAcksPerSecond: number
  rstsPerSecond: number
  ephemeralPortMin: number
  ephemeralPortMax: number
  /** Key for ISNs and timestamp offsets (RFC 6528); random when absent. */
  isnSecret?: Uint8Array
}

export const DEFAULT_TCP_OPTIONS: Readonly<TcpOptions> = Object.freeze({
  mtu: C.DEFAULT_MTU,
  receiveBuffer: C.DEFAULT_RECEIVE_BUFFER,
  sendBuffer: C.DEFAULT_SEND_BUFFER,
  minBuffer: C.DEFAULT_MIN_BUFFER,
  globalBufferLimit: C.DEFAULT_GLOBAL_BUFFER_LIMIT,
  congestionControl: 'cubic',
  initialWindowSegments: C.INITIAL_WINDOW_SEGMENTS,
  noDelay: true,
  verifyChecksums: false,
  pacing: true,
  maxBurst: C.DEFAULT_MAX_BURST,
  tailLossProbe: true,
  batching: true,
  sack: true,
  timestamps: true,
  windowScaling: true,
  delayedAck: C.DEFAULT_DELAYED_ACK,
  minRto: C.DEFAULT_MIN_RTO,
  maxRto: C.DEFAULT_MAX_RTO,
  initialRto: C.INITIAL_RTO,
  synRetries: C.DEFAULT_SYN_RETRIES,
  synAckRetries: C.DEFAULT_SYN_ACK_RETRIES,
  maxRetransmits: C.DEFAULT_MAX_RETRANSMITS,
  timeWait: C.DEFAULT_TIME_WAIT,
  finWait2Timeout: C.DEFAULT_FIN_WAIT_2_TIMEOUT,
  closeWaitTimeout: C.DEFAULT_CLOSE_WAIT_TIMEOUT,
  lastAckTimeout: C.DEFAULT_LAST_ACK_TIMEOUT,
  userTimeout: C.DEFAULT_USER_TIMEOUT,
  keepAlive: false,
  keepAliveIdle: C.DEFAULT_KEEPALIVE_IDLE,
  keepAliveInterval: C.DEFAULT_KEEPALIVE_INTERVAL,
  keepAliveProbes: C.DEFAULT_KEEPALIVE_PROBES,
  maxConnections: C.DEFAULT_MAX_CONNECTIONS,
  maxConnectionsPerPeer: C.DEFAULT_MAX_CONNECTIONS_PER_PEER,
  maxHalfOpen: C.DEFAULT_MAX_HALF_OPEN,
  maxTimeWait: C.DEFAULT_MAX_TIME_WAIT,
  maxOutOfOrderSegments: C.DEFAULT_MAX_OUT_OF_ORDER_SEGMENTS,
  challengeAcksPerSecond: C.DEFAULT_CHALLENGE_ACKS_PER_SECOND,
  rstsPerSecond: C.DEFAULT_RSTS_PER_SECOND,
  ephemeralPortMin: C.EPHEMERAL_PORT_MIN,
  ephemeralPortMax: C.EPHEMERAL_PORT_MAX,
})

/** Options after defaults and derived values. */
export interface ResolvedTcpOptions extends TcpOptions {
  /** MSS we advertise: MTU - 40 (RFC 9293 3.7.1 / RFC 6691). */
  mss: number
  /** Our window scale shift: the smallest that lets 16 bits carry receiveBuffer (RFC 7323 2.3). */
  windowShift: number
}

export function resolveTcpOptions (overrides: Partial<TcpOptions> = {}): ResolvedTcpOptions {
  const o: TcpOptions = { ...DEFAULT_TCP_OPTIONS }
  for (const [key, value] of Object.entries(overrides)) {
    if (value !== undefined) (o as unknown as Record<string, unknown>)[key] = value
  }
  const positive = (name: keyof TcpOptions, min = 1): void => {
    const v = o[name]
    if (typeof v !== 'number' || !Number.isFinite(v) || v < min) throw new RangeError(`TCP option ${name} must be a number >= ${min}`)
  }
  positive('mtu', C.IPV4_HEADER_LEN + C.TCP_BASE_HEADER_LEN + 64 + C.TIMESTAMP_OPTION_SPACE + 40)
  if (o.mtu > 65535) throw new RangeError('TCP option mtu must be <= 65535')
  for (const name of ['receiveBuffer', 'sendBuffer', 'minBuffer', 'globalBufferLimit', 'initialWindowSegments', 'minRto',
    'maxRto', 'initialRto', 'maxConnections', 'maxConnectionsPerPeer', 'maxHalfOpen', 'maxOutOfOrderSegments',
    'keepAliveIdle', 'keepAliveInterval', 'keepAliveProbes', 'challengeAcksPerSecond', 'rstsPerSecond'] as const) positive(name)
  for (const name of ['delayedAck', 'synRetries', 'synAckRetries', 'maxRetransmits', 'timeWait', 'finWait2Timeout',
    'closeWaitTimeout', 'lastAckTimeout', 'userTimeout', 'maxTimeWait', 'maxBurst'] as const) positive(name, 0)
  if (o.minRto > o.maxRto) throw new RangeError('TCP option minRto must be <= maxRto')
  if (o.ephemeralPortMin < 1 || o.ephemeralPortMax > 65535 || o.ephemeralPortMin > o.ephemeralPortMax) {
    throw new RangeError('TCP ephemeral port range must be within 1..65535')
  }
  if (o.congestionControl !== 'cubic' && o.congestionControl !== 'newreno') throw new RangeError('TCP congestionControl must be cubic or newreno')
  const mss = o.mtu - C.IPV4_HEADER_LEN - C.TCP_BASE_HEADER_LEN
  let windowShift = 0
  while (windowShift < C.MAX_WINDOW_SHIFT && (0xffff << windowShift) < o.receiveBuffer) windowShift++
  return { ...o, mss, windowShift }
}
