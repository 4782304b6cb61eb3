/**
 * The connections curve of bench/scale.ts: a gateway with T tunnels (bench/scale-origin.ts in a
 * process of its own: userspace agents in front of one HTTP server), one hostname each under the
 * local wildcard; then C HTTPS keep-alive connections held open, spread over the T hostnames, one in
 * a hundred (at most 100) upgraded to a WebSocket. Measured: gateway RSS per held connection, and
 * p50/p99 of small GETs on 8 other connections with C held against the same GETs to a second,
 * identical gateway and origin holding none, in alternating rounds (ROUNDS each), so that both
 * sides see the same moments of a shared machine. The same alternation before any connection is
 * held gives the control ratio: what the two setups differ by on their own.
 *
 * The edge closes an HTTP/1.1 connection idle for keepAliveTimeoutMs (30 s): while they are being
 * opened, a held connection idle for KEEP_HELD_MS sends one GET (opening pauses meanwhile), and after all are open every one
 * sends one (100 at a time) just before RSS and latency are taken; the held count is checked again
 * after the latency run. Client addresses are spread over 127.3.0.0/16,
 * at most 200 connections each, under the edge's per-client connection cap (256).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { createInterface } from 'node:readline'
import tls from 'node:tls'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { onExitCleanup } from '../test/helpers/lab.ts'
import { round2 } from './baseline/cli.ts'
import { encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../proto/noise/index.ts'
import { accepts, exited, failure, freePort, freeUdpPort, memoryMB, startGateway, stopGateway, type Gateway } from './scale-gateway.ts'
import { peerTunnelAddress } from './wg-peers.ts'
import { websocketAccept, type OriginOptions } from './scale-origin.ts'

const ROOT = resolve(fileURLToPath(import.meta.url), '../..')
const GATEWAY_ADDRESS = '10.100.0.1'
const BASE = 'scale.test'
const MEASURE_CONNECTIONS = 8
/** Latency rounds per side, alternating held / none. */
const ROUNDS = 5
const PER_CLIENT_ADDRESS = 200
const OPEN_PARALLEL = 100
const REQUEST_TIMEOUT_MS = 30_000
/** Under the edge's 30 s keep-alive timeout, with room for a slow round. */
const KEEP_HELD_MS = 10_000

export interface ConnectionsRun {
  count: number
  tunnels: number
  websockets: number
  /** Held connections still open after the latency run. */
  heldAtEnd: number
  openS: number
  rssBeforeMB: number
  rssHeldMB: number
  rssPerConnectionKB: number
  /** The second gateway, holding none, in the rounds alternating with `held`. */
  baseline: { p50Ms: number, p99Ms: number, requests: number }
  held: { p50Ms: number, p99Ms: number, requests: number }
  p99Ratio: number
  /** p99 of the first gateway over the second's before any connection is held (1 = identical setups). */
  controlP99Ratio: number
}

/** One HTTP/1.1 connection over TLS, one request at a time (a 2-byte body is all the origin sends). */
export class HttpsConnection {
  private buffer = ''
  private pending: { resolve: (status: number) => void, reject: (err: Error) => void } | null = null
  private upgraded = false
  /** performance.now() of the last answer. */
  lastAnswerAt = performance.now()
  get isWebSocket (): boolean { return this.upgraded }
  closed = false
  /** Idle ms before the close, for the report of connections that closed. */
  idleAtClose = 0

