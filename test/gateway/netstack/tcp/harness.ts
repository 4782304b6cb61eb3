/**
 * Test harnesses for the sans-IO TCP core:
 *  - Sim: two TcpCores joined by an in-memory link with a seeded fault model (loss, duplicates,
 *    reordering via jitter, fixed delay, a bandwidth-limited drop-tail queue), on a virtual clock.
 *  - Scripted: one TcpCore facing a hand-driven peer: the test writes the peer's segments and
 *    reads what the core sent back.
 *  - Recorder: a ConnectionHandler that records events and plays a simple application.
 */
import { createHash } from 'node:crypto'
import { Metrics } from '../../../../gateway/metrics.ts'
import { SeededRandom } from '../../../../gateway/netstack/fault.ts'
import { TcpCore } from '../../../../gateway/netstack/tcp/core.ts'
import { TcpStack } from '../../../../gateway/netstack/tcp/stack.ts'
import type { TcpOptions } from '../../../../gateway/netstack/tcp/options.ts'
import type { ConnectionHandler, TcpConnection } from '../../../../gateway/netstack/tcp/connection.ts'
import type { TcpError } from '../../../../gateway/netstack/tcp/errors.ts'
import { parseIPv4, parseIPv4Address, IPPROTO_TCP, emitIPv4 } from '../../../../proto/wire/ipv4.ts'
import {
  parseTcp, emitTcpHeader, tcpHeaderLength, writeTcpChecksum, emptyTcpRepr, type TcpRepr, type TcpParsed,
} from '../../../../proto/wire/tcp.ts'

export const ADDR_A = parseIPv4Address('10.100.0.1')
export const ADDR_B = parseIPv4Address('10.100.0.2')

export interface LinkConfig {
  seed?: number
  loss?: number
  duplicate?: number
  /** One-way propagation delay (ms). */
  delay?: number
  /** Extra uniform random delay [0, jitter) per packet (ms): reorders packets. */
  jitter?: number
  /** Bytes per ms (1000 = 1 MB/s); Infinity for no serialization delay. */
  bandwidth?: number
  /** Drop-tail queue in bytes in front of the bandwidth limit. */
  queueBytes?: number
}

interface InFlight { at: number, order: number, datagram: Buffer, to: TcpCore }

/** One direction of the link. */
class Direction {
  busyUntil = 0
  sent = 0
  dropped = 0
  duplicated = 0
  constructor (readonly cfg: Required<LinkConfig>, readonly random: SeededRandom) {}
}

export class Sim {
  now = 0
  readonly a: TcpCore
  readonly b: TcpCore
  readonly metricsA = new Metrics()
  readonly metricsB = new Metrics()
  private readonly queue: InFlight[] = []
  private order = 0
  private readonly ab: Direction
  private readonly ba: Direction
  /** Optional hook to look at (and veto) every datagram on the wire. */
  tap: ((from: 'a' | 'b', datagram: Buffer) => boolean) | null = null
  /** With `turns`: a stack sent data since its last turn end (each virtual instant is a turn, as TcpStack's event-loop turn). */
  private turnPendingA = false
  private turnPendingB = false
  /** With `turns`: called at each turn's end, before the stacks see it. */
  onTurnEnd: (() => void) | null = null

