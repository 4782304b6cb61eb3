/**
 * The WireGuard endpoint's UDP socket, in two implementations behind one interface:
 * - `batched` (Linux, the default where it is built): the N-API module in ./native (udp.c). It reads
 *   up to 64 datagrams per recvmmsg and hands them over in one callback, and it queues the datagrams
 *   sent during one turn of the event loop and writes them with one sendmmsg at the end of it, runs
 *   of equal-size datagrams to one address as single UDP GSO sends (a bulk TCP flow through the
 *   tunnel is such a run). node:dgram costs one system call, a 64 KiB allocation, an address object
 *   and a callback per datagram each way.
 * - `dgram`: node:dgram, everywhere (and the fallback when the module is not built).
 * Both hand the receiver a Buffer it may keep and modify (the data path decrypts in place and the TCP
 * stack keeps views of it) with the sender's address and port, and count failed sends rather than
 * throw. A socket bound to an IPv6 address is dual-stack: an IPv4 sender is reported as plain IPv4
 * ("198.18.0.2", never "::ffff:198.18.0.2") by both, and both take either form as a destination.
 */
import dgram from 'node:dgram'
import { createRequire } from 'node:module'
import { mappedAddress, plainAddress } from '../../proto/net/address.ts'

export type UdpIo = 'batched' | 'dgram'

/** The settings that choose a socket (config `udpIo`, CC_WG_UDP_IO, the benches' --udp-io). */
export const UDP_IO_SETTINGS = ['auto', 'batched', 'dgram'] as const
export type UdpIoSetting = typeof UDP_IO_SETTINGS[number]
/** "auto, batched or dgram", for messages. */
export const UDP_IO_CHOICES = `${UDP_IO_SETTINGS.slice(0, -1).join(', ')} or ${UDP_IO_SETTINGS[UDP_IO_SETTINGS.length - 1]!}`

export interface DatagramSocket {
  readonly io: UdpIo
  /** Binds and starts receiving; resolves with the bound address. */
  bind (address: string, port: number, bufferBytes: number): Promise<{ address: string, port: number }>
  /** Queues (batched) or sends (dgram) one datagram; failures are counted in sendErrors. */
  send (datagram: Buffer, address: string, port: number): void
  close (): Promise<void>
  readonly sendErrors: number
  /** System calls and datagrams so far, for the status page and the benches (batched only). */
  stats (): SocketStats | null
}

export interface SocketStats {
  recvCalls: number
  recvDatagrams: number
  sendCalls: number
  sendDatagrams: number
  gsoSends: number
  errors: number
  lastErrno: number
  /** UDP GSO in use (the kernel has it, 4.18+, and no path refused it). */
  gso: boolean
}

export type OnDatagram = (datagram: Buffer, address: string, port: number) => void
/** An error of the socket itself ('socket') or of one datagram's send ('send'); both are counted. */
export type OnSocketError = (err: Error, during: 'socket' | 'send') => void

interface NativeUdp {
  open (family: 4 | 6, address: string, port: number, bufferBytes: number, onBatch: (count: number, data: Buffer) => void, gso?: boolean): object
  meta (socket: object): Int32Array
  localPort (socket: object): number
  send (socket: object, datagrams: Buffer[], dest: Int32Array, count: number): number
  stats (socket: object): number[]
  ntop (family: 4 | 6, bytes: Uint8Array): string
  pton (address: string, bytes: Uint8Array): 0 | 4 | 6
  close (socket: object): void
}

const RECV_META = 8
const SEND_META = 6
/** Past this many queued datagrams the queue is written at once rather than at the end of the turn. */
const MAX_QUEUED = 1024

/** Why the batched socket is not available (null when it is). */
export let batchedUdpUnavailable: string | null = null

