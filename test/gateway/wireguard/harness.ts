/**
 * Two (or more) Device cores wired back to back in memory with an injected clock: a "gateway" and
 * "client" devices that have the gateway as their only peer. Datagrams are delivered synchronously in
 * send order; tests can hold, drop or rewrite them, and see every one that was sent.
 */
import { Device, type DeviceOptions } from '../../../gateway/wireguard/device.ts'
import type { Peer } from '../../../gateway/wireguard/peer.ts'
import { Metrics } from '../../../gateway/metrics.ts'
import { generatePrivateKey, publicKeyFromPrivate } from '../../../proto/noise/index.ts'
import { emitIPv4, parseIPv4Address, parseIPv4Prefix, IPV4_MIN_HEADER_LEN } from '../../../proto/wire/ipv4.ts'

export const GATEWAY_ADDRESS = '198.18.0.1'
export const GATEWAY_PORT = 51820
export const GATEWAY_TUNNEL_IP = '10.100.0.1'
/** Wall clock at monotonic 0 (TAI64N needs a realistic epoch). */
export const WALL_CLOCK_OFFSET = Date.UTC(2026, 0, 1)

/** Seeded 32-bit generator (xorshift32) so indices and jitter repeat run to run. */
export function seededUint32 (seed: number): () => number {
  let x = (seed >>> 0) || 1
  return () => {
    x ^= x << 13; x >>>= 0
    x ^= x >>> 17
    x ^= x << 5; x >>>= 0
    return x
  }
}

export interface Sent {
  at: number
  from: string
  to: string
  datagram: Buffer
  /** Message type byte at send time. */
  type: number
  /** Byte length at send time. */
  length: number
}

export interface Node {
  name: string
  address: string
  port: number
  device: Device
  metrics: Metrics
  privateKey: Buffer
  publicKey: Buffer
  tunnelIp: string
  /** IP packets the device delivered to its stack (copies). */
  delivered: Array<{ at: number, packet: Buffer, peer: Peer }>
}

/** A hook can drop (return null) or replace datagrams in flight. */
export type Filter = (s: Sent) => Buffer | null

export class Net {
  now = 0
  readonly nodes = new Map<string, Node>()
  /** Every datagram handed to a DeviceIo, in order (copies, before any in-place decryption). */
  readonly log: Sent[] = []
  /** Datagrams not yet delivered. */
  private readonly inFlight: Sent[] = []
  filter: Filter | null = null
  /** When set, datagrams are queued but not delivered until released. */
  holding = false
  private seed = 1

  addNode (name: string, address: string, port: number, tunnelIp: string, options: Partial<DeviceOptions> = {}): Node {
    const privateKey = generatePrivateKey()
    const metrics = new Metrics()
    const node: Node = {
      name, address, port, metrics, privateKey, publicKey: publicKeyFromPrivate(privateKey), tunnelIp, delivered: [], device: null as unknown as Device,
    }
    node.device = new Device({
      privateKey,
      metrics,
      wallClockOffset: WALL_CLOCK_OFFSET,
      random: seededUint32(this.seed++ * 7919),
      io: {
        sendDatagram: (datagram, toAddress, toPort) => {
          const sent: Sent = { at: this.now, from: `${node.address}:${node.port}`, to: `${toAddress}:${toPort}`, datagram: Buffer.from(datagram), type: datagram[0], length: datagram.length }
          this.log.push(sent)
          this.inFlight.push(sent)
        },
        deliverPacket: (packet, peer, at) => { node.delivered.push({ at, packet: Buffer.from(packet), peer }) },
      },
      ...options,
    })
    this.nodes.set(name, node)
    return node
  }

  node (name: string): Node {
    const n = this.nodes.get(name)
    if (n === undefined) throw new Error(`no node ${name}`)
    return n
  }

  /** Delivers datagrams in flight (and any they cause) until none is left, unless holding. */
  flush (): void {
    let guard = 0
    while (!this.holding && this.inFlight.length > 0) {
      if (++guard > 100_000) throw new Error('datagram storm')
      const s = this.inFlight.shift()!
      const datagram = this.filter === null ? s.datagram : this.filter(s)
      if (datagram === null) continue
      const target = [...this.nodes.values()].find(n => `${n.address}:${n.port}` === s.to)
      if (target === undefined) continue
      const [address, port] = splitEndpoint(s.from)
      target.device.receive(Buffer.from(datagram), address, port, this.now)
    }
  }

