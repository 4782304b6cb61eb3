/**
 * How the gateway's cost grows with the work it holds, on loopback only: `cloud-connect gateway
 * --config FILE` started with N peers, and measured from outside (/proc, the data directory, TLS).
 *
 *   routed hostnames  N peers with one hostname each, certificates from the local CA: seconds until
 *                     the HTTPS listener accepts, until the first HTTPS answer for the last hostname
 *                     (the edge's own 404 for an unrouted Host over a connection whose SNI is the
 *                     routed name: TLS with that name's certificate, no upstream involved), until
 *                     the process is idle again (issuance done); CPU seconds spent; RSS once idle;
 *                     size of the data directory
 *   idle peers        N peers without hostnames (same edge, no routes): RSS once idle
 *   restart           N peers driven by bench/wg-peers.ts (real handshakes, ICMP echo through the
 *                     tunnel), then SIGKILL and start again: seconds until every peer passes again
 *                     (bench/scale-restart.ts)
 *   connections       N HTTPS keep-alive connections (1 % WebSockets) held over --tunnels tunnels
 *                     to bench/scale-origin.ts: RSS per connection, small-request p50/p99 with and
 *                     without them (bench/scale-connections.ts)
 *
 * Per-item figures are against N = 0 of the same curve; "net of peers" subtracts the idle-peer
 * curve's RSS at the same N, leaving what a hostname and its certificate cost.
 *
 *   node bin/run-ts.js bench/scale.ts [--counts 1,100,1000,10000] [--curves hostnames,peers,restart,connections,storm]
 *                                    [--names custom|wildcard] [--tunnels 100] [--requests 2000] [--timeout-s 900]
 *                                    [--storm-rates 1000,5000,20000] [--storm-s 5] [--carry-rate 2000] [--payload 512]
 *                                    [--gateway-env 'K=V K=V'] [--settle-s 0]
 *
 * Bounded: every gateway run has a time limit, and each is stopped (SIGTERM, then SIGKILL) and its
 * directory removed before the next; Ctrl-C stops the running one.
 */
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, loadavg, tmpdir, totalmem } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { onExitCleanup } from '../test/helpers/lab.ts'
import { exitOnBrokenPipe, isMain, numberOption, parseBenchArgs, round2, UsageError } from './baseline/cli.ts'
import { generatePrivateKey, encodeKey } from '../proto/noise/index.ts'
import { measureRestart, type RestartRun } from './scale-restart.ts'
import { measureConnections, type ConnectionsRun } from './scale-connections.ts'
import { measureStorm, type StormOptions, type StormRun } from './scale-storm.ts'
import { accepts, diskUsage, exited, failure, freePort, httpsAnswers, memoryMB, parseEnvList, startGateway, stopGateway, type Gateway } from './scale-gateway.ts'
import { cpuSeconds } from './baseline/proc.ts'

const BASE = 'scale.test'
/** Idle: less than this much CPU (share of one core) for IDLE_SECONDS in a row. */
const IDLE_CPU_SHARE = 0.03
const IDLE_SECONDS = 3

export type Curve = 'hostnames' | 'peers' | 'restart' | 'connections' | 'storm'
const CURVES: readonly Curve[] = ['hostnames', 'peers', 'restart', 'connections', 'storm']
/** File descriptors the bench process needs besides the held connections. */
const SPARE_FDS = 500
/** custom: every hostname its own certificate; wildcard: hostnames under a configured `*.<base>`. */
export type NameMode = 'custom' | 'wildcard'

export interface ScaleBenchOptions {
  counts: number[]
  curves: Curve[]
  names: NameMode
  timeoutS: number
  contextCache?: number
  /** Tunnels the connections curve spreads its connections over. */
  tunnels?: number
  /** Small requests per latency measurement of the connections curve. */
  requests?: number
  /** The storm curve's rates, phase length and the peers' own traffic. */
  storm?: Omit<StormOptions, 'timeoutS'>
  /** Added to every gateway's environment (an allocator: LD_PRELOAD, MALLOC_*), not to the bench's. */
  gatewayEnv?: Record<string, string>
  /**
   * Seconds to wait after the gateway is idle before RSS is read (hostnames and peers curves). V8
   * gives back the start-up's peak some 10-15 s after start (its memory reducer): at 0 the reading
   * is that peak or not, depending on how long the start took.
   */
  settleS?: number
}

