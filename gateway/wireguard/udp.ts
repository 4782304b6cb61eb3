/**
 * The thin I/O shell around the sans-IO Device: one UDP socket (./socket.ts: batched system calls
 * where the native module is built, else node:dgram), one timer armed for the device's next
 * deadline, a monotonic clock, and optional seeded fault injection (drop, duplicate, reorder, delay)
 * on datagrams in both directions. Everything protocol-related lives in the core.
 */
import { performance } from 'node:perf_hooks'
import type { Logger } from 'pino'
import type { Device, DeviceIo } from './device.ts'
import { FaultInjector, type FaultConfig, type FaultStats } from '../netstack/fault.ts'
import { createDatagramSocket, type DatagramSocket, type SocketStats, type UdpIo, type UdpIoSetting } from './socket.ts'
import { bindDualStack } from '../../proto/net/address.ts'

export interface UdpShellOptions {
  listenAddress: string
  listenPort: number
  faults?: FaultConfig | null
  logger?: Logger
  /** Kernel socket buffer sizes to ask for (best effort). */
  socketBufferBytes?: number
  /** Which socket implementation (default 'auto': batched where built, else node:dgram). */
  io?: UdpIoSetting
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
  private readonly socket: DatagramSocket
  private readonly logger: Logger | undefined
  private readonly options: UdpShellOptions
  private device: Device | null = null
  private timer: NodeJS.Timeout | null = null
  private armedFor = Infinity
  private closed = false
  private bound = false
  private readonly inbound: FaultInjector<Datagram>
  private readonly outbound: FaultInjector<Datagram>
  private faultsOn = false

  constructor (options: UdpShellOptions) {
    this.options = options
    this.logger = options.logger
    this.socket = createDatagramSocket(options.io ?? 'auto', this.onDatagram, (err, during) => {
      if (during === 'socket') this.logger?.warn({ err }, 'UDP socket error')
      else this.logger?.debug({ err }, 'UDP send failed')
    })
    this.inbound = new FaultInjector<Datagram>(d => { this.device!.receive(d.datagram, d.address, d.port, monotonicNow()) }, {},
      d => ({ datagram: Buffer.from(d.datagram), address: d.address, port: d.port }))
    this.outbound = new FaultInjector<Datagram>(d => { this.socket.send(d.datagram, d.address, d.port) })
    this.setFaults(options.faults ?? null)
  }

  /** Connects the device (its io.sendDatagram must call this shell's sendDatagram). */
  attach (device: Device): void {
    this.device = device
  }

  /** Binds the socket (`::` falls back to 0.0.0.0 on a host without IPv6); resolves with the bound address. */
  async listen (): Promise<{ address: string, port: number }> {
    if (this.device === null) throw new Error('attach a device before listen()')
    const bufferBytes = this.options.socketBufferBytes ?? DEFAULT_SOCKET_BUFFER
    const bound = await bindDualStack(this.options.listenAddress, async host => await this.socket.bind(host, this.options.listenPort, bufferBytes),
      err => this.logger?.warn({ err: err.message, port: this.options.listenPort }, 'no IPv6 on this host: the WireGuard UDP socket listens on 0.0.0.0 (IPv4 only)'))
    this.logger?.info({ io: this.socket.io, ...bound }, 'WireGuard UDP socket bound')
    this.bound = true
    this.schedule()
    return bound
  }

  /** Bound and not closed: datagrams are received (readiness checks read this). */
  get open (): boolean {
    return this.bound && !this.closed
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
    else this.socket.send(datagram, address, port)
  }

  /** A message that came another way (a stream endpoint, streams.ts): handled as a datagram from there. */
  receiveFrom (message: Buffer, address: string, port: number): void {
    this.onDatagram(message, address, port)
  }

  /** Re-arms the timer after the device was driven from outside (an initiation sent directly). */
  wake (): void {
    if (!this.closed && this.device !== null) this.schedule()
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
    await this.socket.close()
  }

  /** Send errors (e.g. EHOSTUNREACH for a stale endpoint) are counted, never fatal. */
  get sendErrors (): number {
    return this.socket.sendErrors
  }

  /** Which socket implementation is in use. */
  get io (): UdpIo {
    return this.socket.io
  }

  socketStats (): SocketStats | null {
    return this.socket.stats()
  }

  // Arrow property: allocated once, so the per-packet path creates no closures.
  private readonly onDatagram = (datagram: Buffer, address: string, port: number): void => {
    if (this.closed) return
    if (this.faultsOn) this.inbound.push({ datagram, address, port }, monotonicNow())
    else this.device!.receive(datagram, address, port, monotonicNow())
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
