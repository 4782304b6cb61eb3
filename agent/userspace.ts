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
 *
 * Every gateway placed for the instance is one peer of the one device, its allowed IPs that
 * gateway's own address/32: the stack answers each gateway through the peer it came from
 * (cryptokey routing by destination), so losing one gateway leaves the others' connections alone.
 * A new plan adds and removes peers; a gateway that stays keeps its peer and sessions untouched.
 *
 * Transport (CC_AGENT_TRANSPORT, transport.ts): UDP first; when no handshake completes over UDP
 * within fallbackAfterMs, the same device talks to the gateway over TLS on its HTTPS port (a
 * stream endpoint, gateway/wireguard/streams.ts). While on TLS, every udpProbeIntervalMs one
 * handshake initiation goes over UDP instead: if the gateway's response comes back over UDP, the
 * device's roaming (paper 2.1) has already moved the peer there, on both sides, and TCP inside the
 * tunnel sees nothing of it; if not, the next initiation goes over TLS again.
 */
import type { Logger } from 'pino'
import { Metrics } from '../gateway/metrics.ts'
import { Device, type Peer } from '../gateway/wireguard/device.ts'
import type { PeerOptions } from '../gateway/wireguard/peer.ts'
import { UdpShell, monotonicNow, wallClockOffset } from '../gateway/wireguard/udp.ts'
import { StreamEndpoints, isStreamAddress } from '../gateway/wireguard/streams.ts'
import type { Endpoint } from '../gateway/wireguard/peer.ts'
import { MESSAGE_INITIATION } from '../proto/wire/wireguard.ts'
import { REKEY_TIMEOUT } from '../proto/noise/constants.ts'
import { TRANSPORT_DEFAULTS, connectStream, proxyFromEnv, type TransportOptions } from './transport.ts'
import { IpLayer } from '../gateway/netstack/ip.ts'
import { TcpStack } from '../gateway/netstack/tcp/index.ts'
import { IPPROTO_ICMP, IPPROTO_TCP, parseIPv4Address } from '../proto/wire/ipv4.ts'
import { formatHostPort } from '../proto/net/address.ts'
import { createForwarder, type ForwardTarget, type Forwarder } from './forward.ts'
import { EchoProber } from './probe.ts'
import { checkPlan, combinedHealth, planGateways, resolveEndpoint, sameGateway, samePlan, type GatewayHealth, type GatewayPlan, type Tunnel, type TunnelHealth, type TunnelPlan } from './tunnel.ts'
import type { CheckedGateway } from './tunnel-config.ts'
import { moduleLogger } from '../proto/log.ts'

export interface UserspaceTunnelOptions {
  privateKey: Buffer
  target: ForwardTarget
  /** Ports accepted on the tunnel address (the gateway's upstreams use 80). */
  tunnelPorts: number[]
  /** Local UDP port (0: any; a new one on every reconnect). */
  listenPort: number
  logger: Logger
  metrics?: Metrics
  /** UDP, TLS, or UDP with TLS as fallback (default: auto, TRANSPORT_DEFAULTS). */
  transport?: Partial<TransportOptions>
}

/** How often the transport of each gateway is looked at. */
const TRANSPORT_CHECK_MS = 500

interface Stack { address: string, ip: IpLayer, tcp: TcpStack, prober: EchoProber }