export interface ScaleRun {
  curve: Curve
  count: number
  /** Spawn -> the HTTPS port accepts a TCP connection. */
  listeningS: number
  /** Spawn -> first HTTPS answer for the last hostname (null for the peers curve). */
  firstAnswerS: number | null
  /** Spawn -> the process is idle again. */
  idleS: number
  cpuS: number
  rssMB: number
  peakRssMB: number
  diskMB: number
  certificates: number
}

export interface ScaleResults {
  date: string
  machine: { cpus: number, model: string, memoryGB: number, loadStart: number[], loadEnd: number[] }
  names: NameMode
  gatewayEnv: Record<string, string>
  runs: ScaleRun[]
  /** Per item against N = 0 of the same curve, for N >= 100. */
  perItem: Array<{ curve: Curve, count: number, rssKB: number, rssNetOfPeersKB: number | null, diskKB: number }>
  restart: RestartRun[]
  connections: ConnectionsRun[]
  storm: StormRun[]
  /** Levels not measured, and why. */
  skipped: Array<{ curve: Curve, count: number, reason: string }>
}

function hostnameOf (i: number, names: NameMode): string {
  return names === 'wildcard' ? `h${i}.${BASE}` : `h${i}.custom${i}.test`
}

/** Peer i's allowed /32, outside the gateway's 10.100.0.1. */
function peerAddress (i: number): string {
  const n = (10 << 24) + (64 << 16) + i + 1
  return `${n >>> 24}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`
}

function writeConfig (dir: string, curve: Curve, count: number, o: ScaleBenchOptions, httpsPort: number): string {
  const peers = []
  for (let i = 0; i < count; i++) {
    // Any 32 bytes serve as a peer's public key here: no peer ever connects.
    const peer: Record<string, unknown> = { publicKey: randomBytes(32).toString('base64'), allowedIPs: [`${peerAddress(i)}/32`], name: `p${i}` }
    if (curve === 'hostnames') peer.hostnames = [hostnameOf(i, o.names)]
    peers.push(peer)
  }
  const edge: Record<string, unknown> = {
    dataDir: join(dir, 'data'),
    httpsListen: `127.0.0.1:${httpsPort}`,
    httpListen: null,
    wildcards: o.names === 'wildcard' ? [`*.${BASE}`] : [],
  }
  if (o.contextCache !== undefined) edge.limits = { tlsContextCache: o.contextCache }
  const config = { privateKey: encodeKey(generatePrivateKey()), listenPort: 0, listenAddress: '127.0.0.1', address: '10.100.0.1', peers, edge }
  const file = join(dir, 'gateway.json')
  writeFileSync(file, JSON.stringify(config))
  return file
}

async function measureRun (curve: Curve, count: number, o: ScaleBenchOptions): Promise<ScaleRun> {
  const dir = mkdtempSync(join(tmpdir(), 'cc-bench-scale-'))
  let g: Gateway | undefined
  const unregister = onExitCleanup(() => {
    g?.child.kill('SIGKILL')
    rmSync(dir, { recursive: true, force: true })
  })
  try {
    const httpsPort = await freePort()
    const configFile = writeConfig(dir, curve, count, o, httpsPort)
    const started = performance.now()
    g = startGateway(dir, configFile, httpsPort, o.gatewayEnv)
    const pid = g.child.pid!
    const deadline = started + o.timeoutS * 1000
    const elapsed = (): number => round2((performance.now() - started) / 1000)
    const check = (what: string): void => {
      if (exited(g!)) throw failure(g!, `gateway exited while waiting for ${what}`)
      if (performance.now() > deadline) throw failure(g!, `no ${what} within ${o.timeoutS} s`)
    }

    while (!await accepts(httpsPort)) { check('HTTPS listener'); await sleep(20) }
    const listeningS = elapsed()
    let firstAnswerS: number | null = null
    if (curve === 'hostnames' && count > 0) {
      const last = hostnameOf(count - 1, o.names)
      while (!await httpsAnswers(httpsPort, last)) { check(`HTTPS answer for ${last}`); await sleep(20) }
      firstAnswerS = elapsed()
    }

    let quiet = 0
    let previous = cpuSeconds(pid)
    while (quiet < IDLE_SECONDS) {
      check('idle process')
      await sleep(1_000)
      const now = cpuSeconds(pid)
      quiet = now - previous < IDLE_CPU_SHARE ? quiet + 1 : 0
      previous = now
    }
    const idleS = round2(elapsed() - IDLE_SECONDS)
    for (const settleUntil = performance.now() + (o.settleS ?? 0) * 1000; performance.now() < settleUntil;) {
      check('settled process')
      await sleep(Math.min(1_000, settleUntil - performance.now()))
    }
    const memory = memoryMB(pid)
    const disk = diskUsage(join(dir, 'data'))
    return {
      curve,
      count,
      listeningS,
      firstAnswerS,
      idleS,
      cpuS: round2(previous),
      rssMB: round2(memory.rss),
      peakRssMB: round2(memory.peak),
      diskMB: round2(disk.bytes / 1e6),
      certificates: disk.certificates,
    }
  } finally {
    if (g !== undefined) await stopGateway(g)
    rmSync(dir, { recursive: true, force: true })
    unregister()
  }
}