  /** Drops everything in flight. */
  discardInFlight (): Sent[] {
    return this.inFlight.splice(0)
  }

  /** Advances the clock to `target`, firing every timer on the way at its own deadline. */
  advanceTo (target: number): void {
    for (let guard = 0; guard < 1_000_000; guard++) {
      let next = Infinity
      for (const n of this.nodes.values()) next = Math.min(next, n.device.nextDeadline())
      if (next > target) break
      this.now = Math.max(this.now, next)
      for (const n of this.nodes.values()) n.device.updateTimers(this.now)
      this.flush()
    }
    this.now = Math.max(this.now, target)
    for (const n of this.nodes.values()) n.device.updateTimers(this.now)
    this.flush()
  }

  advance (ms: number): void {
    this.advanceTo(this.now + ms)
  }

  /** Sends an IP packet from `from`'s stack. */
  sendIp (from: string, packet: Buffer): void {
    this.node(from).device.send(packet, this.now)
    this.flush()
  }

  sentBy (name: string, type?: number, since = -Infinity): Sent[] {
    const n = this.node(name)
    return this.log.filter(s => s.from === `${n.address}:${n.port}` && (type === undefined || s.type === type) && s.at >= since)
  }
}

export function splitEndpoint (text: string): [string, number] {
  const i = text.lastIndexOf(':')
  return [text.slice(0, i), Number(text.slice(i + 1))]
}

/**
 * A gateway and one client whose only peer is the gateway (endpoint known), both directions real.
 * Client tunnel IP 10.100.0.2.
 */
export function pair (options: { gateway?: Partial<DeviceOptions>, client?: Partial<DeviceOptions>, clientKeepalive?: number, psk?: Buffer } = {}): { net: Net, gw: Node, client: Node } {
  const net = new Net()
  const gw = net.addNode('gateway', GATEWAY_ADDRESS, GATEWAY_PORT, GATEWAY_TUNNEL_IP, options.gateway)
  const client = addClient(net, 'client', '198.18.0.2', 40000, '10.100.0.2', { options: options.client, keepalive: options.clientKeepalive, psk: options.psk })
  return { net, gw, client }
}

/** Adds a client node and registers each side as the other's peer. */
export function addClient (net: Net, name: string, address: string, port: number, tunnelIp: string,
  opts: { options?: Partial<DeviceOptions>, keepalive?: number, psk?: Buffer, gatewayKnowsEndpoint?: boolean } = {}): Node {
  const gw = net.node('gateway')
  const client = net.addNode(name, address, port, tunnelIp, opts.options)
  gw.device.addPeer({
    publicKey: client.publicKey,
    allowedIPs: [parseIPv4Prefix(`${tunnelIp}/32`)],
    presharedKey: opts.psk ?? null,
    endpoint: opts.gatewayKnowsEndpoint === true ? { address, port } : null,
  })
  client.device.addPeer({
    publicKey: gw.publicKey,
    allowedIPs: [parseIPv4Prefix('10.100.0.0/16')], // the whole tunnel subnet via the gateway, as a real client would
    presharedKey: opts.psk ?? null,
    endpoint: { address: gw.address, port: gw.port },
    persistentKeepalive: opts.keepalive ?? 0,
  })
  return client
}

/** A minimal IPv4 packet (protocol 17, opaque payload) with a valid header checksum. */
export function ipPacket (src: string, dst: string, payload: Buffer | number = 8, protocol = 17): Buffer {
  const body = typeof payload === 'number' ? Buffer.alloc(payload, 0xab) : payload
  const buf = Buffer.alloc(IPV4_MIN_HEADER_LEN + body.length)
  emitIPv4({ src: parseIPv4Address(src), dst: parseIPv4Address(dst), protocol, ttl: 64, payloadLen: body.length, ident: 1, dontFragment: true }, buf)
  body.copy(buf, IPV4_MIN_HEADER_LEN)
  return buf
}

/** Client sends a first packet and the handshake completes both ways (initiator keepalive/data confirms). */
export function establish (net: Net, client = 'client', src = '10.100.0.2'): void {
  net.sendIp(client, ipPacket(src, GATEWAY_TUNNEL_IP))
}
