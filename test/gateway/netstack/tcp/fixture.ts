/** A TcpCore with a scripted peer, for the state-machine tests (input, timers, connection, core). */
import { Scripted, Recorder, ADDR_B, type Segment } from './harness.ts'
import type { TcpConnection } from '../../../../gateway/netstack/tcp/connection.ts'
import type { TcpOptions } from '../../../../gateway/netstack/tcp/options.ts'
import { TCP_SYN, TCP_ACK, TCP_FIN, type TcpRepr } from '../../../../proto/wire/tcp.ts'

export const PEER_PORT = 40000

export const PEER_ISS = 1_000_000

export const MSS = 1000

export interface PeerOptions { mss?: number, sack?: boolean, windowScale?: number, timestamps?: boolean, window?: number }

/** Our side (the core) and a scripted peer at ADDR_B:PEER_PORT. */

export class Fixture {
  readonly s: Scripted
  readonly rec = new Recorder()
  conn!: TcpConnection
  /** The peer's next sequence number. */
  peerNxt = PEER_ISS + 1
  peerWindow: number
  peerTs = 100
  readonly peer: PeerOptions

  constructor (options: Partial<TcpOptions> = {}, peer: PeerOptions = {}, batched = false) {
    this.s = new Scripted(options, batched)
    this.peer = peer
    this.peerWindow = peer.window ?? 65535
    this.rec.now = () => this.s.now
  }

  get localPort (): number {
    return this.conn.localPort
  }

  /** Fields of a segment from the peer with sensible defaults (ACK of everything we sent). */
  seg (fields: Partial<TcpRepr> = {}): Partial<TcpRepr> {
    const ts = this.peer.timestamps === true ? { timestamp: true, tsVal: this.peerTs++, tsEcr: this.conn.tsNow(this.s.now) } : {}
    return {
      srcPort: this.localPortFor(),
      dstPort: this.localPort,
      seq: this.peerNxt,
      ack: this.conn.snd.max,
      flags: TCP_ACK,
      window: this.peerWindow,
      ...ts,
      ...fields,
    }
  }

  private localPortFor (): number {
    return this.conn.remotePort
  }

  send (fields: Partial<TcpRepr> = {}, payload?: Buffer): void {
    const f = this.seg(fields)
    this.s.deliver(f, payload)
    if (payload !== undefined && f.seq === this.peerNxt) this.peerNxt = (this.peerNxt + payload.length) >>> 0
  }

  /** Active open; returns the SYN we sent. */
  connect (): Segment {
    this.conn = this.s.core.connect(ADDR_B, PEER_PORT, this.rec, this.s.now)
    this.rec.conn = this.conn
    const [syn] = this.s.take()
    return syn
  }

  /** Active open completed by a SYN-ACK from the peer; returns our ACK. */
  open (): Segment[] {
    const syn = this.connect()
    this.s.now += 10
    const p = this.peer
    this.s.deliver({
      srcPort: PEER_PORT,
      dstPort: syn.srcPort,
      seq: PEER_ISS,
      ack: (syn.seq + 1) >>> 0,
      flags: TCP_SYN | TCP_ACK,
      window: Math.min(this.peerWindow, 65535),
      mss: p.mss ?? MSS,
      windowScale: p.windowScale ?? -1,
      sackPermitted: p.sack ?? false,
      timestamp: p.timestamps ?? false,
      tsVal: this.peerTs++,
      tsEcr: syn.tsVal,
    })
    return this.s.take()
  }

  /** Data we sent, as [offset from our ISS + 1, length] pairs. */
  dataOf (segs: Segment[]): Array<[number, number]> {
    return segs.filter(x => x.payloadLen > 0).map(x => [(x.seq - this.conn.snd.iss - 1) >>> 0, x.payloadLen])
  }

  /** Ack value for `offset` bytes of our data. */
  ackAt (offset: number): number {
    return (this.conn.snd.iss + 1 + offset) >>> 0
  }
}

export const data = (n: number, fill = 0x61): Buffer => Buffer.alloc(n, fill)

export const STATES = ['SYN-SENT', 'SYN-RECEIVED', 'ESTABLISHED', 'FIN-WAIT-1', 'FIN-WAIT-2', 'CLOSE-WAIT', 'CLOSING', 'LAST-ACK', 'TIME-WAIT'] as const

/** Brings a fresh fixture to `state`; the core is the active opener except for SYN-RECEIVED. */

export function reach (state: typeof STATES[number]): Fixture {
  const f = new Fixture({ timeWait: 1000 })
  if (state === 'SYN-SENT') {
    f.connect()
    return f
  }
  if (state === 'SYN-RECEIVED') {
    f.s.core.listen(80, conn => {
      f.rec.conn = conn
      return f.rec
    })
    f.s.deliver({ srcPort: PEER_PORT, dstPort: 80, seq: PEER_ISS, flags: TCP_SYN, window: 65535, mss: MSS })
    f.conn = f.s.core.find(ADDR_B, PEER_PORT, 80)!
    f.s.take()
    return f
  }
  f.open()
  if (state === 'ESTABLISHED') return f
  if (state === 'FIN-WAIT-1' || state === 'FIN-WAIT-2' || state === 'CLOSING' || state === 'TIME-WAIT') {
    f.conn.shutdown(f.s.now)
    f.s.take()
    if (state === 'FIN-WAIT-1') return f
    if (state === 'CLOSING') {
      f.send({ ack: f.ackAt(0), flags: TCP_ACK | TCP_FIN })
      f.peerNxt++
      f.s.take()
      return f
    }
    f.send({ ack: f.ackAt(1) })
    if (state === 'FIN-WAIT-2') return f
    f.send({ flags: TCP_ACK | TCP_FIN })
    f.peerNxt++
    f.s.take()
    return f
  }
  // CLOSE-WAIT, LAST-ACK: the peer closes first.
  f.send({ flags: TCP_ACK | TCP_FIN })
  f.peerNxt++
  f.s.take()
  if (state === 'CLOSE-WAIT') return f
  f.conn.shutdown(f.s.now)
  f.s.take()
  return f
}
