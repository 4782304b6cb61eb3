/**
 * The gateway's IPv4 layer. It owns one tunnel address; the WireGuard device hands it every
 * authenticated packet (source already checked against the peer's allowed IPs) and it:
 *  - validates the header (proto/wire/ipv4.ts),
 *  - drops anything not addressed to the gateway itself: peers can never reach each other through
 *    us (isolation by construction, no forwarding),
 *  - drops fragments (peers use an MTU that never fragments; reassembly would be an attack surface),
 *  - answers ICMP echo requests (RFC 792),
 *  - dispatches other protocols (TCP = 6) to registered handlers.
 * `send` passes a complete datagram to the device, which picks the peer by destination.
 */
import type { Logger } from 'pino'
import type { Metrics, CounterFamily } from '../metrics.ts'
import { WireError } from '../../proto/wire/errors.ts'
import {
  parseIPv4, emitIPv4, IPPROTO_ICMP, IPV4_MIN_HEADER_LEN, DEFAULT_TTL, type IPv4Parsed,
} from '../../proto/wire/ipv4.ts'
import { parseIcmpHeader, parseIcmpEcho, emitIcmpEcho, icmpEchoLength, ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY } from '../../proto/wire/icmp.ts'

export interface IpHandler {
  /** `datagram` is exactly the IPv4 datagram (header + payload, trailing padding removed). */
  input (ip: IPv4Parsed, datagram: Buffer, now: number): void
}

export interface IpLayerOptions {
  /** The gateway's tunnel address as a 32-bit number (e.g. parseIPv4Address('10.100.0.1')). */
  address: number
  metrics: Metrics
  /** Hands a full IPv4 datagram to the WireGuard device. */
  send: (datagram: Buffer) => void
  logger?: Logger
}

export class IpLayer {
  readonly address: number
  private readonly handlers = new Map<number, IpHandler>()
  private readonly output: (datagram: Buffer) => void
  private readonly dropped: CounterFamily
  private readonly packets: CounterFamily
  private readonly logger: Logger | undefined
  private nextIdent = 1

  constructor (opts: IpLayerOptions) {
    this.address = opts.address >>> 0
    this.output = opts.send
    this.logger = opts.logger
    this.dropped = opts.metrics.family('ip_dropped', 'IPv4 packets dropped by the gateway IP layer, by reason')
    this.packets = opts.metrics.family('ip_packets', 'IPv4 packets through the gateway IP layer (in, out, icmp_echo_reply)')
  }

  register (protocol: number, handler: IpHandler): void {
    if (this.handlers.has(protocol)) throw new Error(`IP protocol ${protocol} already has a handler`)
    this.handlers.set(protocol, handler)
  }

  /** One datagram from a peer. Never throws: every failure is counted and the packet dropped. */
  input (datagram: Buffer, now: number): void {
    this.packets.inc('in')
    let ip: IPv4Parsed
    try {
      ip = parseIPv4(datagram)
    } catch (err) {
      this.dropped.inc(err instanceof WireError ? err.code : 'internal_error')
      return
    }
    // Isolation: only the gateway's own address is reachable; nothing is forwarded.
    if (ip.dst !== this.address) {
      this.dropped.inc('not_for_us')
      return
    }
    if (ip.isFragment) {
      this.dropped.inc('fragment')
      return
    }
    const exact = datagram.length === ip.headerLen + ip.payloadLen ? datagram : datagram.subarray(0, ip.headerLen + ip.payloadLen)
    try {
      if (ip.protocol === IPPROTO_ICMP && this.icmpInput(ip, exact)) return
      const handler = this.handlers.get(ip.protocol)
      if (handler === undefined) {
        this.dropped.inc('no_handler')
        return
      }
      handler.input(ip, exact, now)
    } catch (err) {
      if (err instanceof WireError) {
        this.dropped.inc(err.code)
        return
      }
      this.dropped.inc('internal_error')
      this.logger?.error({ err, protocol: ip.protocol }, 'IP handler failed')
    }
  }

  send (datagram: Buffer): void {
    this.packets.inc('out')
    this.output(datagram)
  }

  /** Handles echo requests; returns false to pass other ICMP to a registered handler. */
  private icmpInput (ip: IPv4Parsed, datagram: Buffer): boolean {
    const icmp = datagram.subarray(ip.headerLen)
    const { type } = parseIcmpHeader(icmp)
    if (type !== ICMP_ECHO_REQUEST) {
      if (this.handlers.has(IPPROTO_ICMP)) return false
      this.dropped.inc('icmp_unhandled')
      return true
    }
    const request = parseIcmpEcho(icmp)
    const reply = { type: ICMP_ECHO_REPLY, ident: request.ident, seq: request.seq, payload: request.payload } as const
    const payloadLen = icmpEchoLength(reply)
    const out = Buffer.allocUnsafe(IPV4_MIN_HEADER_LEN + payloadLen)
    emitIPv4({
      src: this.address,
      dst: ip.src,
      protocol: IPPROTO_ICMP,
      ttl: DEFAULT_TTL,
      payloadLen,
      ident: this.takeIdent(),
      dontFragment: false,
    }, out, 0)
    emitIcmpEcho(reply, out, IPV4_MIN_HEADER_LEN)
    this.packets.inc('icmp_echo_reply')
    this.send(out)
    return true
  }

  private takeIdent (): number {
    const ident = this.nextIdent
    this.nextIdent = (this.nextIdent + 1) & 0xffff
    return ident
  }
}