export async function runScaleBench (o: ScaleBenchOptions): Promise<ScaleResults> {
  const loadStart = loadavg().map(round2)
  const runs: ScaleRun[] = []
  const restart: RestartRun[] = []
  const connections: ConnectionsRun[] = []
  const storm: StormRun[] = []
  const skipped: ScaleResults['skipped'] = []
  const counts = [0, ...o.counts.filter(n => n > 0)]
  for (const curve of o.curves) {
    for (const count of curve === 'restart' || curve === 'connections' || curve === 'storm' ? counts.filter(n => n > 0) : counts) {
      process.stderr.write(`${curve}: ${count}\n`)
      if (curve === 'storm') {
        storm.push(...await measureStorm(count, { ...DEFAULT_STORM, ...o.storm, timeoutS: o.timeoutS, gatewayEnv: o.gatewayEnv }))
      } else if (curve === 'restart') {
        restart.push(await measureRestart(count, o.timeoutS, o.gatewayEnv))
        process.stderr.write(`  ${JSON.stringify(restart.at(-1))}\n`)
      } else if (curve === 'connections') {
        const fds = openFilesLimit()
        if (count + SPARE_FDS > fds) {
          const reason = `needs ${count + SPARE_FDS} file descriptors, ulimit -n is ${fds} (raise it with ulimit -n before the run)`
          process.stderr.write(`  skipped: ${reason}\n`)
          skipped.push({ curve, count, reason })
          continue
        }
        connections.push(await measureConnections(count, Math.min(o.tunnels ?? 100, count), o.timeoutS, o.requests ?? 2000, o.gatewayEnv))
        process.stderr.write(`  ${JSON.stringify(connections.at(-1))}\n`)
      } else {
        runs.push(await measureRun(curve, count, o))
      }
    }
  }
  const find = (curve: Curve, count: number): ScaleRun | undefined => runs.find(r => r.curve === curve && r.count === count)
  const perItem = runs.filter(r => r.count >= 100).map(r => {
    const zero = find(r.curve, 0)!
    const peers = r.curve === 'hostnames' ? find('peers', r.count) : undefined
    return {
      curve: r.curve,
      count: r.count,
      rssKB: round2((r.rssMB - zero.rssMB) * 1024 / r.count),
      rssNetOfPeersKB: peers === undefined ? null : round2((r.rssMB - peers.rssMB) * 1024 / r.count),
      diskKB: round2((r.diskMB - zero.diskMB) * 1e3 / r.count),
    }
  })
  return {
    date: new Date().toISOString(),
    machine: { cpus: cpus().length, model: cpus()[0]?.model ?? 'unknown', memoryGB: round2(totalmem() / 2 ** 30), loadStart, loadEnd: loadavg().map(round2) },
    names: o.names,
    gatewayEnv: o.gatewayEnv ?? {},
    runs,
    perItem,
    restart,
    connections,
    storm,
    skipped,
  }
}

const DEFAULT_STORM: Omit<StormOptions, 'timeoutS'> = { rates: [1_000, 5_000, 20_000], phaseS: 5, carryRate: 2_000, payload: 512 }

/** The soft limit on open files of this process (/proc/self/limits). */
function openFilesLimit (): number {
  const line = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1]
  return line === undefined || line === 'unlimited' ? Infinity : Number(line)
}

