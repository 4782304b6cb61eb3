/**
 * The storm curve of bench/scale.ts: a gateway with N peers that carry traffic (bench/wg-peers.ts:
 * ICMP echoes through their tunnels at a fixed rate) while another process sends handshake
 * initiations at increasing rates, half from keys the gateway does not know (valid MAC1, so they
 * reach the DoS gate of paper 5.3) and half from known peers' keys with a wrong MAC1.
 *
 * Each rate is a pair of phases of the same length: the peers carry alone, then the same with the
 * storm. Per phase: the gateway's counters (GET /status on its metrics listener), its CPU, the
 * datagrams its UDP socket dropped (/proc/net/udp), and what the peers got back (echo replies,
 * round trips). The storm's initiations are built once and sent again from many loopback sources,
 * as an attacker replaying them would; the gateway cannot tell a replayed unknown initiation from
 * a new one without the Diffie-Hellman that the cookie under load spares it.
 *
 * Then every peer handshakes again, once without a storm and once during one (until all passed):
 * how long until all of them passed, the cookie round trip of paper 5.3 included.
 *
 *   node bin/run-ts.js bench/scale-storm.ts '{"target":"127.0.0.1:P","serverPublicKey":"b64",...}'
 * runs the storm sender alone (JSON lines on stdin/stdout, like bench/wg-peers.ts: {"command":
 * "storm","ms","rate"} answered when it ends or on {"command":"stop"}).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createSocket, type Socket } from 'node:dgram'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { onExitCleanup } from '../test/helpers/lab.ts'
import { round2 } from './baseline/cli.ts'
import { CookieGenerator, createInitiation, decodeKey, generatePrivateKey, publicKeyFromPrivate } from '../proto/noise/index.ts'
import { accepts, exited, failure, freePort, startGateway, stopGateway, type Gateway } from './scale-gateway.ts'
import { cpuSeconds } from './baseline/proc.ts'
import { writeRestartSetup } from './scale-restart.ts'
import { MESSAGE_COOKIE_REPLY, MESSAGE_INITIATION_MAC1_OFFSET, MESSAGE_INITIATION_SIZE, MESSAGE_TYPE_OFFSET } from '../proto/wire/wireguard.ts'
import type { CarryResult, PeersOptions, UpResult } from './wg-peers.ts'

const ROOT = resolve(fileURLToPath(import.meta.url), '../..')
/** Distinct initiations per kind in the storm (sent again and again). */
const STORM_POOL = 64
/** Loopback sources of the storm: 127.3.0.1 upwards (the peers use 127.1.x.y). */
const STORM_SOURCES = 64
const STORM_TICK_MS = 10
/** Peers re-handshake when their sessions are older than this (REKEY_AFTER_TIME is 120 s). */
const SESSION_REFRESH_MS = 90_000

export interface StormOptions {
  /** Storm initiations per second, one pair of phases each. */
  rates: number[]
  phaseS: number
  /** Echoes per second the peers carry in all, and their payload bytes. */
  carryRate: number
  payload: number
  timeoutS: number
  /** Added to the gateway's environment. */
  gatewayEnv?: Record<string, string>
  /** Also every peer handshaking again without and during the storm (default true). */
  rehandshake?: boolean
}

export interface StormPhase {
  /** Echoes the peers sent and got back, and the share answered. */
  sent: number
  replies: number
  answered: number
  repliesPerS: number
  /** Echo payload MB/s that came back, and the round trips. */
  mbPerS: number
  p50Ms: number | null
  p99Ms: number | null
  /** Gateway CPU (share of one core). */
  gatewayCpu: number
  /** Datagrams the gateway's UDP socket dropped (receive buffer full). */
  socketDrops: number
}

