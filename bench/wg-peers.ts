/**
 * Many WireGuard peers in one process, for bench/scale.ts and its tests: each peer has its own key
 * and its own UDP socket on its own loopback address (127.1.x.y, so the gateway's per-source rate
 * limit under load sees one peer per address, as on the Internet), handshakes as initiator and pings
 * the gateway's tunnel address through the tunnel (ICMP echo, RFC 792). A peer "passes" when the
 * echo reply comes back decrypted.
 *
 * Timers follow wireguard-go (paper 6.4): an unanswered initiation is sent again, freshly built,
 * after REKEY_TIMEOUT plus up to REKEY_TIMEOUT_JITTER_MAX; a cookie reply is kept and used on that
 * retransmission (paper 5.4.7), not answered at once. An unanswered ping is sent again after 1 s.
 * A peer also answers the gateway's initiations (paper 5.1: either side initiates), as wireguard-go
 * does: the responder's keys are used once the gateway's first transport message (its keepalive)
 * arrives on them (paper 6.1), and the ping goes out at once then.
 *
 * Driven over stdin/stdout, one JSON line each way:
 *   in:  {"command":"up"}    every peer starts a new handshake now; answered when all passed or at
 *                            the limit: {"event":"up","passed","peers","firstMs","allMs",...}
 *        {"command":"up","initiate":false}   the same, but the peers only answer the gateway's
 *                            initiations (a gateway resuming its peers after a restart)
 *   in:  {"command":"carry","ms":5000,"rate":2000,"payload":512}
 *                            the passed peers send echoes at `rate` per second in all, in turn, for
 *                            `ms` (<= 600 s), then wait up to 1 s for late replies:
 *                            {"event":"carry","sent","replies","bytes","p50Ms","p99Ms","seconds",...}
 *   in:  {"command":"exit"}
 *   argv[2]: a JSON file (or the JSON itself): {"target":"127.0.0.1:51820","serverPublicKey":"b64","gatewayAddress":"10.100.0.1",
 *             "peers":[{"privateKey":"b64","address":"10.64.0.1"}],"limitMs":60000,"spreadMs":0}
 * Bounded: each "up" ends by `limitMs` (<= 600 s); the process exits when stdin closes.
 */
import { createSocket, type Socket } from 'node:dgram'
import { randomInt } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { pathToFileURL } from 'node:url'
import { resolve } from 'node:path'
import {
  CookieGenerator, createInitiation, consumeInitiation, createResponse, consumeResponse, decodeKey, defaultAead, openTransportMessage, publicKeyFromPrivate,
  REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX, sealTransport, type InitiatorHandshake, type SessionKeys, type StaticIdentity,
} from '../proto/noise/index.ts'
import { emitIPv4, formatIPv4, IPPROTO_ICMP, IPV4_MIN_HEADER_LEN, parseIPv4, parseIPv4Address } from '../proto/wire/ipv4.ts'
import { emitIcmpEcho, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, icmpEchoLength, parseIcmpEcho, type IcmpEchoRepr } from '../proto/wire/icmp.ts'
import {
  MESSAGE_COOKIE_REPLY, MESSAGE_COOKIE_REPLY_RECEIVER_OFFSET, MESSAGE_COOKIE_REPLY_SIZE, MESSAGE_INITIATION, MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE, MESSAGE_RESPONSE_SIZE,
  MESSAGE_TRANSPORT, MESSAGE_TRANSPORT_CONTENT_OFFSET, MESSAGE_TRANSPORT_COUNTER_OFFSET, MESSAGE_TRANSPORT_RECEIVER_OFFSET, MESSAGE_TYPE_OFFSET,
} from '../proto/wire/wireguard.ts'

export interface PeersOptions {
  target: string
  serverPublicKey: string
  gatewayAddress: string
  peers: Array<{ privateKey: string, address: string }>
  limitMs?: number
  /** Spread the first initiations of an "up" evenly over this many ms (0: all at once). */
  spreadMs?: number
}

export interface UpResult {
  event: 'up'
  peers: number
  passed: number
  handshaken: number
  /** From the command to the first / last peer passing (null if none / not all). */
  firstMs: number | null
  allMs: number | null
  /** From the command until this share of peers passed. */
  p50Ms: number | null
  p99Ms: number | null
  initiations: number
  cookieReplies: number
  /** Initiations from the gateway answered (a restarted gateway initiating to its peers). */
  responses: number
  pings: number
  /** CPU this process spent on the "up" (the peers' side of every handshake). */
  cpuS: number
}

export interface CarryResult {
  event: 'carry'
  /** Peers that had a session and took part. */
  peers: number
  sent: number
  replies: number
  /** Echo payload bytes that came back. */
  bytes: number
  /** Sending time (the replies counted include up to 1 s after it). */
  seconds: number
  /** Round trip of the echoes answered. */
  p50Ms: number | null
  p99Ms: number | null
  cpuS: number
}

