/**
 * Userspace mode: no TUN device, no NET_ADMIN. Our WireGuard device (gateway/wireguard) is the
 * initiator toward the gateway; our IP layer and TCP stack (gateway/netstack) own the tunnel
 * address; every connection the gateway opens to it is spliced to the local target.
 *
 *   UDP socket -> UdpShell -> Device -> IpLayer -> TcpStack (listen :80) -> Forwarder -> target
 *                                             \-> EchoProber (ICMP echo replies)
 *   Forwarder/EchoProber -> IpLayer.send -> UdpShell.sendPacket -> Device -> UDP socket
 *
 * The device, IP layer and TCP stack live as long as the tunnel address does, so a reconnect
 * (new UDP socket, endpoint resolved again, fresh handshake) keeps open connections.
 */
import type { Logger } from 'pino'
import { Metrics } from '../gateway/metrics.ts'
import { Device, type Peer } from '../gateway/wireguard/device.ts'
import { UdpShell, monotonicNow, wallClockOffset } from '../gateway/wireguard/udp.ts'
import { IpLayer } from '../gateway/netstack/ip.ts'
import { TcpStack } from '../gateway/netstack/tcp/index.ts'
import { IPPROTO_ICMP, IPPROTO_TCP, parseIPv4Address } from '../proto/wire/ipv4.ts'
import { createForwarder, type ForwardTarget, type Forwarder } from './forward.ts'
import { EchoProber } from './probe.ts'
import { checkPlan, resolveEndpoint, samePlan, type Tunnel, type TunnelHealth, type TunnelPlan } from './tunnel.ts'

export interface UserspaceTunnelOptions {
  privateKey: Buffer
  target: ForwardTarget
  /** Ports accepted on the tunnel address (the gateway's upstreams use 80). */
  tunnelPorts: number[]
  /** Local UDP port (0: any; a new one on every reconnect). */
  listenPort: number
  logger: Logger
  metrics?: Metrics
}

interface Stack { address: string, ip: IpLayer, tcp: TcpStack, prober: EchoProber }

export class UserspaceTunnel implements Tunnel {
  readonly mode = 'userspace' as const
  readonly metrics: Metrics
  private readonly options: UserspaceTunnelOptions
  private readonly logger: Logger
  private readonly device: Device
  private readonly forwarder: Forwarder
  private shell: UdpShell | null = null
  private shellFamily: 4 | 6 | null = null
  private stack: Stack | null = null
  private plan: TunnelPlan | null = null
  private peer: Peer | null = null
  private endpoint: { address: string, port: number } | null = null
  private rxSeen = 0
  private rxSeenAt: number | null = null
  private closed = false

  constructor (options: UserspaceTunnelOptions) {
    this.options = options
    this.logger = options.logger
    this.metrics = options.metrics ?? new Metrics()
    this.device = new Device({
      privateKey: options.privateKey,
      metrics: this.metrics,
      logger: this.logger.child({ module: 'wireguard' }),
      wallClockOffset: wallClockOffset(),
      io: {
        sendDatagram: (datagram, address, port) => { this.shell?.sendDatagram(datagram, address, port) },
        deliverPacket: (packet, _peer, now) => { this.stack?.ip.input(packet, now) },
      },
    })
    this.forwarder = createForwarder(options.target, this.metrics.family('agent_forward', 'Tunnel connections spliced to the local target, by outcome'), this.logger.child({ module: 'forward' }))
  }

  async apply (plan: TunnelPlan): Promise<void> {
    if (this.closed) throw new Error('tunnel closed')
    if (samePlan(this.plan, plan) && this.shell !== null) return
    // The same checks as the kernel mode's writer: the device gets typed values only.
    const checked = checkPlan(plan)
    const resolved = await resolveEndpoint(plan.endpointHost)
    if (this.stack === null || this.stack.address !== plan.address) {
      this.teardownStack()
      this.stack = this.buildStack(plan)
    } else {
      this.stack.prober.retarget(plan.gatewayAddress)
    }
    const peerKey = checked.peerPublicKey
    if (this.peer !== null && !this.peer.publicKey.equals(peerKey)) {
      this.device.removePeer(this.peer.publicKey)
      this.peer = null
    }
    this.endpoint = { address: resolved.address, port: plan.endpointPort }
    const peerOptions = {
      publicKey: peerKey,
      allowedIPs: [{ network: checked.gatewayIp, prefixLength: 32, mask: 0xffffffff }],
      endpoint: this.endpoint,
      persistentKeepalive: plan.persistentKeepalive,
    }
    this.peer = this.peer === null ? this.device.addPeer(peerOptions) : this.device.updatePeer(peerOptions)
    if (this.shell === null || this.shellFamily !== resolved.family) await this.newShell(resolved.family)
    this.plan = plan
    this.logger.info({ address: plan.address, endpoint: `${resolved.address}:${plan.endpointPort}`, gateway: plan.peerPublicKey }, 'userspace tunnel configured')
    this.startHandshake()
  }