export interface StormRun {
  count: number
  rate: number
  /** Storm initiations sent per second (the sender's own pace on a shared machine). */
  stormSentPerS: number
  /** Per second, as the gateway counted them: storm messages it decided on, in all and by outcome. */
  handledPerS: number
  cookieRepliesPerS: number
  /** Unknown keys that got the full Diffie-Hellman (not under load: no cookie asked for). */
  unknownPeerPerS: number
  badMac1PerS: number
  rateLimitedPerS: number
  /** Storm messages sent but never decided on (lost to the socket's buffer or still queued). */
  unhandled: number
  /** Cookie replies the storm's sources received. */
  cookieRepliesReceived: number
  before: StormPhase
  during: StormPhase
  /** During / before: echo replies per second, and p99 round trip. */
  carryRatio: number
  p99Ratio: number | null
  /** Every peer handshaking again, without and during the storm. */
  rehandshake: { quiet: Rehandshake, storm: Rehandshake, stormSentPerS: number } | null
}

export interface Rehandshake {
  passed: number
  /** Seconds until half / every peer passed an echo on its new session (null: not all did). */
  p50S: number | null
  allS: number | null
  initiations: number
  cookieReplies: number
  /** Datagrams the gateway's UDP socket dropped meanwhile (receive buffer full). */
  socketDrops: number
  /** The gateway's handshake rejections meanwhile, by reason (storm messages included). */
  rejected: Record<string, number>
}

/** A child process spoken to in JSON lines (bench/wg-peers.ts, or the storm sender below). */
class LineProcess {
  private readonly child: ChildProcess
  private readonly lines: string[] = []
  private waiting: ((line: string | null) => void) | null = null
  private closed = false

  constructor (script: string, arg: string) {
    // Niced: on a machine of its own the gateway would not share its cores with its peers.
    this.child = spawn('nice', ['-n', '10', process.execPath, join(ROOT, 'bin/run-ts.js'), join(ROOT, script), arg], { stdio: ['pipe', 'pipe', 'inherit'] })
    createInterface({ input: this.child.stdout! }).on('line', line => {
      if (this.waiting !== null) { const w = this.waiting; this.waiting = null; w(line) } else this.lines.push(line)
    })
    this.child.once('exit', () => { this.closed = true; this.waiting?.(null) })
  }

  async next<T> (): Promise<T> {
    const line = this.lines.shift() ?? (this.closed ? null : await new Promise<string | null>(resolve => { this.waiting = resolve }))
    if (line === null) throw new Error('a load process exited')
    return JSON.parse(line) as T
  }

  send (command: Record<string, unknown>): void { this.child.stdin!.write(JSON.stringify(command) + '\n') }

  end (): void {
    if (this.closed) return
    this.send({ command: 'exit' })
    setTimeout(() => { if (!this.closed) this.child.kill('SIGKILL') }, 5_000).unref()
  }

  kill (): void { if (!this.closed) this.child.kill('SIGKILL') }
}

async function gatewayCounters (metricsPort: number): Promise<Record<string, Record<string, number>>> {
  const res = await fetch(`http://127.0.0.1:${metricsPort}/status`, { signal: AbortSignal.timeout(10_000) })
  const body = await res.json() as { counters: Record<string, Record<string, number>> }
  return body.counters
}

/** Datagrams dropped by the UDP socket bound to 127.0.0.1:`port` (the last column of /proc/net/udp). */
export function udpSocketDrops (port: number): number {
  const local = `0100007F:${port.toString(16).toUpperCase().padStart(4, '0')}`
  for (const line of readFileSync('/proc/net/udp', 'utf8').split('\n').slice(1)) {
    const fields = line.trim().split(/\s+/)
    if (fields[1] === local) return Number(fields.at(-1))
  }
  return 0
}