/** One gateway's peer on the device. */
interface GatewayLink {
  plan: GatewayPlan
  peer: Peer
  rxSeen: number
  rxSeenAt: number | null
  /** The gateway's UDP endpoint (resolved). */
  udpEndpoint: Endpoint | null
  /** Monotonic ms since UDP has been tried without a completed handshake (reset by reconnect). */
  udpSince: number
  /** The TLS stream's endpoint while one is open (address `tls:...`). */
  stream: Endpoint | null
  connecting: boolean
  tlsRetryAt: number
  nextUdpProbeAt: number
  /** While a UDP probe runs, initiations go over UDP. */
  probeUntil: number
  transport: 'udp' | 'tls'
}

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
  /** By the gateway's public key (base64), in plan order. */
  private links = new Map<string, GatewayLink>()
  /** Gateways of the plan whose endpoint did not resolve: retried on reconnect and the next apply. */
  private unresolved: GatewayPlan[] = []
  private closed = false
  private readonly transport: TransportOptions
  private readonly streams: StreamEndpoints
  private readonly transportTimer: NodeJS.Timeout

  constructor (options: UserspaceTunnelOptions) {
    this.options = options
    this.logger = options.logger
    this.metrics = options.metrics ?? new Metrics()
    this.transport = { ...TRANSPORT_DEFAULTS, ...options.transport }
    this.streams = new StreamEndpoints({
      metrics: this.metrics,
      logger: moduleLogger(this.logger, 'wg-stream'),
      receive: (message, address, port) => { this.shell?.receiveFrom(message, address, port) },
      // One stream per gateway, each silent at most a keepalive interval: no cap, no idle limit of note.
      limits: { maxPerClient: 1_000, idleTimeoutMs: 3_600_000 },
    })
    this.transportTimer = setInterval(() => { this.checkTransports() }, TRANSPORT_CHECK_MS)
    this.transportTimer.unref()
    this.device = new Device({
      privateKey: options.privateKey,
      metrics: this.metrics,
      logger: moduleLogger(this.logger, 'wireguard'),
      wallClockOffset: wallClockOffset(),
      io: {
        sendDatagram: (datagram, address, port) => { this.sendDatagram(datagram, address, port) },
        deliverPacket: (packet, _peer, now) => { this.stack?.ip.input(packet, now) },
        // A move between UDP and the stream (the answer to a UDP probe) is acted on as soon as the
        // device has finished with the message, not at the next check.
        endpointChanged: () => { queueMicrotask(() => { this.checkTransports() }) },
      },
    })
    this.forwarder = createForwarder(options.target, this.metrics.family('agent_forward', 'Tunnel connections spliced to the local target, by outcome'), moduleLogger(this.logger, 'forward'))
  }

  async apply (plan: TunnelPlan): Promise<void> {
    if (this.closed) throw new Error('tunnel closed')
    if (samePlan(this.plan, plan) && this.shell !== null && this.unresolved.length === 0) return
    // The same checks as the kernel mode's writer: the device gets typed values only.
    const checked = checkPlan(plan)
    const wanted = planGateways(plan)
    const resolved = await Promise.all(wanted.map(async g => await resolveEndpoint(g.endpointHost).catch((err: unknown) => err as Error)))
    if (this.closed) throw new Error('tunnel closed')
    const usable = wanted.filter((_, i) => !(resolved[i] instanceof Error))
    if (usable.length === 0) throw resolved[0] as Error
    if (this.stack === null || this.stack.address !== plan.address) {
      this.teardownStack()
      this.stack = this.buildStack(plan)
    } else {
      this.stack.prober.retarget(plan.gatewayAddress)
    }
    // IPv4 gateways only: an IPv4 socket. Any IPv6 gateway: a dual-stack IPv6 socket, which reaches both.
    const family = resolved.some(r => !(r instanceof Error) && r.family === 6) ? 6 : 4
    const keep = new Set(usable.map(g => g.peerPublicKey))
    // Removed first: a new gateway may take over a vanished one's address.
    for (const [key, link] of this.links) {
      if (keep.has(key)) continue
      this.dropStream(link)
      this.device.removePeer(link.peer.publicKey)
      this.links.delete(key)
      this.logger.info({ gateway: link.plan.gatewayId ?? key, endpoint: formatHostPort(link.plan.endpointHost, link.plan.endpointPort) }, 'gateway removed from the tunnel')
    }
    const links = new Map<string, GatewayLink>()
    const added: GatewayLink[] = []
    this.unresolved = []
    for (let i = 0; i < wanted.length; i++) {
      const gateway = wanted[i]
      const address = resolved[i]
      if (address instanceof Error) {
        this.unresolved.push(gateway)
        this.logger.warn({ gateway: gateway.gatewayId ?? gateway.peerPublicKey, host: gateway.endpointHost, err: address.message }, 'cannot resolve a gateway\'s endpoint; the others carry the tunnel')
        continue
      }
      const typed = checked.gateways[i]
      const existing = this.links.get(gateway.peerPublicKey)
      const endpoint = { address: address.address, port: gateway.endpointPort }
      if (existing !== undefined) {
        // Unchanged: its sessions and timers stay exactly as they are.
        existing.udpEndpoint = endpoint
        if (!sameGateway(existing.plan, gateway)) this.device.updatePeer(this.peerOptions(typed, existing.plan.endpointHost === gateway.endpointHost && existing.plan.endpointPort === gateway.endpointPort ? null : endpoint))
        existing.plan = gateway
        links.set(gateway.peerPublicKey, existing)
      } else {
        const link: GatewayLink = {
          plan: gateway, peer: this.device.addPeer(this.peerOptions(typed, endpoint)), rxSeen: 0, rxSeenAt: null,
          udpEndpoint: endpoint, udpSince: monotonicNow(), stream: null, connecting: false, tlsRetryAt: 0, nextUdpProbeAt: Infinity, probeUntil: 0, transport: 'udp',
        }
        links.set(gateway.peerPublicKey, link)
        added.push(link)
      }
    }
    this.links = links
    if (this.shell === null || this.shellFamily !== family) await this.newShell(family)
    this.plan = plan
    for (const link of added) {
      this.logger.info({ address: plan.address, gateway: link.plan.gatewayId ?? link.plan.peerPublicKey, role: link.plan.role, endpoint: link.peer.endpoint === null ? null : formatHostPort(link.peer.endpoint.address, link.peer.endpoint.port) }, 'userspace tunnel: gateway added')
      this.startHandshake(link)
    }
  }

  async reconnect (gatewayPublicKey?: string): Promise<void> {
    const plan = this.plan
    if (plan === null || this.closed) return
    if (this.unresolved.length > 0) {
      // A gateway whose name did not resolve before: the whole plan again.
      await this.apply(plan).catch((err: unknown) => { this.logger.warn({ err: (err as Error).message }, 'gateways still unresolved') })
    }
    const links = gatewayPublicKey === undefined ? [...this.links.values()] : [this.links.get(gatewayPublicKey)].filter(l => l !== undefined)
    if (links.length === 0) return
    for (const link of links) {
      try {
        const resolved = await resolveEndpoint(link.plan.endpointHost)
        link.udpEndpoint = { address: resolved.address, port: link.plan.endpointPort }
        link.peer.endpoint = link.udpEndpoint
      } catch (err) {
        this.logger.warn({ gateway: link.plan.gatewayId ?? link.plan.peerPublicKey, err: (err as Error).message }, 'cannot resolve the gateway\'s endpoint again; keeping the last address')
      }
    }
    // A new source socket only when every gateway is silent: the others keep the path they have.
    if (gatewayPublicKey === undefined) await this.newShell(this.shellFamily ?? 4)
    for (const link of links) {
      this.logger.info({ gateway: link.plan.gatewayId ?? link.plan.peerPublicKey, endpoint: link.peer.endpoint === null ? null : formatHostPort(link.peer.endpoint.address, link.peer.endpoint.port) }, 'fresh handshake')
      // Whatever the old session was, the gateway may not know it (restart) or us (new path).
      this.device.zeroKeyMaterial(link.peer)
      // UDP first again; TLS after fallbackAfterMs if it still does not answer. A link whose UDP
      // has not answered since its clock started keeps that clock: a reconnect sooner than
      // fallbackAfterMs (a short CC_AGENT_DEAD_AFTER) must not keep it off TLS for ever.
      const udpAnswered = link.peer.lastHandshakeAt !== null && link.peer.lastHandshakeAt >= link.udpSince
      if (link.transport === 'tls' || udpAnswered) link.udpSince = monotonicNow()
      this.dropStream(link)
      this.startHandshake(link)
    }
  }

  async probe (timeoutMs: number, gatewayAddress?: string): Promise<number | null> {
    const stack = this.stack
    if (stack === null || this.shell === null) return null
    if (gatewayAddress !== undefined) return await stack.prober.probe(timeoutMs, gatewayAddress)
    const addresses = [...this.links.values()].map(l => l.plan.gatewayAddress)
    if (addresses.length === 0) return null
    // The first answer from any gateway; null once all have timed out.
    return await new Promise(resolve => {
      let left = addresses.length
      for (const address of addresses) {
        void stack.prober.probe(timeoutMs, address).then(rtt => {
          left--
          if (rtt !== null) resolve(rtt)
          else if (left === 0) resolve(null)
        })
      }
    })
  }

  health (): TunnelHealth {
    return combinedHealth(this.gateways())
  }

  gateways (): GatewayHealth[] {
    const now = monotonicNow()
    return [...this.links.values()].map(link => {
      const peer = link.peer
      // The device counts what it receives; a change since the last look means the gateway spoke.
      if (peer.rxPackets !== link.rxSeen) {
        link.rxSeen = peer.rxPackets
        link.rxSeenAt = Date.now()
      }
      const status = this.device.peerStatus(peer, now)
      return {
        gatewayId: link.plan.gatewayId,
        role: link.plan.role,
        region: link.plan.region,
        publicKey: link.plan.peerPublicKey,
        gatewayAddress: link.plan.gatewayAddress,
        configuredEndpoint: formatHostPort(link.plan.endpointHost, link.plan.endpointPort),
        lastHandshakeAt: status.lastHandshakeAt,
        lastReceiveAt: link.rxSeenAt,
        endpoint: status.endpoint,
        transport: link.transport,
        rxBytes: status.rxBytes,
        txBytes: status.txBytes,
      }
    })
  }

  /** Tunnel connections being forwarded now. */
  get activeConnections (): number {
    return this.forwarder.active
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.transportTimer)
    this.streams.close()
    this.teardownStack()
    for (const link of this.links.values()) this.device.removePeer(link.peer.publicKey)
    this.links.clear()
    const shell = this.shell
    this.shell = null
    await shell?.close()
  }

  private peerOptions (gateway: CheckedGateway, endpoint: { address: string, port: number } | null): PeerOptions {
    return {
      publicKey: gateway.peerPublicKey,
      allowedIPs: [{ network: gateway.gatewayIp, prefixLength: 32, mask: 0xffffffff }],
      endpoint,
      persistentKeepalive: gateway.persistentKeepalive,
    }
  }

  private buildStack (plan: TunnelPlan): Stack {
    const logger = this.logger
    const ip = new IpLayer({
      address: parseIPv4Address(plan.address),
      metrics: this.metrics,
      send: datagram => { this.shell?.sendPacket(datagram) },
      logger: moduleLogger(logger, 'ip'),
    })
    const tcp = new TcpStack({ localAddress: plan.address, ip, metrics: this.metrics, logger: moduleLogger(logger, 'tcp') })
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
    const shell = new UdpShell({ listenAddress: family === 6 ? '::' : '0.0.0.0', listenPort: this.options.listenPort, logger: moduleLogger(this.logger, 'udp') })
    shell.attach(this.device)
    await shell.listen()
    this.shell = shell
    this.shellFamily = family
  }

  /** An initiation now (not after REKEY_TIMEOUT): a probe queued behind it arms the shell's timer. */
  private startHandshake (link: GatewayLink): void {
    if (this.stack === null) return
    if (link.peer.current === null) link.peer.lastSentHandshakeAt = -Infinity
    void this.stack.prober.probe(1_000, link.plan.gatewayAddress)
  }

  /** The transport of the first gateway (the primary when it is up), for the status. */
  get currentTransport (): 'udp' | 'tls' {
    return [...this.links.values()][0]?.transport ?? 'udp'
  }

  /** DeviceIo.sendDatagram: a stream endpoint's messages go over its stream, except a probe's initiation (over UDP). */
  private sendDatagram (datagram: Buffer, address: string, port: number): void {
    if (!isStreamAddress(address)) {
      this.shell?.sendDatagram(datagram, address, port)
      return
    }
    if (datagram[0] === MESSAGE_INITIATION) {
      for (const link of this.links.values()) {
        if (link.stream?.address === address && link.stream.port === port && link.probeUntil > monotonicNow() && link.udpEndpoint !== null) {
          this.shell?.sendDatagram(datagram, link.udpEndpoint.address, link.udpEndpoint.port)
          return
        }
      }
    }
    this.streams.send(datagram, address, port)
  }

  /** Every TRANSPORT_CHECK_MS: fall back to TLS, reopen a lost stream, probe UDP, notice a move. */
  private checkTransports (): void {
    if (this.closed || this.shell === null) return
    const now = monotonicNow()
    const t = this.transport
    for (const link of this.links.values()) {
      const peer = link.peer
      const onStream = peer.endpoint !== null && isStreamAddress(peer.endpoint.address)
      const was = link.transport
      link.transport = onStream ? 'tls' : 'udp'
      if (was === 'tls' && link.transport === 'udp') {
        this.logger.info({ gateway: link.plan.gatewayId ?? link.plan.peerPublicKey }, 'UDP works again: the tunnel is back on UDP')
        link.udpSince = now
        // Frames still in flight on the stream are delivered before it goes.
        const stream = link.stream
        link.stream = null
        if (stream !== null) setTimeout(() => { this.streams.closeEndpoint(stream.address, stream.port) }, 5_000).unref()
      }
      if (t.setting === 'udp' || link.connecting) continue
      if (link.transport === 'udp') {
        const lastGood = Math.max(link.udpSince, peer.lastHandshakeAt ?? -Infinity)
        const usable = peer.current !== null && peer.lastHandshakeAt !== null && now - peer.lastHandshakeAt < 180_000
        if (t.setting === 'tls' || (!usable && now - lastGood >= t.fallbackAfterMs)) {
          if (now >= link.tlsRetryAt) void this.openStream(link)
        }
        continue
      }
      if (link.stream === null || !this.streams.has(link.stream.address, link.stream.port)) {
        if (now >= link.tlsRetryAt) void this.openStream(link)
        continue
      }
      if (t.setting === 'auto' && now >= link.nextUdpProbeAt && link.udpEndpoint !== null) {
        // From when this probe was due, so the check's period does not stretch the interval.
        link.nextUdpProbeAt = Math.max(link.nextUdpProbeAt + t.udpProbeIntervalMs, now + TRANSPORT_CHECK_MS)
        // One initiation over UDP (sendDatagram routes it while probeUntil lasts).
        link.probeUntil = now + REKEY_TIMEOUT - 500
        peer.lastSentHandshakeAt = -Infinity
        this.device.sendInitiation(peer, now, false)
        this.shell.wake()
        this.logger.debug({ gateway: link.plan.gatewayId ?? link.plan.peerPublicKey }, 'probing UDP')
      }
    }
  }

  /** Opens the TLS stream to the gateway's HTTPS port and moves the peer's endpoint onto it. */
  private async openStream (link: GatewayLink): Promise<void> {
    const t = this.transport
    link.connecting = true
    const host = link.plan.endpointHost
    const proxy = (t.proxyFor ?? proxyFromEnv)(host)
    const address = proxy === null ? (link.udpEndpoint?.address ?? host) : host
    try {
      const socket = await connectStream({ host: address, port: t.tlsPort, servername: t.serverName ?? host, proxy, timeoutMs: 10_000 })
      if (this.closed || this.links.get(link.plan.peerPublicKey) !== link) { socket.destroy(); return }
      const endpoint = this.streams.accept(socket, { address, port: t.tlsPort })
      if (endpoint === null) return
      link.stream = { address: endpoint, port: t.tlsPort }
      link.peer.endpoint = link.stream
      link.transport = 'tls'
      link.nextUdpProbeAt = monotonicNow() + t.udpProbeIntervalMs
      this.logger.info({ gateway: link.plan.gatewayId ?? link.plan.peerPublicKey, tls: `${address}:${t.tlsPort}`, proxy: proxy === null ? null : new URL(proxy.includes('://') ? proxy : `http://${proxy}`).host }, 'UDP gets no answer: the tunnel goes over TLS')
      const now = monotonicNow()
      link.peer.lastSentHandshakeAt = -Infinity
      this.device.sendInitiation(link.peer, now, false)
      this.shell?.wake()
    } catch (err) {
      link.tlsRetryAt = monotonicNow() + 5_000
      this.logger.warn({ gateway: link.plan.gatewayId ?? link.plan.peerPublicKey, err: (err as Error).message }, 'WireGuard over TLS failed; retrying')
    } finally {
      link.connecting = false
    }
  }

  private dropStream (link: GatewayLink): void {
    const stream = link.stream
    link.stream = null
    if (stream !== null) this.streams.closeEndpoint(stream.address, stream.port)
    if (link.peer.endpoint !== null && isStreamAddress(link.peer.endpoint.address) && link.udpEndpoint !== null) link.peer.endpoint = link.udpEndpoint
    link.transport = 'udp'
  }
}