  constructor (link: LinkConfig = {}, optionsA: Partial<TcpOptions> = {}, optionsB: Partial<TcpOptions> = {}, turns = false) {
    const cfg: Required<LinkConfig> = {
      seed: 1, loss: 0, duplicate: 0, delay: 1, jitter: 0, bandwidth: Infinity, queueBytes: Infinity, ...link,
    }
    this.ab = new Direction(cfg, new SeededRandom(cfg.seed))
    this.ba = new Direction(cfg, new SeededRandom(cfg.seed * 7 + 3))
    const portRandomA = new SeededRandom(cfg.seed + 11)
    const portRandomB = new SeededRandom(cfg.seed + 13)
    this.a = new TcpCore({
      localAddress: ADDR_A,
      send: d => this.transmit(this.ab, d, 'a'),
      metrics: this.metricsA,
      options: { isnSecret: Buffer.alloc(32, 1), ...optionsA },
      random: () => portRandomA.next(),
      ...(turns ? { onTurn: () => { this.turnPendingA = true } } : {}),
    })
    this.b = new TcpCore({
      localAddress: ADDR_B,
      send: d => this.transmit(this.ba, d, 'b'),
      metrics: this.metricsB,
      options: { isnSecret: Buffer.alloc(32, 2), ...optionsB },
      random: () => portRandomB.next(),
      ...(turns ? { onTurn: () => { this.turnPendingB = true } } : {}),
    })
  }

  get stats (): { ab: Direction, ba: Direction } {
    return { ab: this.ab, ba: this.ba }
  }

  private transmit (dir: Direction, datagram: Buffer, from: 'a' | 'b'): void {
    if (this.tap !== null && !this.tap(from, datagram)) return
    const to = from === 'a' ? this.b : this.a
    const cfg = dir.cfg
    dir.sent++
    if (cfg.loss > 0 && dir.random.next() < cfg.loss) {
      dir.dropped++
      return
    }
    let depart = this.now
    if (cfg.bandwidth !== Infinity) {
      const start = Math.max(this.now, dir.busyUntil)
      if ((start - this.now) * cfg.bandwidth > cfg.queueBytes) {
        dir.dropped++
        return
      }
      depart = start + datagram.length / cfg.bandwidth
      dir.busyUntil = depart
    }
    const at = depart + cfg.delay + (cfg.jitter > 0 ? dir.random.next() * cfg.jitter : 0)
    this.push({ at, order: this.order++, datagram, to })
    if (cfg.duplicate > 0 && dir.random.next() < cfg.duplicate) {
      dir.duplicated++
      this.push({ at: at + dir.random.next() * (cfg.jitter + 1), order: this.order++, datagram: Buffer.from(datagram), to })
    }
  }

  private push (item: InFlight): void {
    // Binary insertion keeps the queue sorted by (at, order).
    const q = this.queue
    let lo = 0
    let hi = q.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (q[mid].at < item.at || (q[mid].at === item.at && q[mid].order < item.order)) lo = mid + 1
      else hi = mid
    }
    q.splice(lo, 0, item)
  }

  /** Runs until `done()` or nothing is left to do or `maxTime` (virtual ms) passes. Returns done(). */
  run (done: () => boolean, maxTime = 600_000): boolean {
    const limit = this.now + maxTime
    let head = 0
    while (!done()) {
      const nextPacket = head < this.queue.length ? this.queue[head].at : Infinity
      const next = this.turnPendingA || this.turnPendingB ? this.now : Math.min(nextPacket, this.a.nextDeadline(), this.b.nextDeadline())
      if (next === Infinity || next > limit) break
      if (next > this.now) this.now = next
      while (head < this.queue.length && this.queue[head].at <= this.now) {
        const item = this.queue[head++]
        const ip = parseIPv4(item.datagram)
        item.to.input(ip, item.datagram, this.now)
        if (head > 4096) {
          this.queue.splice(0, head)
          head = 0
        }
      }
      this.a.poll(this.now)
      this.b.poll(this.now)
      this.endTurns()
    }
    this.queue.splice(0, head)
    return done()
  }

  private endTurns (): void {
    if ((this.turnPendingA || this.turnPendingB) && this.onTurnEnd !== null) this.onTurnEnd()
    if (this.turnPendingA) {
      this.turnPendingA = false
      this.a.turnEnd(this.now)
    }
    if (this.turnPendingB) {
      this.turnPendingB = false
      this.b.turnEnd(this.now)
    }
  }

  /** Advances virtual time by `ms`, processing everything due. */
  advance (ms: number): void {
    const until = this.now + ms
    this.run(() => false, ms)
    this.now = Math.max(this.now, until)
    this.a.poll(this.now)
    this.b.poll(this.now)
  }
}