export async function measureStorm (count: number, o: StormOptions): Promise<StormRun[]> {
  const dir = mkdtempSync(join(tmpdir(), 'cc-bench-storm-'))
  let g: Gateway | undefined
  let peers: LineProcess | undefined
  let storm: LineProcess | undefined
  const unregister = onExitCleanup(() => {
    g?.child.kill('SIGKILL')
    peers?.kill()
    storm?.kill()
    rmSync(dir, { recursive: true, force: true })
  })
  try {
    const setup = await writeRestartSetup(dir, count, o.timeoutS * 1000)
    const metricsPort = await freePort()
    const config = JSON.parse(readFileSync(setup.configFile, 'utf8')) as Record<string, unknown>
    writeFileSync(setup.configFile, JSON.stringify({ ...config, metricsListen: `127.0.0.1:${metricsPort}` }))
    const peerOptions = JSON.parse(readFileSync(setup.peersFile, 'utf8')) as PeersOptions
    const udpPort = Number(peerOptions.target.split(':')[1])

    g = startGateway(dir, setup.configFile, setup.httpsPort, o.gatewayEnv)
    const deadline = performance.now() + o.timeoutS * 1000
    while (!await accepts(setup.httpsPort)) {
      if (exited(g) || performance.now() > deadline) throw failure(g, 'no HTTPS listener')
      await sleep(20)
    }
    peers = new LineProcess('bench/wg-peers.ts', setup.peersFile)
    await peers.next()
    const stormFile = join(dir, 'storm.json')
    writeFileSync(stormFile, JSON.stringify({
      target: peerOptions.target,
      serverPublicKey: peerOptions.serverPublicKey,
      knownPrivateKeys: peerOptions.peers.slice(0, STORM_POOL).map(p => p.privateKey),
    } satisfies StormSenderOptions))
    storm = new LineProcess('bench/scale-storm.ts', stormFile)
    await storm.next()

    const pid = g.child.pid!
    let upAt = -Infinity
    const phase = async (rate: number): Promise<{ phase: StormPhase, storm: StormSent | null, counters: Record<string, Record<string, number>>, seconds: number }> => {
      const counters0 = await gatewayCounters(metricsPort)
      const cpu0 = cpuSeconds(pid)
      const drops0 = udpSocketDrops(udpPort)
      const t0 = performance.now()
      peers!.send({ command: 'carry', ms: o.phaseS * 1000, rate: o.carryRate, payload: o.payload })
      if (rate > 0) storm!.send({ command: 'storm', ms: o.phaseS * 1000, rate })
      const carried = await peers!.next<CarryResult>()
      const sent = rate > 0 ? await storm!.next<StormSent>() : null
      await sleep(200) // what is still queued in the gateway's socket is read (or dropped) by now
      const seconds = (performance.now() - t0) / 1000
      const counters1 = await gatewayCounters(metricsPort)
      const delta: Record<string, Record<string, number>> = {}
      for (const [family, values] of Object.entries(counters1)) {
        delta[family] = {}
        for (const [k, v] of Object.entries(values)) delta[family][k] = v - (counters0[family]?.[k] ?? 0)
      }
      return {
        phase: {
          sent: carried.sent,
          replies: carried.replies,
          answered: carried.sent === 0 ? 0 : round2(carried.replies / carried.sent),
          repliesPerS: round2(carried.replies / carried.seconds),
          mbPerS: round2(carried.bytes / carried.seconds / 1e6),
          p50Ms: carried.p50Ms,
          p99Ms: carried.p99Ms,
          gatewayCpu: round2((cpuSeconds(pid) - cpu0) / seconds),
          socketDrops: udpSocketDrops(udpPort) - drops0,
        },
        storm: sent,
        counters: delta,
        seconds,
      }
    }

    const runs: StormRun[] = []
    for (const rate of o.rates) {
      if (performance.now() - upAt > SESSION_REFRESH_MS) {
        peers.send({ command: 'up' })
        const up = await peers.next<UpResult>()
        if (up.passed !== count) throw failure(g, `only ${up.passed} of ${count} peers passed`)
        upAt = performance.now()
        await sleep(1_500) // the under-load window of their handshakes closes (UNDER_LOAD_AFTER_TIME)
      }
      if (exited(g) || performance.now() > deadline) throw failure(g, `storm at ${rate}/s: gateway gone or out of time`)
      const before = await phase(0)
      await sleep(1_500)
      const during = await phase(rate)
      await sleep(1_500)
      let rehandshake: StormRun['rehandshake'] = null
      if (o.rehandshake !== false) {
        const rejectedSince = async (before: Record<string, number>): Promise<Record<string, number>> => {
          const now = (await gatewayCounters(metricsPort)).wg_handshakes_rejected ?? {}
          return Object.fromEntries(Object.entries(now).map(([k, v]) => [k, v - (before[k] ?? 0)]).filter(([, v]) => v !== 0))
        }
        const summary = async (u: UpResult, drops: number, rejected: Record<string, number>): Promise<Rehandshake> => ({
          passed: u.passed, p50S: u.p50Ms === null ? null : round2(u.p50Ms / 1000), allS: u.allMs === null ? null : round2(u.allMs / 1000), initiations: u.initiations, cookieReplies: u.cookieReplies,
          socketDrops: udpSocketDrops(udpPort) - drops,
          rejected: await rejectedSince(rejected),
        })
        let drops = udpSocketDrops(udpPort)
        let rejected = (await gatewayCounters(metricsPort)).wg_handshakes_rejected ?? {}
        peers.send({ command: 'up' })
        const quiet = await summary(await peers.next<UpResult>(), drops, rejected)
        await sleep(1_500)
        storm.send({ command: 'storm', ms: o.timeoutS * 1000, rate })
        await sleep(500) // the gateway is under load before the peers start
        drops = udpSocketDrops(udpPort)
        rejected = (await gatewayCounters(metricsPort)).wg_handshakes_rejected ?? {}
        peers.send({ command: 'up' })
        const stormed = await summary(await peers.next<UpResult>(), drops, rejected)
        storm.send({ command: 'stop' })
        const sent = await storm.next<StormSent>()
        upAt = performance.now()
        rehandshake = { quiet, storm: stormed, stormSentPerS: round2(sent.sent / sent.seconds) }
        await sleep(1_500)
      }
      const rejected = during.counters.wg_handshakes_rejected ?? {}
      // Per second of storm: the counters also cover the phase's drain, when nothing more is sent.
      const per = (n: number | undefined): number => round2((n ?? 0) / (during.storm?.seconds ?? during.seconds))
      const handled = (rejected.cookie_sent ?? 0) + (rejected.unknown_peer ?? 0) + (rejected.mac1 ?? 0) + (rejected.ratelimit ?? 0) + (rejected.initiation_invalid ?? 0)
      runs.push({
        count,
        rate,
        stormSentPerS: round2((during.storm?.sent ?? 0) / (during.storm?.seconds ?? 1)),
        handledPerS: per(handled),
        cookieRepliesPerS: per(during.counters.wg_messages_sent?.cookie_reply),
        unknownPeerPerS: per(rejected.unknown_peer),
        badMac1PerS: per(rejected.mac1),
        rateLimitedPerS: per(rejected.ratelimit),
        unhandled: Math.max(0, (during.storm?.sent ?? 0) - handled),
        cookieRepliesReceived: during.storm?.cookieReplies ?? 0,
        before: before.phase,
        during: during.phase,
        carryRatio: before.phase.repliesPerS === 0 ? 0 : round2(during.phase.repliesPerS / before.phase.repliesPerS),
        p99Ratio: before.phase.p99Ms === null || during.phase.p99Ms === null || before.phase.p99Ms === 0 ? null : round2(during.phase.p99Ms / before.phase.p99Ms),
        rehandshake,
      })
      process.stderr.write(`  ${JSON.stringify(runs.at(-1))}\n`)
    }
    return runs
  } finally {
    peers?.end()
    storm?.end()
    if (g !== undefined) await stopGateway(g)
    rmSync(dir, { recursive: true, force: true })
    unregister()
  }
}

