/**
 * The thin I/O shell around the sans-IO Device: one `node:dgram` socket, one timer armed for the
 * device's next deadline, a monotonic clock, and optional seeded fault injection (drop, duplicate,
 * reorder, delay) on datagrams in both directions. Everything protocol-related lives in the core.
 */
import dgram from 'node:dgram'
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import type { Device, DeviceIo } from './device.ts'
import { FaultInjector, type FaultConfig, type FaultStats } from '../netstack/fault.ts'

export interface UdpShellOptions {
  listenAddress: string
  listenPort: number
  faults?: FaultConfig | null
  logger?: Logger
  /** Kernel socket buffer sizes to ask for (best effort). */
  socketBufferBytes?: number
}

interface Datagram { datagram: Buffer, address: string, port: number }

const DEFAULT_SOCKET_BUFFER = 4 * 1024 * 1024

/** Monotonic milliseconds (the device's `now`). */
export function monotonicNow (): number {
  return performance.now()
}

/** Wall-clock minus monotonic, for Device's wallClockOffset. */
export function wallClockOffset (): number {
  return Date.now() - performance.now()
}

export class UdpShell implements Pick<DeviceIo, 'sendDatagram'> {
  private readonly socket: dgram.Socket
  private readonly logger: Logger | undefined
  private readonly options: UdpShellOptions
  private device: Device | null = null
  private timer: NodeJS.Timeout | null = null
  private armedFor = Infinity
  private closed = false
  private readonly inbound: FaultInjector<Datagram>
  private readonly outbound: FaultInjector<Datagram>
  private faultsOn = false
  /** Send errors (e.g. EHOSTUNREACH for a stale endpoint) are counted, never fatal. */
  sendErrors = 0

  constructor (options: UdpShellOptions) {
    this.options = options
    this.logger = options.logger
    this.socket = dgram.createSocket({ type: options.listenAddress.includes(':') ? 'udp6' : 'udp4', reuseAddr: false })
    this.inbound = new FaultInjector<Datagram>(d => { this.device!.receive(d.datagram, d.address, d.port, monotonicNow()) }, {},
      d => ({ datagram: Buffer.from(d.datagram), address: d.address, port: d.port }))
    this.outbound = new FaultInjector<Datagram>(d => { this.socket.send(d.datagram, d.port, d.address, this.onSent) })
    this.setFaults(options.faults ?? null)
  }

  /** Connects the device (its io.sendDatagram must call this shell's sendDatagram). */
  attach (device: Device): void {
    this.device = device
  }

  /** Binds the socket; resolves with the bound address. */
  async listen (): Promise<{ address: string, port: number }> {
    if (this.device === null) throw new Error('attach a device before listen()')
    const socket = this.socket
    await new Promise<void>((resolve, reject) => {
      const onError = (err: Error): void => { reject(err) }
      socket.once('error', onError)
      socket.bind(this.options.listenPort, this.options.listenAddress, () => {
        socket.off('error', onError)
        resolve()
      })
    })
    const size = this.options.socketBufferBytes ?? DEFAULT_SOCKET_BUFFER
    try {
      socket.setRecvBufferSize(size)
      socket.setSendBufferSize(size)
    } catch (err) {
      this.logger?.debug({ err }, 'could not enlarge UDP socket buffers')
    }
    socket.on('message', this.onMessage)
    socket.on('error', err => {
      this.sendErrors++
      this.logger?.warn({ err }, 'UDP socket error')
    })
    this.schedule()
    const bound = socket.address()
    return { address: bound.address, port: bound.port }
  }

  /** Replaces the fault settings of both directions (null = none). */
  setFaults (config: FaultConfig | null): void {
    this.inbound.configure({ ...(config ?? {}), seed: config?.seed ?? 1 })
    this.outbound.configure({ ...(config ?? {}), seed: ((config?.seed ?? 1) * 2654435761) >>> 0 })
    this.faultsOn = this.inbound.enabled
  }

  faultStats (): { inbound: FaultStats, outbound: FaultStats } | null {
    return this.faultsOn ? { inbound: { ...this.inbound.stats }, outbound: { ...this.outbound.stats } } : null
  }

  /** DeviceIo.sendDatagram. */
  sendDatagram (datagram: Buffer, address: string, port: number): void {
    if (this.closed) return
    if (this.faultsOn) this.outbound.push({ datagram, address, port }, monotonicNow())
    else this.socket.send(datagram, port, address, this.onSent)
  }

  /** An IP packet from the stack: encrypt and route it now. */
  sendPacket (packet: Buffer): void {
    if (this.closed || this.device === null) return
    this.device.send(packet, monotonicNow())
    this.schedule()
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    await new Promise<void>(resolve => { this.socket.close(() => { resolve() }) })
  }

  // Arrow properties: allocated once, so the per-packet path creates no closures.
  private readonly onSent = (err: Error | null): void => {
    if (err !== null) {
      this.sendErrors++
      this.logger?.debug({ err }, 'UDP send failed')
    }
  }

  private readonly onMessage = (msg: Buffer, rinfo: dgram.RemoteInfo): void => {
    if (this.closed) return
    if (this.faultsOn) this.inbound.push({ datagram: msg, address: rinfo.address, port: rinfo.port }, monotonicNow())
    else this.device!.receive(msg, rinfo.address, rinfo.port, monotonicNow())
    this.schedule()
  }

  private readonly onTimer = (): void => {
    this.timer = null
    this.armedFor = Infinity
    if (this.closed) return
    const now = monotonicNow()
    this.device!.updateTimers(now)
    if (this.faultsOn) {
      this.inbound.poll(now)
      this.outbound.poll(now)
    }
    this.schedule()
  }

  /** Arms the single timer for the earliest deadline, only when that moved earlier. */
  private schedule (): void {
    let deadline = this.device!.nextDeadline()
    if (this.faultsOn) deadline = Math.min(deadline, this.inbound.nextDeadline(), this.outbound.nextDeadline())
    if (deadline >= this.armedFor || deadline === Infinity) return
    if (this.timer !== null) clearTimeout(this.timer)
    this.armedFor = deadline
    this.timer = setTimeout(this.onTimer, Math.max(0, Math.ceil(deadline - monotonicNow())))
  }
}