/** A ConnectionHandler that records events; optionally streams `source` and hashes what arrives. */
export class Recorder implements ConnectionHandler {
  conn: TcpConnection | null = null
  connected = false
  ended = false
  closed = false
  error: TcpError | null = null
  received = 0
  readonly chunks: Buffer[] = []
  keepChunks = true
  /** Bytes the "application" has not read yet (zero-window tests raise it). */
  unread = 0
  holdReads = false
  private readonly hash = createHash('sha256')
  private source: Buffer | null = null
  private sourceOffset = 0
  endAfterSource = true
  now: () => number = () => 0
  readonly events: string[] = []

  /** Starts streaming `data` (written as the send buffer allows; FIN after it unless told not to). */
  stream (data: Buffer, now: number): void {
    this.source = data
    this.sourceOffset = 0
    this.pump(now)
  }

  private pump (now: number): void {
    const conn = this.conn
    if (conn === null || this.source === null) return
    while (this.sourceOffset < this.source.length) {
      const n = conn.write(this.source, this.sourceOffset, Math.min(this.source.length, this.sourceOffset + 256 * 1024))
      if (n === 0) break
      this.sourceOffset += n
    }
    if (this.sourceOffset >= this.source.length && this.endAfterSource) {
      this.source = null
      conn.shutdown(now)
    } else {
      conn.flush(now)
    }
  }

  get digest (): string {
    return this.hash.copy().digest('hex')
  }

  onConnect (): void {
    this.connected = true
    this.events.push('connect')
  }

  onData (data: Buffer): void {
    this.received += data.length
    this.hash.update(data)
    if (this.keepChunks) this.chunks.push(Buffer.from(data))
    if (this.holdReads) this.unread += data.length
  }

  onEnd (): void {
    this.ended = true
    this.events.push('end')
  }

  onWritable (): void {
    this.events.push('writable')
    this.pump(this.now())
  }

  onClose (err: TcpError | null): void {
    this.closed = true
    this.error = err
    this.events.push(err === null ? 'close' : `close:${err.code}`)
  }

  unreadBytes (): number {
    return this.unread
  }

  /** The application reads everything it held back. */
  readAll (now: number): void {
    this.unread = 0
    this.conn?.windowUpdate(now)
  }

  text (): string {
    return Buffer.concat(this.chunks).toString()
  }
}

export interface Segment extends TcpParsed {
  payload: Buffer
  src: number
  dst: number
}

export function parseSegment (datagram: Buffer): Segment {
  const ip = parseIPv4(datagram)
  const tcp = parseTcp(datagram, ip.headerLen, ip.payloadLen, { src: ip.src, dst: ip.dst })
  return { ...tcp, payload: datagram.subarray(tcp.payloadOffset, tcp.payloadOffset + tcp.payloadLen), src: ip.src, dst: ip.dst }
}

export function buildSegment (src: number, dst: number, fields: Partial<TcpRepr>, payload: Buffer = Buffer.alloc(0)): Buffer {
  const repr: TcpRepr = { ...emptyTcpRepr(), ...fields }
  const headerLen = tcpHeaderLength(repr)
  const buf = Buffer.alloc(20 + headerLen + payload.length)
  emitIPv4({ src, dst, protocol: IPPROTO_TCP, ttl: 64, payloadLen: headerLen + payload.length, ident: 0, dontFragment: true }, buf, 0)
  emitTcpHeader(repr, buf, 20)
  payload.copy(buf, 20 + headerLen)
  writeTcpChecksum(buf, 20, headerLen + payload.length, src, dst)
  return buf
}

/**
 * A TcpCore under test and a peer driven by hand. The peer's address is ADDR_B; its segments
 * are built field by field; what the core sends is collected in `sent`.
 */