// The storm sender (its own process, so its pace does not stall the peers' loop)

export interface StormSenderOptions {
  target: string
  serverPublicKey: string
  /** Known peers' keys, for initiations with a wrong MAC1. */
  knownPrivateKeys: string[]
}

export interface StormSent { event: 'storm', sent: number, seconds: number, cookieReplies: number, otherReplies: number }

/** Initiations with a valid MAC1 from unknown keys, and from known keys with a flipped MAC1, interleaved. */
function stormPool (o: StormSenderOptions): Buffer[] {
  const serverKey = decodeKey(o.serverPublicKey)
  const macs = new CookieGenerator(serverKey)
  const build = (privateKey: Buffer, badMac: boolean): Buffer => {
    const identity = { privateKey, publicKey: publicKeyFromPrivate(privateKey) }
    const { message } = createInitiation(identity, serverKey, null, (Math.random() * 2 ** 32) >>> 0, Date.now())
    macs.addMacs(message, performance.now())
    if (badMac) message[MESSAGE_INITIATION_MAC1_OFFSET] ^= 0xff
    if (message.length !== MESSAGE_INITIATION_SIZE) throw new Error('unexpected initiation length')
    return message
  }
  const pool: Buffer[] = []
  for (let i = 0; i < STORM_POOL; i++) {
    pool.push(build(generatePrivateKey(), false))
    const known = o.knownPrivateKeys[i % Math.max(1, o.knownPrivateKeys.length)]
    pool.push(build(known === undefined ? generatePrivateKey() : decodeKey(known), true))
  }
  return pool
}

