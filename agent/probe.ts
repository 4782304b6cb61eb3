/**
 * Round trips through the tunnel: ICMP echo requests (RFC 792) from our tunnel address to the
 * gateway's, which its IP layer answers. Each probe is also data in WireGuard's sense, so an
 * unanswered one arms the "new handshake after KEEPALIVE_TIMEOUT + REKEY_TIMEOUT" rule (paper 6.2)
 * even when no web traffic flows.
 */
import { randomInt } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { emitIPv4, IPPROTO_ICMP, IPV4_MIN_HEADER_LEN, DEFAULT_TTL, parseIPv4Address, type IPv4Parsed } from '../proto/wire/ipv4.ts'
import { emitIcmpEcho, icmpEchoLength, parseIcmpEcho, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST } from '../proto/wire/icmp.ts'
import { WireError } from '../proto/wire/errors.ts'
import type { IpHandler } from '../gateway/netstack/ip.ts'

const PAYLOAD = Buffer.from('erugo-cloud-connect-probe')

export class EchoProber implements IpHandler {
  private readonly ident = randomInt(1, 0xffff)
  private seq = 0
  private readonly waiting = new Map<number, { sentAt: number, destination: number, resolve: (rtt: number | null) => void, timer: NodeJS.Timeout }>()
  /** Replies that matched nothing (late, or not ours); counted, never thrown. */
  stray = 0

  constructor (private readonly send: (datagram: Buffer) => void, private readonly source: string, private destination: string) {}

  retarget (destination: string): void {
    this.destination = destination
  }

  /**
   * Sends one echo request to `destination` (default: the one given at construction); resolves
   * with the round-trip time in ms, or null after `timeoutMs`.
   */
  async probe (timeoutMs: number, destination = this.destination): Promise<number | null> {
    const seq = this.seq = (this.seq + 1) & 0xffff
    const dst = parseIPv4Address(destination)
    const echo = { type: ICMP_ECHO_REQUEST, ident: this.ident, seq, payload: PAYLOAD } as const
    const payloadLen = icmpEchoLength(echo)
    const packet = Buffer.allocUnsafe(IPV4_MIN_HEADER_LEN + payloadLen)
    emitIPv4({ src: parseIPv4Address(this.source), dst, protocol: IPPROTO_ICMP, ttl: DEFAULT_TTL, payloadLen, ident: seq, dontFragment: true }, packet, 0)
    emitIcmpEcho(echo, packet, IPV4_MIN_HEADER_LEN)
    return await new Promise(resolve => {
      const timer = setTimeout(() => {
        this.waiting.delete(seq)
        resolve(null)
      }, timeoutMs)
      this.waiting.set(seq, { sentAt: performance.now(), destination: dst, resolve, timer })
      this.send(packet)
    })
  }

  /** IpLayer handler for ICMP other than echo requests (those the IP layer answers itself). */
  input (ip: IPv4Parsed, datagram: Buffer): void {
    let reply
    try {
      reply = parseIcmpEcho(datagram.subarray(ip.headerLen))
    } catch (err) {
      if (err instanceof WireError) { this.stray++; return }
      throw err
    }
    const pending = reply.type === ICMP_ECHO_REPLY && reply.ident === this.ident ? this.waiting.get(reply.seq) : undefined
    // RFC 792: the reply comes from the address the request went to; another gateway's is not an answer.
    if (pending === undefined || pending.destination !== ip.src) { this.stray++; return }
    this.waiting.delete(reply.seq)
    clearTimeout(pending.timer)
    pending.resolve(performance.now() - pending.sentAt)
  }

  /** Resolves every waiting probe with null. */
  cancel (): void {
    for (const p of this.waiting.values()) {
      clearTimeout(p.timer)
      p.resolve(null)
    }
    this.waiting.clear()
  }
}