export class Scripted {
  now = 0
  readonly core: TcpCore
  readonly metrics = new Metrics()
  readonly sent: Segment[] = []
  /** With `batched`: how often the core asked for a batch end (endBatch() delivers it). */
  batchRequests = 0

  constructor (options: Partial<TcpOptions> = {}, batched = false) {
    this.core = new TcpCore({
      localAddress: ADDR_A,
      send: d => this.sent.push(parseSegment(d)),
      metrics: this.metrics,
      // Pacing and tail loss probes off unless a test asks for them: the scripts check which
      // segments leave at one instant and when the retransmission timer fires.
      options: { isnSecret: Buffer.alloc(32, 5), pacing: false, tailLossProbe: false, ...options },
      random: () => 0.5,
      ...(batched ? { onBatch: () => { this.batchRequests++ } } : {}),
    })
  }

  /** The end of an input batch (as TcpStack does after each poll phase). */
  endBatch (): void {
    this.core.batchEnd(this.now)
  }

  /** Delivers a segment from the peer. */
  deliver (fields: Partial<TcpRepr>, payload?: Buffer): void {
    const d = buildSegment(ADDR_B, ADDR_A, fields, payload)
    this.core.input(parseIPv4(d), d, this.now)
  }

  /** Takes (and clears) what the core sent. */
  take (): Segment[] {
    return this.sent.splice(0, this.sent.length)
  }

  /** Advances the clock to `at` (absolute) or by `ms`, firing timers on the way, one deadline at a time. */
  advance (ms: number): void {
    const until = this.now + ms
    while (true) {
      const next = this.core.nextDeadline()
      if (next > until) break
      this.now = Math.max(this.now, next)
      this.core.poll(this.now)
    }
    this.now = until
    this.core.poll(this.now)
  }

  counter (family: string, label: string): number {
    return this.metrics.snapshot()[family]?.[label] ?? 0
  }
}

export function randomData (size: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(size)
  const r = new SeededRandom(seed)
  for (let i = 0; i + 4 <= size; i += 4) out.writeUInt32LE(Math.floor(r.next() * 0x1_0000_0000), i)
  for (let i = size - (size % 4); i < size; i++) out[i] = Math.floor(r.next() * 256)
  return out
}

export function sha256 (data: Buffer): string {
  return createHash('sha256').update(data).digest('hex')
}

/**
 * Two TcpStacks (the real shell with real timers) joined by an in-memory link that delivers on
 * setImmediate, optionally dropping packets with a seeded PRNG.
 */
export class StackPair {
  readonly a: TcpStack
  readonly b: TcpStack
  readonly metricsA = new Metrics()
  readonly metricsB = new Metrics()
  private queue: Array<[Buffer, TcpStack]> = []
  private scheduled = false
  private readonly random: SeededRandom
  loss: number
  /** Set false to cut the link (everything is dropped). */
  up = true

  constructor (options: Partial<TcpOptions> = {}, loss = 0, seed = 1) {
    this.loss = loss
    this.random = new SeededRandom(seed)
    this.a = new TcpStack({ localAddress: ADDR_A, ip: { send: d => this.send(d, this.b) }, metrics: this.metricsA, options })
    this.b = new TcpStack({ localAddress: ADDR_B, ip: { send: d => this.send(d, this.a) }, metrics: this.metricsB, options })
  }

  private send (datagram: Buffer, to: TcpStack): void {
    if (!this.up) return
    if (this.loss > 0 && this.random.next() < this.loss) return
    this.queue.push([datagram, to])
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.flush)
    }
  }

  private readonly flush = (): void => {
    this.scheduled = false
    const batch = this.queue
    this.queue = []
    for (const [datagram, to] of batch) to.input(parseIPv4(datagram), datagram)
  }

  close (): void {
    this.a.close()
    this.b.close()
  }
}