async function runStormSender (o: StormSenderOptions): Promise<void> {
  const colon = o.target.lastIndexOf(':')
  const host = o.target.slice(0, colon)
  const port = Number(o.target.slice(colon + 1))
  const pool = stormPool(o)
  const counts = { cookieReplies: 0, otherReplies: 0 }
  const sockets: Socket[] = []
  for (let i = 0; i < STORM_SOURCES; i++) {
    const socket = createSocket('udp4')
    socket.on('error', () => { /* a full send buffer loses a storm datagram: the count says what was sent */ })
    socket.on('message', msg => {
      if (msg.length >= 4 && msg.readUInt32LE(MESSAGE_TYPE_OFFSET) === MESSAGE_COOKIE_REPLY) counts.cookieReplies++
      else counts.otherReplies++
    })
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject)
      socket.bind(0, `127.3.0.${i + 1}`, () => { socket.off('error', reject); resolve() })
    })
    sockets.push(socket)
  }
  let stopped = false
  let running: Promise<void> | null = null
  const storm = async (duration: number, perSecond: number): Promise<void> => {
    counts.cookieReplies = counts.otherReplies = 0
    stopped = false
    const started = performance.now()
    let sent = 0
    while (!stopped && performance.now() - started < duration) {
      const due = Math.floor((performance.now() - started) * perSecond / 1000)
      for (let k = 0; sent < due && k < 100_000; k++, sent++) sockets[sent % sockets.length].send(pool[sent % pool.length], port, host)
      await sleep(STORM_TICK_MS)
    }
    const seconds = (performance.now() - started) / 1000
    await sleep(200) // late cookie replies
    process.stdout.write(JSON.stringify({ event: 'storm', sent, seconds: round2(seconds), ...counts } satisfies StormSent) + '\n')
  }
  const lines = createInterface({ input: process.stdin })
  const finish = (): void => {
    stopped = true
    void (running ?? Promise.resolve()).then(() => {
      for (const s of sockets) s.close()
      process.exit(0)
    })
  }
  lines.on('line', line => {
    const { command, ms, rate } = JSON.parse(line) as { command: string, ms?: number, rate?: number }
    if (command === 'storm' && running === null) {
      running = storm(Math.min(Math.max(0, ms ?? 5_000), 600_000), Math.max(1, rate ?? 1_000)).finally(() => { running = null })
    } else if (command === 'stop') {
      stopped = true
    } else if (command !== 'storm') {
      lines.close()
    }
  })
  lines.once('close', finish)
  process.stdout.write(JSON.stringify({ event: 'ready' }) + '\n')
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const arg = process.argv[2] ?? '{}'
  await runStormSender(JSON.parse(arg.startsWith('{') ? arg : readFileSync(arg, 'utf8')) as StormSenderOptions)
}