/** The short table for a terminal (and bench/RESULTS.md). */
export function scaleTable (r: ScaleResults): string {
  const lines = r.runs.length === 0 ? [] : [
    '| curve | N | listening s | first answer s | idle s | CPU s | RSS MB | RSS/item KB | net of peers KB | disk MB | disk/item KB | certificates |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for (const run of r.runs) {
    const per = r.perItem.find(p => p.curve === run.curve && p.count === run.count)
    lines.push(`| ${run.curve} | ${run.count} | ${run.listeningS} | ${run.firstAnswerS ?? '-'} | ${run.idleS} | ${run.cpuS} | ${run.rssMB} | ` +
      `${per?.rssKB ?? '-'} | ${per?.rssNetOfPeersKB ?? '-'} | ${run.diskMB} | ${per?.diskKB ?? '-'} | ${run.certificates} |`)
  }
  if (r.restart.length > 0) {
    lines.push('', '| restart N | first up s | RSS up MB | listening s | first s | p50 s | p99 s | all s | passed | initiations | cookie replies | responses | gateway CPU s | peers CPU s |', '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for (const x of r.restart) {
      lines.push(`| ${x.count} | ${x.firstUpMs === null ? '-' : round2(x.firstUpMs / 1000)} | ${x.rssUpMB} | ${x.restartListeningS ?? '-'} | ${x.restartFirstS ?? '-'} | ` +
        `${x.restartP50S ?? '-'} | ${x.restartP99S ?? '-'} | ${x.restartAllS ?? '-'} | ${x.passed} | ${x.initiations} | ${x.cookieReplies} | ${x.responses} | ${x.restartCpuS} | ${x.peersCpuS} |`)
    }
  }
  if (r.connections.length > 0) {
    lines.push('', '| connections N | tunnels | WebSockets | held at end | open s | RSS before MB | RSS held MB | KB/conn | p50 / p99 ms none | p50 / p99 ms held | p99 ratio | control p99 ratio |', '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for (const x of r.connections) {
      lines.push(`| ${x.count} | ${x.tunnels} | ${x.websockets} | ${x.heldAtEnd} | ${x.openS} | ${x.rssBeforeMB} | ${x.rssHeldMB} | ${x.rssPerConnectionKB} | ` +
        `${x.baseline.p50Ms} / ${x.baseline.p99Ms} | ${x.held.p50Ms} / ${x.held.p99Ms} | ${x.p99Ratio} | ${x.controlP99Ratio} |`)
    }
  }
  if (r.storm.length > 0) {
    lines.push('', '| storm N | rate /s | sent /s | handled /s | cookie replies /s | unknown-key DH /s | bad MAC1 /s | rate-limited /s | unhandled | socket drops | echoes /s before / during | answered before / during | p99 ms before / during | gateway CPU before / during | carry ratio |',
      '|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
    for (const x of r.storm) {
      lines.push(`| ${x.count} | ${x.rate} | ${x.stormSentPerS} | ${x.handledPerS} | ${x.cookieRepliesPerS} | ${x.unknownPeerPerS} | ${x.badMac1PerS} | ${x.rateLimitedPerS} | ${x.unhandled} | ` +
        `${x.during.socketDrops} | ${x.before.repliesPerS} / ${x.during.repliesPerS} | ${x.before.answered} / ${x.during.answered} | ${x.before.p99Ms ?? '-'} / ${x.during.p99Ms ?? '-'} | ` +
        `${x.before.gatewayCpu} / ${x.during.gatewayCpu} | ${x.carryRatio} |`)
    }
    const again = r.storm.filter(x => x.rehandshake !== null)
    if (again.length > 0) {
      lines.push('', '| storm N | rate /s | storm sent /s | every peer again: passed quiet / storm | p50 s | all s | initiations | cookie replies | socket drops |', '|---:|---:|---:|---:|---:|---:|---:|---:|---:|')
      for (const x of again) {
        const { quiet, storm, stormSentPerS } = x.rehandshake!
        lines.push(`| ${x.count} | ${x.rate} | ${stormSentPerS} | ${quiet.passed} / ${storm.passed} | ${quiet.p50S ?? '-'} / ${storm.p50S ?? '-'} | ${quiet.allS ?? '-'} / ${storm.allS ?? '-'} | ` +
          `${quiet.initiations} / ${storm.initiations} | ${quiet.cookieReplies} / ${storm.cookieReplies} | ${quiet.socketDrops} / ${storm.socketDrops} |`)
      }
    }
  }
  for (const x of r.skipped) lines.push(`skipped ${x.curve} ${x.count}: ${x.reason}`)
  return lines.join('\n') + '\n'
}

const SPEC = {
  name: 'bench/scale.ts',
  about: `Routed hostnames and idle peers at growing counts, one gateway process per point
(cloud-connect gateway --config FILE on loopback, certificates from the local CA, no traffic):
start-up to the first HTTPS answer, CPU, RSS and data-directory size, per item against N = 0.
restart: N WireGuard peers (bench/wg-peers.ts), SIGKILL and start: time until all pass again.
connections: N held HTTPS keep-alive connections over --tunnels tunnels: RSS per connection,
small-request p50/p99 with and without them.
storm: N peers carrying echoes while initiations (unknown keys, known keys with a bad MAC1)
arrive at --storm-rates: cookie replies, rejections, drops, the peers' echo rate during/before.
JSON on stdout, a table on stderr. Needs nothing but this machine.`,
  options: {
    counts: { type: 'string', default: '1,100,1000,10000', value: 'N,N', help: 'peer counts, each 1-20000, at most 6' },
    curves: { type: 'string', default: 'hostnames,peers', value: 'LIST', help: 'any of hostnames, peers, restart, connections' },
    names: { type: 'string', default: 'custom', value: 'MODE', help: 'custom (a certificate per hostname) or wildcard (hostnames under a configured *.scale.test)' },
    'context-cache': { type: 'string', value: 'N', help: 'edge.limits.tlsContextCache for the gateway (default: its own default)' },
    tunnels: { type: 'string', default: '100', value: 'N', help: 'tunnels the connections curve uses, 1-1000' },
    requests: { type: 'string', default: '2000', value: 'N', help: 'small requests per latency measurement, 100-100000' },
    'timeout-s': { type: 'string', default: '900', value: 'S', help: 'limit for one gateway run, 10-3600' },
    'settle-s': { type: 'string', default: '0', value: 'S', help: 'hostnames and peers: seconds to wait once the gateway is idle before RSS is read (V8 returns the start-up peak 10-15 s after start), 0-120' },
    'storm-rates': { type: 'string', default: '1000,5000,20000', value: 'R,R', help: 'storm initiations per second, each 1-200000, at most 6' },
    'storm-s': { type: 'string', default: '5', value: 'S', help: 'seconds of each phase (peers alone, then with the storm), 1-60' },
    'carry-rate': { type: 'string', default: '2000', value: 'R', help: 'echoes per second the storm curve\'s peers send in all, 1-100000' },
    payload: { type: 'string', default: '512', value: 'B', help: 'payload bytes of each carried echo, 8-1200' },
    'gateway-env': { type: 'string', value: "'K=V K=V'", help: 'added to the environment of the gateways the bench starts (not its own), pairs separated by spaces: an allocator, e.g. LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2 MALLOC_CONF=background_thread:true' },
  },
} as const

if (isMain(import.meta.url)) {
  exitOnBrokenPipe()
  const options = parseBenchArgs(SPEC, (values): ScaleBenchOptions => {
    const counts = values.counts.split(',').map(c => numberOption('counts', c, 1, 20_000))
    if (counts.length > 6) throw new UsageError('--counts takes at most 6 values')
    const curves = values.curves.split(',')
    if (curves.length === 0 || curves.some(c => !(CURVES as readonly string[]).includes(c))) throw new UsageError(`--curves takes ${CURVES.join(', ')}`)
    const stormRates = values['storm-rates'].split(',').map(r => numberOption('storm-rates', r, 1, 200_000))
    if (stormRates.length > 6) throw new UsageError('--storm-rates takes at most 6 values')
    if (values.names !== 'custom' && values.names !== 'wildcard') throw new UsageError('--names must be custom or wildcard')
    let gatewayEnv: Record<string, string> = {}
    try { gatewayEnv = parseEnvList(values['gateway-env'] ?? '') } catch (err) { throw new UsageError(`--gateway-env: ${(err as Error).message}`) }
    return {
      counts,
      curves: [...new Set(curves)] as Curve[],
      names: values.names,
      timeoutS: numberOption('timeout-s', values['timeout-s'], 10, 3600),
      settleS: numberOption('settle-s', values['settle-s'], 0, 120),
      tunnels: numberOption('tunnels', values.tunnels, 1, 1000),
      requests: numberOption('requests', values.requests, 100, 100_000),
      storm: {
        rates: stormRates,
        phaseS: numberOption('storm-s', values['storm-s'], 1, 60),
        carryRate: numberOption('carry-rate', values['carry-rate'], 1, 100_000),
        payload: numberOption('payload', values.payload, 8, 1200),
      },
      gatewayEnv,
      ...(values['context-cache'] === undefined ? {} : { contextCache: numberOption('context-cache', values['context-cache'], 1, 1_000_000) }),
    }
  })
  const results = await runScaleBench(options)
  process.stderr.write(scaleTable(results))
  process.stdout.write(JSON.stringify(results, null, 2) + '\n')
}