  private constructor (readonly socket: tls.TLSSocket, readonly servername: string) {
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => { if (!this.upgraded || this.pending !== null) { this.buffer += chunk; this.parse() } })
    socket.on('error', () => {})
    socket.on('close', () => {
      this.closed = true
      this.idleAtClose = Math.round(performance.now() - this.lastAnswerAt)
      this.pending?.reject(new Error('connection closed'))
      this.pending = null
    })
  }

  static async open (port: number, servername: string, localAddress?: string): Promise<HttpsConnection> {
    return await new Promise((resolve, reject) => {
      const socket = tls.connect({ host: '127.0.0.1', port, servername, ...(localAddress === undefined ? {} : { localAddress }), rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
        socket.off('error', reject)
        resolve(new HttpsConnection(socket, servername))
      })
      socket.once('error', reject)
      socket.setTimeout(REQUEST_TIMEOUT_MS, () => socket.destroy(new Error('TLS handshake timed out')))
    })
  }

  /** GET `path` with the connection's own name as Host (the edge answers 421 to another); resolves with the status once the whole answer is in. */
  async get (path = '/'): Promise<number> {
    return await this.exchange(`GET ${path} HTTP/1.1\r\nhost: ${this.servername}\r\n\r\n`)
  }

  /** Upgrades to a WebSocket (RFC 6455 4.1); resolves with the status (101 expected), then stays silent. */
  async upgrade (): Promise<number> {
    const host = this.servername
    const key = randomBytes(16).toString('base64')
    this.upgraded = true
    const status = await this.exchange(`GET /ws HTTP/1.1\r\nhost: ${host}\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: ${key}\r\n\r\n`)
    if (status === 101 && !this.buffer.toLowerCase().includes(websocketAccept(key).toLowerCase())) throw new Error('wrong sec-websocket-accept')
    this.buffer = ''
    return status
  }

  close (): void { this.socket.destroy() }

  private async exchange (request: string): Promise<number> {
    if (this.closed) throw new Error('connection closed')
    this.socket.setTimeout(0)
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.pending = null; reject(new Error('no answer in time')) }, REQUEST_TIMEOUT_MS)
      this.pending = {
        resolve: s => { clearTimeout(timer); resolve(s) },
        reject: e => { clearTimeout(timer); reject(e) },
      }
      this.socket.write(request)
    })
  }

  private parse (): void {
    if (this.pending === null) return
    const end = this.buffer.indexOf('\r\n\r\n')
    if (end === -1) return
    const head = this.buffer.slice(0, end)
    const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head)?.[1] ?? NaN)
    if (status === 101) {
      const p = this.pending
      this.pending = null
      this.buffer = head
      p.resolve(status)
      return
    }
    const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0)
    if (this.buffer.length < end + 4 + length) return
    this.buffer = this.buffer.slice(end + 4 + length)
    const p = this.pending
    this.pending = null
    this.lastAnswerAt = performance.now()
    p.resolve(status)
  }
}

/**
 * `total` GETs on each side, in ROUNDS rounds alternating between the sides (a first, then b), so
 * both meet the same bursts of other load: their latencies.
 */
export async function alternating (a: HttpsConnection[], b: HttpsConnection[], total: number): Promise<{ a: number[], b: number[] }> {
  const out = { a: [] as number[], b: [] as number[] }
  for (let r = 0; r < ROUNDS; r++) {
    const n = Math.floor((r + 1) * total / ROUNDS) - Math.floor(r * total / ROUNDS)
    out.a.push(...await requestTimes(a, n))
    out.b.push(...await requestTimes(b, n))
  }
  return out
}

export function summarize (times: number[]): { p50Ms: number, p99Ms: number, requests: number } {
  const sorted = [...times].sort((x, y) => x - y)
  const at = (q: number): number => round2(sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)])
  return { p50Ms: at(0.5), p99Ms: at(0.99), requests: sorted.length }
}

/** Latencies of `total` GETs on `connections` connections in parallel, each sequential. */
async function requestTimes (connections: HttpsConnection[], total: number): Promise<number[]> {
  const times: number[] = []
  let next = 0
  await Promise.all(connections.map(async c => {
    while (next < total) {
      next++
      const t0 = performance.now()
      const status = await c.get()
      if (status !== 200) throw new Error(`GET ${c.servername}: ${status}`)
      times.push(performance.now() - t0)
    }
  }))
  return times
}

/** Runs `work` over `items` with at most `parallel` at once. */
export async function inParallel<T> (items: T[], parallel: number, work: (item: T, i: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: Math.min(parallel, items.length) }, async () => {
    while (next < items.length) { const i = next++; await work(items[i], i) }
  }))
}

export function clientAddress (i: number): string {
  const n = Math.floor(i / PER_CLIENT_ADDRESS) + 1
  return `127.3.${n >> 8}.${n & 255}`
}