function load (): NativeUdp | null {
  if (process.platform !== 'linux') {
    batchedUdpUnavailable = `${process.platform} is not Linux`
    return null
  }
  try {
    return createRequire(import.meta.url)('./native/build/udp.node') as NativeUdp
  } catch (err) {
    batchedUdpUnavailable = `not built (${(err as Error).message.split('\n')[0]}); run node bin/build-native.mjs`
    return null
  }
}

const native = load()

/** A socket of the kind asked for; 'auto' is batched where the module is built, else dgram. */
export function createDatagramSocket (io: UdpIoSetting, onDatagram: OnDatagram, onError: OnSocketError): DatagramSocket {
  if (io === 'dgram' || (io === 'auto' && native === null)) return new DgramSocket(onDatagram, onError)
  if (native === null) throw new Error(`batched UDP is not available: ${batchedUdpUnavailable ?? 'unknown'}`)
  return new BatchedSocket(native, onDatagram)
}

class DgramSocket implements DatagramSocket {
  readonly io = 'dgram' as const
  sendErrors = 0
  private socket: dgram.Socket | null = null
  private ipv6 = false
  private readonly onDatagram: OnDatagram
  private readonly onError: OnSocketError

  constructor (onDatagram: OnDatagram, onError: OnSocketError) {
    this.onDatagram = onDatagram
    this.onError = onError
  }

  async bind (address: string, port: number, bufferBytes: number): Promise<{ address: string, port: number }> {
    const ipv6 = address.includes(':')
    const socket = dgram.createSocket({ type: ipv6 ? 'udp6' : 'udp4', reuseAddr: false, ipv6Only: false })
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('error', reject)
        socket.bind(port, address, () => {
          socket.off('error', reject)
          resolve()
        })
      })
    } catch (err) {
      // Closed, so bind may be called again (the IPv4 fallback of a host without IPv6).
      try { socket.close() } catch { /* never bound */ }
      throw err
    }
    this.socket = socket
    this.ipv6 = ipv6
    try {
      socket.setRecvBufferSize(bufferBytes)
      socket.setSendBufferSize(bufferBytes)
    } catch {
      // Best effort: the kernel's limit (net.core.rmem_max) applies.
    }
    socket.on('message', this.onMessage)
    socket.on('error', err => {
      this.sendErrors++
      this.onError(err, 'socket')
    })
    const bound = socket.address()
    return { address: bound.address, port: bound.port }
  }

  send (datagram: Buffer, address: string, port: number): void {
    // An IPv6 socket reaches an IPv4 peer only through its mapped address (RFC 4291 2.5.5.2).
    this.socket?.send(datagram, port, this.ipv6 ? mappedAddress(address) : address, this.onSent)
  }

  async close (): Promise<void> {
    const socket = this.socket
    this.socket = null
    if (socket !== null) await new Promise<void>(resolve => { socket.close(() => { resolve() }) })
  }

  stats (): null {
    return null
  }

  private readonly onSent = (err: Error | null): void => {
    if (err !== null) {
      this.sendErrors++
      this.onError(err, 'send')
    }
  }

  private readonly onMessage = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
    this.onDatagram(msg, this.ipv6 ? plainAddress(rinfo.address) : rinfo.address, rinfo.port)
  }
}

interface Destination { family: 4 | 6, words: Int32Array }

class BatchedSocket implements DatagramSocket {
  readonly io = 'batched' as const
  sendErrors = 0
  private readonly native: NativeUdp
  private readonly onDatagram: OnDatagram
  private handle: object | null = null
  private meta: Int32Array | null = null
  private metaBytes: Uint8Array | null = null
  // The last sender seen, so a flow's datagrams share one address string.
  private lastFamily = 0
  private readonly lastWords = new Int32Array(4)
  private lastAddress = ''
  // The send queue, written at the end of the event loop's current turn.
  private readonly queue: Buffer[] = []
  private readonly dest = new Int32Array(MAX_QUEUED * SEND_META)
  private flushScheduled = false
  private readonly destinations = new Map<string, Destination | null>()
  private readonly scratch = new Uint8Array(16)