const PING_RETRY_MS = 1_000
const TICK_MS = 50
/** Carried echoes are sent in ticks of this many ms. */
const CARRY_TICK_MS = 10
const CARRY_DRAIN_MS = 1_000
/** Carried echoes carry their send time here (ms, performance.now()). */
const CARRY_MIN_PAYLOAD = 8

interface SimPeer {
  identity: StaticIdentity
  address: number
  socket: Socket
  cookies: CookieGenerator
  localIndex: number
  handshake: InitiatorHandshake | null
  keys: SessionKeys | null
  /** Keys from answering the gateway's initiation, until its first transport message confirms them. */
  responderKeys: SessionKeys | null
  sendCounter: bigint
  nextAt: number
  passedAt: number | null
}

/** Loopback source address of peer i: 127.1.0.1 upwards (never 127.0.0.x). */
function sourceAddress (i: number): string {
  const n = i + 1
  return `127.${1 + (n >> 16)}.${(n >> 8) & 255}.${n & 255}`
}

export interface UpOptions {
  /** false: no peer initiates; each passes only once the gateway has initiated to it. */
  initiate?: boolean
}

export interface Peers {
  up: (options?: UpOptions) => Promise<UpResult>
  carry: (ms: number, rate: number, payloadBytes: number) => Promise<CarryResult>
  close: () => void
}