export interface OriginSetup { gateway: Gateway, origin: ChildProcess, httpsPort: number, hosts: string[], dir: string }

/** A gateway with `tunnels` tunnels, their origin process up and every tunnel answering. */
export async function startTunnels (dir: string, tunnels: number, timeoutS: number, gatewayEnv: Record<string, string> = {}): Promise<OriginSetup> {
  const httpsPort = await freePort()
  const udpPort = await freeUdpPort()
  const gatewayKey = generatePrivateKey()
  const keys = Array.from({ length: tunnels }, () => generatePrivateKey())
  const hosts = keys.map((_, i) => `t${i}.${BASE}`)
  const config = {
    privateKey: encodeKey(gatewayKey),
    listenPort: udpPort,
    listenAddress: '127.0.0.1',
    address: GATEWAY_ADDRESS,
    peers: keys.map((k, i) => ({ publicKey: encodeKey(publicKeyFromPrivate(k)), allowedIPs: [`${peerTunnelAddress(i)}/32`], name: `t${i}`, hostnames: [hosts[i]], port: 80 })),
    edge: { dataDir: join(dir, 'data'), httpsListen: `127.0.0.1:${httpsPort}`, httpListen: null, wildcards: [`*.${BASE}`] },
  }
  const configFile = join(dir, 'gateway.json')
  writeFileSync(configFile, JSON.stringify(config))
  const gateway = startGateway(dir, configFile, httpsPort, gatewayEnv)
  const deadline = performance.now() + timeoutS * 1000
  while (!await accepts(httpsPort)) {
    if (exited(gateway) || performance.now() > deadline) throw failure(gateway, 'no HTTPS listener')
    await sleep(20)
  }
  const originOptions: OriginOptions = {
    gatewayEndpoint: `127.0.0.1:${udpPort}`,
    gatewayPublicKey: encodeKey(publicKeyFromPrivate(gatewayKey)),
    gatewayAddress: GATEWAY_ADDRESS,
    tunnels: keys.map((k, i) => ({ privateKey: encodeKey(k), address: peerTunnelAddress(i) })),
    limitMs: timeoutS * 1000,
  }
  const originFile = join(dir, 'origin.json')
  writeFileSync(originFile, JSON.stringify(originOptions))
  const origin = spawn(process.execPath, [join(ROOT, 'bin/run-ts.js'), join(ROOT, 'bench/scale-origin.ts'), originFile], { stdio: ['pipe', 'pipe', 'inherit'] })
  const first = await new Promise<string>((resolve, reject) => {
    createInterface({ input: origin.stdout! }).once('line', resolve)
    origin.once('exit', () => reject(new Error('the origin process exited')))
  })
  const ready = JSON.parse(first) as { event: string, message?: string }
  if (ready.event !== 'ready') throw failure(gateway, `origin: ${ready.message ?? first}`)
  return { gateway, origin, httpsPort, hosts, dir }
}

export async function stopTunnels (s: OriginSetup | undefined): Promise<void> {
  if (s === undefined) return
  s.origin.stdin!.end()
  const killer = setTimeout(() => s.origin.kill('SIGKILL'), 5_000)
  await new Promise(resolve => { if (s.origin.exitCode !== null || s.origin.signalCode !== null) resolve(null); else s.origin.once('exit', resolve) })
  clearTimeout(killer)
  await stopGateway(s.gateway)
}