  async reconnect (): Promise<void> {
    const plan = this.plan
    if (plan === null || this.closed || this.peer === null) return
    const resolved = await resolveEndpoint(plan.endpointHost)
    this.endpoint = { address: resolved.address, port: plan.endpointPort }
    this.peer.endpoint = this.endpoint
    await this.newShell(resolved.family)
    this.logger.info({ endpoint: `${resolved.address}:${plan.endpointPort}` }, 'new UDP socket and fresh handshake')
    // Whatever the old session was, the gateway may not know it (restart) or us (new path).
    this.device.zeroKeyMaterial(this.peer)
    this.startHandshake()
  }

  async probe (timeoutMs: number): Promise<number | null> {
    if (this.stack === null || this.shell === null) return null
    return await this.stack.prober.probe(timeoutMs)
  }

  health (): TunnelHealth {
    const peer = this.peer
    if (peer === null) return { lastHandshakeAt: null, lastReceiveAt: null, endpoint: null, rxBytes: 0, txBytes: 0 }
    // The device counts what it receives; a change since the last look means the gateway spoke.
    if (peer.rxPackets !== this.rxSeen) {
      this.rxSeen = peer.rxPackets
      this.rxSeenAt = Date.now()
    }
    const status = this.device.peerStatus(peer, monotonicNow())
    return {
      lastHandshakeAt: status.lastHandshakeAt,
      lastReceiveAt: this.rxSeenAt,
      endpoint: status.endpoint,
      rxBytes: status.rxBytes,
      txBytes: status.txBytes,
    }
  }

  /** Tunnel connections being forwarded now. */
  get activeConnections (): number {
    return this.forwarder.active
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.teardownStack()
    if (this.peer !== null) this.device.removePeer(this.peer.publicKey)
    this.peer = null
    const shell = this.shell
    this.shell = null
    await shell?.close()
  }

  private buildStack (plan: TunnelPlan): Stack {
    const logger = this.logger
    const ip = new IpLayer({
      address: parseIPv4Address(plan.address),
      metrics: this.metrics,
      send: datagram => { this.shell?.sendPacket(datagram) },
      logger: logger.child({ module: 'ip' }),
    })
    const tcp = new TcpStack({ localAddress: plan.address, ip, metrics: this.metrics, logger: logger.child({ module: 'tcp' }) })
    ip.register(IPPROTO_TCP, tcp)
    const prober = new EchoProber(datagram => { ip.send(datagram) }, plan.address, plan.gatewayAddress)
    ip.register(IPPROTO_ICMP, prober)
    for (const port of this.options.tunnelPorts) {
      tcp.listen(port, socket => { this.forwarder.accept(socket) }, { allowHalfOpen: true, noDelay: true })
    }
    return { address: plan.address, ip, tcp, prober }
  }

  private teardownStack (): void {
    const stack = this.stack
    this.stack = null
    if (stack === null) return
    stack.prober.cancel()
    this.forwarder.closeAll()
    stack.tcp.close()
  }

  private async newShell (family: 4 | 6): Promise<void> {
    const old = this.shell
    this.shell = null
    // A fixed local port must be free before the new socket binds it.
    await old?.close()
    const shell = new UdpShell({ listenAddress: family === 6 ? '::' : '0.0.0.0', listenPort: this.options.listenPort, logger: this.logger.child({ module: 'udp' }) })
    shell.attach(this.device)
    await shell.listen()
    this.shell = shell
    this.shellFamily = family
  }

  /** An initiation now (not after REKEY_TIMEOUT): a probe queued behind it arms the shell's timer. */
  private startHandshake (): void {
    if (this.peer === null || this.stack === null) return
    if (this.peer.current === null) this.peer.lastSentHandshakeAt = -Infinity
    void this.stack.prober.probe(1_000)
  }
}