  constructor (mod: NativeUdp, onDatagram: OnDatagram) {
    this.native = mod
    this.onDatagram = onDatagram
  }

  async bind (address: string, port: number, bufferBytes: number): Promise<{ address: string, port: number }> {
    const family = address.includes(':') ? 6 : 4
    try {
      this.handle = this.native.open(family, address, port, bufferBytes, this.onBatch)
    } catch (err) {
      const e = err as NodeJS.ErrnoException
      const wrapped = new Error(`bind ${address}:${port}: ${e.message}`) as NodeJS.ErrnoException
      wrapped.code = e.code
      throw wrapped
    }
    this.meta = this.native.meta(this.handle)
    this.metaBytes = new Uint8Array(this.meta.buffer, this.meta.byteOffset, this.meta.byteLength)
    return { address, port: this.native.localPort(this.handle) }
  }

  send (datagram: Buffer, address: string, port: number): void {
    if (this.handle === null) return
    let d = this.destinations.get(address)
    if (d === undefined) {
      const family = this.native.pton(address, this.scratch)
      d = family === 0 ? null : { family, words: new Int32Array(this.scratch.slice().buffer) }
      if (this.destinations.size > 4096) this.destinations.clear()
      this.destinations.set(address, d)
    }
    if (d === null || port <= 0 || port > 65535) {
      this.sendErrors++
      return
    }
    const i = this.queue.length
    this.queue.push(datagram)
    const at = i * SEND_META
    const dest = this.dest
    dest[at] = port
    dest[at + 1] = d.family
    dest[at + 2] = d.words[0]!
    dest[at + 3] = d.words[1]!
    dest[at + 4] = d.words[2]!
    dest[at + 5] = d.words[3]!
    if (this.queue.length >= MAX_QUEUED) this.flush()
    else if (!this.flushScheduled) {
      this.flushScheduled = true
      process.nextTick(this.flush)
    }
  }

  async close (): Promise<void> {
    if (this.handle === null) return
    this.flush()
    this.native.close(this.handle)
    this.handle = null
  }

  stats (): SocketStats | null {
    if (this.handle === null) return null
    const [recvCalls, recvDatagrams, sendCalls, sendDatagrams, gsoSends, errors, lastErrno, gso] = this.native.stats(this.handle)
    return {
      recvCalls: recvCalls!, recvDatagrams: recvDatagrams!, sendCalls: sendCalls!, sendDatagrams: sendDatagrams!, gsoSends: gsoSends!,
      errors: errors!, lastErrno: lastErrno!, gso: gso === 1,
    }
  }

  private readonly flush = (): void => {
    this.flushScheduled = false
    const count = this.queue.length
    if (count === 0 || this.handle === null) {
      this.queue.length = 0
      return
    }
    // The module reads the queue during the call and keeps nothing: the array is reused.
    try {
      this.sendErrors += this.native.send(this.handle, this.queue, this.dest, count)
    } finally {
      this.queue.length = 0
    }
  }

  private readonly onBatch = (count: number, data: Buffer): void => {
    const meta = this.meta!
    for (let i = 0; i < count && this.handle !== null; i++) {
      const at = i * RECV_META
      const offset = meta[at]!
      const family = meta[at + 3]!
      const last = this.lastWords
      if (family !== this.lastFamily || meta[at + 4] !== last[0] || meta[at + 5] !== last[1] ||
          meta[at + 6] !== last[2] || meta[at + 7] !== last[3]) {
        this.lastFamily = family
        last[0] = meta[at + 4]!
        last[1] = meta[at + 5]!
        last[2] = meta[at + 6]!
        last[3] = meta[at + 7]!
        this.lastAddress = this.native.ntop(family as 4 | 6, this.metaBytes!.subarray((at + 4) * 4, (at + 8) * 4))
      }
      this.onDatagram(data.subarray(offset, offset + meta[at + 1]!), this.lastAddress, meta[at + 2]!)
    }
  }
}