/** `gatewayEnv` goes to both gateways (the one holding the connections and the one holding none). */
export async function measureConnections (count: number, tunnels: number, timeoutS: number, requests: number, gatewayEnv: Record<string, string> = {}): Promise<ConnectionsRun> {
  const dir = mkdtempSync(join(tmpdir(), 'cc-bench-connections-'))
  const dirNone = mkdtempSync(join(tmpdir(), 'cc-bench-connections-none-'))
  let setup: OriginSetup | undefined
  let setupNone: OriginSetup | undefined
  const held: HttpsConnection[] = []
  const measure: HttpsConnection[] = []
  const measureNone: HttpsConnection[] = []
  const unregister = onExitCleanup(() => {
    for (const s of [setup, setupNone]) {
      s?.gateway.child.kill('SIGKILL')
      s?.origin.kill('SIGKILL')
    }
    rmSync(dir, { recursive: true, force: true })
    rmSync(dirNone, { recursive: true, force: true })
  })
  try {
    setup = await startTunnels(dir, tunnels, timeoutS, gatewayEnv)
    setupNone = await startTunnels(dirNone, tunnels, timeoutS, gatewayEnv)
    const { httpsPort, hosts } = setup
    const pid = setup.gateway.child.pid!
    for (let i = 0; i < MEASURE_CONNECTIONS; i++) measure.push(await HttpsConnection.open(httpsPort, hosts[i % hosts.length]))
    for (let i = 0; i < MEASURE_CONNECTIONS; i++) measureNone.push(await HttpsConnection.open(setupNone.httpsPort, setupNone.hosts[i % hosts.length]))
    await alternating(measure, measureNone, requests) // warm-up: pools, JIT
    await sleep(2_000)
    const control = await alternating(measure, measureNone, requests)
    global.gc?.()
    await sleep(1_000)
    const rssBeforeMB = memoryMB(pid).rss

    const websockets = Math.min(100, Math.floor(count / 100))
    const openStarted = performance.now()
    let opening = true
    // Opening waits while the keeper sends its GETs: on a loaded machine new handshakes would
    // otherwise starve them past the edge's keep-alive timeout.
    let keeping = false
    const keeper = (async () => {
      while (opening) {
        await sleep(1_000)
        const due = [...measure, ...measureNone, ...held].filter(c => !c.isWebSocket && !c.closed && performance.now() - c.lastAnswerAt > KEEP_HELD_MS)
        keeping = due.length > 0
        await inParallel(due, OPEN_PARALLEL, async c => { await c.get().catch(() => {}) })
        keeping = false
      }
    })()
    await inParallel(Array.from({ length: count }, (_, i) => i), OPEN_PARALLEL, async i => {
      while (keeping) await sleep(50)
      const host = hosts[i % hosts.length]
      const c = await HttpsConnection.open(httpsPort, host, clientAddress(i))
      held.push(c)
      const status = i < websockets ? await c.upgrade() : await c.get()
      if (status !== (i < websockets ? 101 : 200)) throw new Error(`held connection ${i}: ${status}`)
    })
    opening = false
    await keeper
    const openS = round2((performance.now() - openStarted) / 1000)
    // Within the edge's keep-alive timeout again, just before measuring.
    const closedBeforeMeasure = held.filter(c => c.closed).length
    if (closedBeforeMeasure > 0) {
      const idle = held.filter(c => c.closed).map(c => c.idleAtClose).sort((a, b) => a - b)
      throw new Error(`${closedBeforeMeasure} held connections were closed while opening the others (idle ms at close: min ${idle[0]}, median ${idle[idle.length >> 1]}, max ${idle.at(-1)})`)
    }
    await inParallel([...measure, ...measureNone, ...held].filter(c => !c.isWebSocket), OPEN_PARALLEL, async c => { await c.get() })
    await sleep(1_000)
    const rssHeldMB = memoryMB(pid).rss
    const rounds = await alternating(measure, measureNone, requests)
    const during = summarize(rounds.a)
    const baseline = summarize(rounds.b)
    const heldAtEnd = held.filter(c => !c.closed).length
    return {
      count,
      tunnels,
      websockets,
      heldAtEnd,
      openS,
      rssBeforeMB: round2(rssBeforeMB),
      rssHeldMB: round2(rssHeldMB),
      rssPerConnectionKB: round2((rssHeldMB - rssBeforeMB) * 1024 / count),
      baseline,
      held: during,
      p99Ratio: round2(during.p99Ms / baseline.p99Ms),
      controlP99Ratio: round2(summarize(control.a).p99Ms / summarize(control.b).p99Ms),
    }
  } finally {
    for (const c of [...held, ...measure, ...measureNone]) c.close()
    await stopTunnels(setup)
    await stopTunnels(setupNone)
    rmSync(dir, { recursive: true, force: true })
    rmSync(dirNone, { recursive: true, force: true })
    unregister()
  }
}