export async function startPeers (o: PeersOptions): Promise<Peers> {
  const colon = o.target.lastIndexOf(':')
  const host = o.target.slice(0, colon)
  const port = Number(o.target.slice(colon + 1))
  const serverKey = decodeKey(o.serverPublicKey)
  const gateway = parseIPv4Address(o.gatewayAddress)
  const limitMs = Math.min(Math.max(1_000, o.limitMs ?? 60_000), 600_000)
  const byIndex = new Map<number, SimPeer>()
  const peers: SimPeer[] = []
  const stats = { initiations: 0, cookieReplies: 0, responses: 0, pings: 0 }
  let startedAt = 0
  /** While a "carry" runs: its counts and the round trips seen. */
  let carrying: { replies: number, bytes: number, rtts: number[] } | null = null

  const ping = (p: SimPeer, now: number, payload: Buffer = Buffer.alloc(8)): void => {
    const echo = { type: ICMP_ECHO_REQUEST, ident: p.localIndex & 0xffff, seq: Number(p.sendCounter & 0xffffn), payload } as const
    const packet = Buffer.alloc(IPV4_MIN_HEADER_LEN + icmpEchoLength(echo))
    emitIPv4({ src: p.address, dst: gateway, protocol: IPPROTO_ICMP, ttl: 64, payloadLen: icmpEchoLength(echo), ident: 0, dontFragment: false }, packet, 0)
    emitIcmpEcho(echo, packet, IPV4_MIN_HEADER_LEN)
    p.socket.send(sealTransport(defaultAead, p.keys!.sendKey, p.keys!.remoteIndex, p.sendCounter++, packet), port, host)
    stats.pings++
    p.nextAt = now + PING_RETRY_MS
  }

  const initiate = (p: SimPeer, now: number): void => {
    if (p.handshake !== null) byIndex.delete(p.handshake.localIndex)
    p.localIndex = randomInt(2 ** 32 - 1)
    const { message, handshake } = createInitiation(p.identity, serverKey, null, p.localIndex, Date.now())
    p.cookies.addMacs(message, now)
    p.handshake = handshake
    p.keys = null
    byIndex.set(p.localIndex, p)
    p.socket.send(message, port, host)
    stats.initiations++
    p.nextAt = now + REKEY_TIMEOUT + randomInt(REKEY_TIMEOUT_JITTER_MAX)
  }

  /** The gateway's echo reply to `p` that a transport message carries, or null (keepalive, forged, other). */
  const echoReply = (p: SimPeer, keys: SessionKeys, msg: Buffer): IcmpEchoRepr | null => {
    const n = openTransportMessage(defaultAead, keys.receiveKey, msg.readBigUInt64LE(MESSAGE_TRANSPORT_COUNTER_OFFSET), msg)
    if (n < IPV4_MIN_HEADER_LEN) return null
    try {
      const packet = msg.subarray(MESSAGE_TRANSPORT_CONTENT_OFFSET, MESSAGE_TRANSPORT_CONTENT_OFFSET + n)
      const ip = parseIPv4(packet)
      if (ip.protocol !== IPPROTO_ICMP || ip.src !== gateway) return null
      const echo = parseIcmpEcho(packet.subarray(ip.headerLen, ip.headerLen + ip.payloadLen))
      return echo.type === ICMP_ECHO_REPLY && echo.ident === (p.localIndex & 0xffff) ? echo : null
    } catch { return null /* not an echo reply */ }
  }

  const onMessage = (p: SimPeer) => (msg: Buffer): void => {
    if (startedAt === 0 || msg.length < 8) return
    const now = performance.now()
    const type = msg.readUInt32LE(MESSAGE_TYPE_OFFSET)
    if (type === MESSAGE_INITIATION && msg.length === MESSAGE_INITIATION_SIZE && p.passedAt === null) {
      const consumed = consumeInitiation(p.identity, msg)
      if (consumed === null || !consumed.remoteStatic.equals(serverKey)) return
      const localIndex = randomInt(2 ** 32 - 1)
      const { message, keys } = createResponse(consumed.handshake, null, localIndex)
      p.cookies.addMacs(message, now)
      p.responderKeys = keys
      p.socket.send(message, port, host)
      stats.responses++
      return
    }
    if (type === MESSAGE_TRANSPORT && p.responderKeys !== null && msg.readUInt32LE(MESSAGE_TRANSPORT_RECEIVER_OFFSET) === p.responderKeys.localIndex) {
      // Paper 6.1: the initiator's first transport message confirms the responder's keys.
      if (openTransportMessage(defaultAead, p.responderKeys.receiveKey, msg.readBigUInt64LE(MESSAGE_TRANSPORT_COUNTER_OFFSET), msg) < 0) return
      p.keys = p.responderKeys
      p.responderKeys = null
      p.sendCounter = 0n
      if (p.passedAt === null) ping(p, now)
      return
    }
    if (type === MESSAGE_COOKIE_REPLY && msg.length === MESSAGE_COOKIE_REPLY_SIZE) {
      if (p.handshake !== null && msg.readUInt32LE(MESSAGE_COOKIE_REPLY_RECEIVER_OFFSET) === p.handshake.localIndex && p.cookies.consumeReply(msg, now)) stats.cookieReplies++
    } else if (type === MESSAGE_RESPONSE && msg.length === MESSAGE_RESPONSE_SIZE && p.handshake !== null && p.keys === null) {
      const keys = consumeResponse(p.handshake, p.identity, msg)
      if (keys === null) return
      p.keys = keys
      p.sendCounter = 0n
      ping(p, now) // also confirms the session to the responder (paper 5.4.6)
    } else if (type === MESSAGE_TRANSPORT && carrying !== null && p.keys !== null && msg.readUInt32LE(MESSAGE_TRANSPORT_RECEIVER_OFFSET) === p.keys.localIndex) {
      const echo = echoReply(p, p.keys, msg)
      if (echo === null || echo.payload.length < CARRY_MIN_PAYLOAD) return
      carrying.replies++
      carrying.bytes += echo.payload.length
      carrying.rtts.push(performance.now() - Buffer.from(echo.payload.buffer, echo.payload.byteOffset, 8).readDoubleLE(0))
    } else if (type === MESSAGE_TRANSPORT && p.keys !== null && p.passedAt === null && msg.readUInt32LE(MESSAGE_TRANSPORT_RECEIVER_OFFSET) === p.keys.localIndex) {
      if (echoReply(p, p.keys, msg) !== null) p.passedAt = now - startedAt
    }
  }

  for (let i = 0; i < o.peers.length; i++) {
    const privateKey = decodeKey(o.peers[i].privateKey)
    const socket = createSocket('udp4')
    socket.on('error', () => { /* best effort: a lost datagram is retransmitted by the timers */ })
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject)
      socket.bind(0, sourceAddress(i), () => { socket.off('error', reject); resolve() })
    })
    const p: SimPeer = {
      identity: { privateKey, publicKey: publicKeyFromPrivate(privateKey) },
      address: parseIPv4Address(o.peers[i].address),
      socket,
      cookies: new CookieGenerator(serverKey),
      localIndex: 0,
      handshake: null,
      keys: null,
      responderKeys: null,
      sendCounter: 0n,
      nextAt: Infinity,
      passedAt: null,
    }
    socket.on('message', onMessage(p))
    peers.push(p)
  }

  const up = async (options: UpOptions = {}): Promise<UpResult> => {
    const peersInitiate = options.initiate ?? true
    startedAt = performance.now()
    const cpuAtStart = process.cpuUsage()
    const spreadMs = Math.max(0, o.spreadMs ?? 0)
    for (const [i, p] of peers.entries()) {
      p.handshake = null
      p.keys = null
      p.responderKeys = null
      p.passedAt = null
      p.nextAt = !peersInitiate ? Infinity : startedAt + (peers.length > 1 ? spreadMs * i / (peers.length - 1) : 0)
    }
    let passed = 0
    while (passed < peers.length && performance.now() - startedAt < limitMs) {
      const now = performance.now()
      passed = 0
      let sentThisTick = 0
      for (const p of peers) {
        if (p.passedAt !== null) { passed++; continue }
        // At most 1000 sends per tick, so replies are read between bursts.
        if (p.nextAt > now || sentThisTick >= 1000) continue
        sentThisTick++
        if (p.keys !== null) ping(p, now)
        else initiate(p, now)
      }
      await new Promise(resolve => setTimeout(resolve, sentThisTick >= 1000 ? 0 : TICK_MS))
    }
    const times = peers.map(p => p.passedAt).filter((t): t is number => t !== null).sort((a, b) => a - b)
    const at = (q: number): number | null => times.length === peers.length && times.length > 0
      ? Math.round(times[Math.min(times.length - 1, Math.ceil(q * times.length) - 1)])
      : null
    const result: UpResult = {
      event: 'up',
      peers: peers.length,
      passed: times.length,
      handshaken: peers.filter(p => p.keys !== null).length,
      firstMs: times.length > 0 ? Math.round(times[0]) : null,
      allMs: at(1),
      p50Ms: at(0.5),
      p99Ms: at(0.99),
      ...stats,
      cpuS: Math.round((() => { const u = process.cpuUsage(cpuAtStart); return (u.user + u.system) / 1e4 })()) / 100,
    }
    stats.initiations = stats.cookieReplies = stats.responses = stats.pings = 0
    startedAt = 0
    return result
  }

  /** Echoes from every peer with a session, `rate` per second in all, in turn, for `ms`. */
  const carry = async (ms: number, rate: number, payloadBytes: number): Promise<CarryResult> => {
    const cpuAtStart = process.cpuUsage()
    const senders = peers.filter(p => p.keys !== null)
    const state = { replies: 0, bytes: 0, rtts: [] as number[] }
    carrying = state
    startedAt = performance.now()
    const duration = Math.min(Math.max(0, ms), 600_000)
    const size = Math.max(CARRY_MIN_PAYLOAD, Math.min(1_200, payloadBytes))
    let sent = 0
    let next = 0
    while (senders.length > 0 && performance.now() - startedAt < duration) {
      const due = Math.floor((performance.now() - startedAt) * rate / 1000)
      for (let k = 0; sent < due && k < 10_000; k++) {
        const p = senders[next]
        next = (next + 1) % senders.length
        const payload = Buffer.alloc(size)
        payload.writeDoubleLE(performance.now(), 0)
        ping(p, performance.now(), payload)
        sent++
      }
      await new Promise(resolve => setTimeout(resolve, CARRY_TICK_MS))
    }
    const seconds = (performance.now() - startedAt) / 1000
    const drainUntil = performance.now() + CARRY_DRAIN_MS
    while (state.replies < sent && performance.now() < drainUntil) await new Promise(resolve => setTimeout(resolve, CARRY_TICK_MS))
    carrying = null
    startedAt = 0
    stats.pings = 0
    const rtts = state.rtts.sort((a, b) => a - b)
    const at = (q: number): number | null => rtts.length === 0 ? null : Math.round(rtts[Math.min(rtts.length - 1, Math.ceil(q * rtts.length) - 1)] * 100) / 100
    const u = process.cpuUsage(cpuAtStart)
    return {
      event: 'carry',
      peers: senders.length,
      sent,
      replies: state.replies,
      bytes: state.bytes,
      seconds: Math.round(seconds * 100) / 100,
      p50Ms: at(0.5),
      p99Ms: at(0.99),
      cpuS: Math.round((u.user + u.system) / 1e4) / 100,
    }
  }

  return { up, carry, close: () => { for (const p of peers) p.socket.close() } }
}

/** The tunnel address of peer i, outside a gateway at 10.100.0.1. */
export function peerTunnelAddress (i: number): string {
  return formatIPv4(((10 << 24) + (64 << 16) + i + 1) >>> 0)
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const arg = process.argv[2] ?? '{}'
  const sim = await startPeers(JSON.parse(arg.startsWith('{') ? arg : readFileSync(arg, 'utf8')) as PeersOptions)
  process.stdout.write(JSON.stringify({ event: 'ready' }) + '\n')
  const lines = createInterface({ input: process.stdin })
  for await (const line of lines) {
    const { command, ms, rate, payload, initiate } = JSON.parse(line) as { command: string, ms?: number, rate?: number, payload?: number, initiate?: boolean }
    if (command === 'up') process.stdout.write(JSON.stringify(await sim.up({ initiate: initiate !== false })) + '\n')
    else if (command === 'carry') process.stdout.write(JSON.stringify(await sim.carry(ms ?? 5_000, rate ?? 1_000, payload ?? 64)) + '\n')
    else break
  }
  sim.close()
  process.exit(0)
}
