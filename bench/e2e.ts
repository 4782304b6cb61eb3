/**
 * Through the gateway: HTTPS to a container behind WireGuard, our whole stack against the lab's
 * baseline, same origin, same client, same machine, one run.
 *
 *   ns client                                                  ns origin
 *     cloud-connect start (edge :8443, WireGuard :51820) ==veth==  wireguard-go 10.100.0.x (registered via the API)
 *     Caddy :9443 (tls internal) -> wireguard-go 10.200.0.1 ======  wireguard-go 10.200.0.2
 *     curl, wrk                                                    nginx :80 (tmpfs files; /upload -> HTTP sink)
 *
 * Ours: TLS, reverse proxy, our TCP stack and our WireGuard in one Node process. Baseline: Caddy
 * terminating TLS and proxying over wireguard-go on both ends (Linux TCP). Both are measured with
 * bench/baseline/measure.ts (curl bulk transfers with the sink's SHA-256 checked; wrk for small
 * GETs), then once more per phase with the CPU time of every program involved read around it (CPU
 * per MB and per request: rates on a shared 2-core machine swing with other load, work per unit
 * much less). Access logs are off on both sides (CC_LOG_LEVEL=warn; Caddy logs errors only).
 *
 *   node bin/run-ts.js bench/e2e.ts [--size-mb 100] [--runs 3] [--wrk-seconds 10] [--wrk-connections 8]
 *       [--wrk-rounds 3]  wrk rounds per side, alternating which side goes first; each side's
 *                         small-request figures are the medians of its rounds
 *       [--connections LIST]  also small requests at each of these wrk connection counts (e.g. 8,32,128,512)
 *                         (wrk -t2, --wrk-rounds rounds per side and level, alternating), after the rest;
 *                         the edge's per-client caps are lifted (CC_EDGE_CLIENT_SLOT_SHARE=1,
 *                         CC_EDGE_MAX_CONNECTIONS_PER_CLIENT=2048): wrk is a single client address
 *       [--http1.1]       bulk transfers over HTTP/1.1 on both sides (default: HTTP/2 by ALPN)
 *       [--profile DIR]   also record a CPU profile of `cloud-connect start` (node --cpu-prof),
 *                         summarized per phase of its CPU-cost runs
 *       [--report-interval 5]  seconds between our gateway's reports to control (CC_REPORT_INTERVAL)
 *       [--udp-io auto]   our WireGuard socket (CC_WG_UDP_IO): auto (batched where built), batched
 *                         or dgram (node:dgram), for an A/B of gateway/wireguard/socket.ts
 *   node bin/run-ts.js bench/e2e.ts --help
 *
 * Needs root, wireguard-go, wireguard-tools, nginx, caddy, curl, wrk. Bounded: every transfer and
 * the wrk runs have time limits; the lab is torn down at the end (or on Ctrl-C).
 */
import { mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs'
import { cpus, loadavg } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { runOk, type Lab } from '../test/helpers/lab.ts'
import { ApiClient, connectPeer, createInstance, listenEnv, serviceEnv, signUp, startAllInOne, startOrigin, waitForHttps } from '../test/helpers/lab/e2e.ts'
import { TRANSFER_OPTIONS, withShippedOpensslCaps, isMain, numberOption, round2, transferValues, UsageError, wrkOptions, wrkValues, udpIoOption } from './baseline/cli.ts'
import { measureHttp, measureSmall, medianSmall, type HttpResults, type MeasureOptions, type SmallRequestStats } from './baseline/measure.ts'
import { cpuSeconds, runQueueSeconds } from './baseline/proc.ts'
import type { UdpIoSetting } from '../gateway/wireguard/socket.ts'
import { SMALL_BYTES, caddyfile, labBenchArgs, withBenchLab, wireguardGoPair, writeBenchFiles } from './baseline/lab.ts'

export interface E2eBenchOptions {
  sizeMB: number
  runs: number
  wrkSeconds: number
  wrkConnections: number
  /** wrk rounds per side, alternating which side goes first (medians reported). */
  wrkRounds: number
  /** Directory for a CPU profile of `cloud-connect start`; undefined: no profile. */
  profileDir?: string
  /** curl over HTTP/1.1 on both sides (default: HTTP/2 by ALPN; wrk is always HTTP/1.1). */
  http1: boolean
  /** Our WireGuard socket (CC_WG_UDP_IO): auto (batched where built), batched or dgram. */
  udpIo: UdpIoSetting
  /** Small requests again at each of these connection counts (none: only --wrk-connections). */
  connectionLevels?: number[]
  /** Seconds between the gateway's reports to control (CC_REPORT_INTERVAL; default 5, as shipped). */
  reportIntervalS?: number
}

/** Small requests at one connection count, both sides in alternating rounds (medians). */
export interface ConcurrencyLevel {
  connections: number
  gateway: SmallRequestStats
  caddyWireguardGo: SmallRequestStats
  /** gateway / baseline. */
  ratio: { requestsPerSecond: number, p99: number }
  /** CPU microseconds per request of each program, over that side's rounds at this level. */
  cpuUsPerRequest: { gateway: Record<string, number>, caddyWireguardGo: Record<string, number> }
  loadAverage: number[]
}

export interface ProfileSummary {
  /** Wall time covered and how much of it the main thread was idle (waiting, not computing). */
  wallMs: number
  idleShare: number
  /** Self time by function, largest first (share of the non-idle time). */
  functions: Array<{ name: string, selfMs: number, share: number }>
  /** Self time by source file (node internals grouped as `node:*`), largest first. */
  files: Array<{ file: string, selfMs: number, share: number }>
}

export interface ProfileResults {
  file: string
  /** The CPU-cost runs of the gateway (`cpu`), each summarized over its own time window. */
  phases: { small: ProfileSummary, download: ProfileSummary, upload: ProfileSummary }
}

export type Phase = 'small' | 'download' | 'upload'

export interface PhaseCost {
  wallS: number
  /** CPU seconds per program. */
  cpuS: Record<string, number>
  /** Per unit: CPU milliseconds per MB (bulk) or microseconds per request (small), per program. */
  perUnit: Record<string, number>
  unit: 'ms/MB' | 'us/request'
  /** MB moved, or requests served. */
  amount: number
  /** Seconds per program its threads waited for a CPU while runnable (run queue, all threads summed). */
  runQueueS: Record<string, number>
  /** What the counters moved by in the window, non-zero ones: ours (GET /status), and the origin namespace's UDP drops and TCP counters (both sides). */
  counters?: Record<string, number>
}

export type PhaseCosts = Record<Phase, PhaseCost>

export interface E2eBenchResults {
  bench: 'e2e'
  date: string
  machine: { cpus: number, cpuModel: string, node: string, wireguardGo: string, caddy: string }
  loadAverage: { start: number[], end: number[] }
  bulkBytes: number
  smallBytes: number
  wrk: { connections: number, seconds: number, rounds: number }
  /** What curl negotiated for the bulk transfers. */
  bulkHttp: 'h2' | 'http/1.1'
  /** cloud-connect start: edge + our TCP + our WireGuard. */
  gateway: HttpResults
  /** Caddy (TLS, reverse proxy) over wireguard-go <-> wireguard-go. */
  caddyWireguardGo: HttpResults
  /**
   * CPU cost, from one more run of each measurement per side with the CPU time (user + system, all
   * threads and child processes) of each program read before and after: contention on a shared
   * machine changes rates much more than it changes the work done per byte or per request.
   */
  cpu: { gateway: PhaseCosts, caddyWireguardGo: PhaseCosts }
  /** gateway / baseline: >= 1 is the target for rates, <= 1 for p99. */
  ratio: { download: number, upload: number, requestsPerSecond: number, p99: number }
  profile?: ProfileResults
  concurrency?: ConcurrencyLevel[]
}

/** wrk threads for the connection levels (the issue's `wrk -t2 -c32`): one thread would cap 512. */
const CONCURRENCY_WRK_THREADS = 2

const GATEWAY_HOST = 'bench.cc.test'
const CADDY_HOST = 'caddy.test'
const API_PORT = 8080
const WG_PORT = 51820
const HTTPS_PORT = 8443
const CADDY_PORT = 9443
const METRICS = '127.0.0.1:9091'
/** A measured process with its children and grandchildren (nginx master and workers). */
const WITH_WORKERS = { levels: 2 }
/** Counter families worth seeing per phase (loss, recovery, drops). */
const COUNTERS = ['tcp_retransmits', 'tcp_events', 'tcp_dropped', 'tcp_bursts', 'ip_dropped', 'wg_packets_dropped', 'wg_handshakes_completed']

/** The origin namespace's counters per phase: UDP drops, and TCP's retransmissions and delayed ACKs. */
const ORIGIN_COUNTERS: Array<[string, string[]]> = [
  ['Udp', ['RcvbufErrors', 'InErrors']],
  ['Tcp', ['RetransSegs']],
  ['TcpExt', ['DelayedACKs', 'DelayedACKLocked', 'DelayedACKLost', 'TCPLossProbes']],
]

/** The gateway's counters of COUNTERS as flat `family.reason` numbers (GET /status). */
async function gatewayCounters (lab: Lab, ns: string): Promise<Record<string, number>> {
  const r = await lab.curl(ns, ['-sS', '--fail', '--max-time', '5', `http://${METRICS}/status`], { timeoutMs: 10_000 })
  if (r.code !== 0) throw new Error(`gateway /status: ${r.stderr}`)
  const counters = (JSON.parse(r.stdout) as { counters: Record<string, Record<string, number>> }).counters
  const flat: Record<string, number> = {}
  for (const family of COUNTERS) for (const [reason, v] of Object.entries(counters[family] ?? {})) flat[`${family}.${reason}`] = v
  return flat
}

/**
 * The origin namespace's UDP drops (/proc/net/snmp, per namespace) as `origin.<field>`: the
 * wireguard-go processes there read the tunnel's datagrams, and a full receive buffer drops them;
 * with the origin kernel's TCP retransmissions, loss probes and delayed ACKs (/proc/net/netstat).
 */
async function originCounters (lab: Lab, ns: string): Promise<Record<string, number>> {
  const r = await lab.exec(ns, 'cat', ['/proc/net/snmp', '/proc/net/netstat'], { timeoutMs: 10_000 })
  if (r.code !== 0) throw new Error(`origin /proc/net/snmp: ${r.stderr}`)
  const lines = r.stdout.split('\n')
  const out: Record<string, number> = {}
  for (const [prefix, fields] of ORIGIN_COUNTERS) {
    const [names, values] = lines.filter(line => line.startsWith(`${prefix}:`)).map(line => line.split(/\s+/).slice(1))
    for (const field of fields) {
      const i = names?.indexOf(field) ?? -1
      if (i >= 0) out[`origin.${prefix}${field}`] = Number(values[i])
    }
  }
  return out
}

/** Microseconds on the clock V8 stamps profiles with (CLOCK_MONOTONIC, as process.hrtime). */
function monotonicUs (): number {
  return Number(process.hrtime.bigint() / 1000n)
}

/**
 * Self time per function and per file from a V8 .cpuprofile (node --cpu-prof), counting only the
 * samples taken between `fromUs` and `toUs` (monotonic microseconds).
 */
export function summarizeProfile (path: string, fromUs: number, toUs: number, top = 25): ProfileSummary {
  interface Node { id: number, callFrame: { functionName: string, url: string, lineNumber: number } }
  const profile = JSON.parse(readFileSync(path, 'utf8')) as { nodes: Node[], samples: number[], timeDeltas: number[], startTime: number }
  const byId = new Map(profile.nodes.map(n => [n.id, n]))
  const root = resolve(fileURLToPath(import.meta.url), '../..')
  const fnTime = new Map<string, number>()
  const fileTime = new Map<string, number>()
  let at = profile.startTime
  let idleUs = 0
  let busyUs = 0
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i] ?? 0
    at += delta
    if (at < fromUs || at > toUs) continue
    const frame = byId.get(profile.samples[i])!.callFrame
    if (frame.functionName === '(idle)') { idleUs += delta; continue }
    busyUs += delta
    let file = frame.url.replace(/^file:\/\//, '')
    if (file.startsWith(root)) file = file.slice(root.length + 1)
    else if (file.startsWith('node:')) file = 'node:*'
    else if (file === '') file = `(${frame.functionName || 'native'})`
    const name = `${frame.functionName || '(anonymous)'} ${file}`
    fnTime.set(name, (fnTime.get(name) ?? 0) + delta)
    fileTime.set(file, (fileTime.get(file) ?? 0) + delta)
  }
  const rank = (m: Map<string, number>): Array<[string, number, number]> =>
    [...m].sort((a, b) => b[1] - a[1]).slice(0, top).map(([k, us]) => [k, round2(us / 1000), round2(us / Math.max(1, busyUs))])
  return {
    wallMs: Math.round((toUs - fromUs) / 1000),
    idleShare: round2(idleUs / Math.max(1, idleUs + busyUs)),
    functions: rank(fnTime).map(([name, selfMs, share]) => ({ name, selfMs, share })),
    files: rank(fileTime).map(([file, selfMs, share]) => ({ file, selfMs, share })),
  }
}

/**
 * One more of each measurement against `base` (wrk, one download, one upload), each in a time
 * window of its own (for the profile), with the CPU time of each of `pids` over it.
 */
async function phaseCosts (lab: Lab, ns: string, base: string, curlArgs: string[], o: E2eBenchOptions, bulkFile: string, bulkBytes: number, pids: Record<string, number>,
  counters?: () => Promise<Record<string, number>>): Promise<{ costs: PhaseCosts, windows: Record<Phase, [number, number]> }> {
  const windows = {} as Record<Phase, [number, number]>
  const costs = {} as PhaseCosts
  const timed = async (phase: Phase, cmd: string, args: string[], timeoutS: number): Promise<string> => {
    const countersBefore = await counters?.()
    const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid, WITH_WORKERS)]))
    const queuedBefore = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, runQueueSeconds(pid, WITH_WORKERS)]))
    const from = monotonicUs()
    const r = await lab.exec(ns, cmd, args, { timeoutMs: timeoutS * 1000 })
    const to = monotonicUs()
    windows[phase] = [from, to]
    if (r.code !== 0) throw new Error(`${phase}: ${cmd} exit ${r.code}: ${r.stderr.slice(-500)}`)
    const cpuS = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, round2(cpuSeconds(pid, WITH_WORKERS) - before[k])]))
    let amount = bulkBytes / 1e6
    if (phase === 'small') {
      const m = /(\d+) requests in/.exec(r.stdout)
      if (m === null) throw new Error(`no request count in wrk output: ${r.stdout.slice(-500)}`)
      amount = Number(m[1])
    }
    const scale = phase === 'small' ? 1e6 : 1e3
    costs[phase] = {
      wallS: round2((to - from) / 1e6),
      cpuS,
      perUnit: Object.fromEntries(Object.entries(cpuS).map(([k, v]) => [k, round2(v * scale / amount)])),
      unit: phase === 'small' ? 'us/request' : 'ms/MB',
      amount,
      runQueueS: Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, round2(runQueueSeconds(pid, WITH_WORKERS) - queuedBefore[k])])),
    }
    if (countersBefore !== undefined) {
      const after = await counters!()
      costs[phase].counters = Object.fromEntries(Object.entries(after).map(([k, v]) => [k, v - (countersBefore[k] ?? 0)]).filter(([, v]) => v !== 0))
    }
    return r.stdout
  }
  await timed('small', 'wrk', ['-t', '1', '-c', String(o.wrkConnections), '-d', `${o.wrkSeconds}s`, '--timeout', '5s', `${base}/small.bin`], o.wrkSeconds + 30)
  await timed('download', 'curl', ['-sS', '--fail', '--max-time', '300', ...curlArgs, '-o', '/dev/null', `${base}/bulk.bin`], 320)
  const sink = await timed('upload', 'curl', ['-sS', '--fail', '--max-time', '300', ...curlArgs, '-T', bulkFile, `${base}/upload`], 320)
  if ((JSON.parse(sink) as { bytes: number }).bytes !== bulkBytes) throw new Error(`upload: the sink got ${sink}`)
  return { costs, windows }
}

export async function runE2eBench (o: E2eBenchOptions): Promise<E2eBenchResults> {
  const loadStart = loadavg().map(round2)
  return await withBenchLab('e2e', async (lab, filesDir) => {
    const { bulkFile, bulkBytes } = writeBenchFiles(filesDir, o.sizeMB)
    const dataDir = join(lab.dir, 'data') // removed with the lab
    mkdirSync(dataDir)
    const client = await lab.namespace('client')
    const origin = await lab.namespace('origin')
    const link = await lab.link(client, origin)
    lab.hosts(client, { [GATEWAY_HOST]: '127.0.0.1', [CADDY_HOST]: '127.0.0.1' })

    // Ours: the all-in-one service; the container registers through the API like Erugo does.
    if (o.profileDir !== undefined) mkdirSync(o.profileDir, { recursive: true })
    const svc = await startAllInOne(lab, client, serviceEnv({
      CC_LOG_LEVEL: 'warn',
      CC_DATA_DIR: dataDir,
      CC_BASE_DOMAIN: 'cc.test',
      ...listenEnv(link.a.ip, { api: API_PORT, wg: WG_PORT, https: HTTPS_PORT }),
      CC_EDGE_HOST: '127.0.0.1',
      CC_HTTP_PORT: 'off',
      CC_REPORT_INTERVAL: String(o.reportIntervalS ?? 5),
      CC_METRICS_LISTEN: METRICS,
      CC_WG_UDP_IO: o.udpIo,
      // wrk is one client address standing for many: the per-address fairness caps (a quarter of
      // an instance's 256 slots, 256 connections) would answer 429 and close past 64 in flight.
      ...(o.connectionLevels === undefined ? {} : { CC_EDGE_CLIENT_SLOT_SHARE: '1', CC_EDGE_MAX_CONNECTIONS_PER_CLIENT: '2048' }),
    }), o.profileDir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', o.profileDir])
    const api = new ApiClient(lab, client, svc.api)
    const access = await signUp(api, svc.outbox, 'bench@example.com')
    const inst = await createInstance(api, access, 'bench')
    const peer = await connectPeer(lab, new ApiClient(lab, origin, `http://${link.a.ip}:${API_PORT}`), inst.token, 51820)

    // Baseline: wireguard-go on both ends, Caddy in front on the client side.
    const { clientWg, originWg } = await wireguardGoPair(lab, client, origin, link, { clientAddress: '10.200.0.1', originAddress: '10.200.0.2', clientPort: 51821, originPort: 51822 })
    const originServers = await startOrigin(lab, origin, filesDir)
    const caddy = await lab.startCaddy(client, caddyfile(`https://${CADDY_HOST}:${CADDY_PORT}`, `  reverse_proxy ${originWg.tunnelIp}:80`), [CADDY_PORT])

    await waitForHttps(lab, client, GATEWAY_HOST, HTTPS_PORT, '/small.bin', svc.ca)
    const measure: MeasureOptions = { bulkFile, bulkBytes, runs: o.runs, wrkSeconds: o.wrkSeconds, wrkConnections: o.wrkConnections, transferTimeoutS: 300 }
    const targets = (base: string): { download: string, upload: string, small: string } => ({ download: `${base}/bulk.bin`, upload: `${base}/upload`, small: `${base}/small.bin` })
    const http = o.http1 ? ['--http1.1'] : []
    const gatewayBase = `https://${GATEWAY_HOST}:${HTTPS_PORT}`
    const caddyBase = `https://${CADDY_HOST}:${CADDY_PORT}`
    const gatewayCurl = [...http, '--cacert', svc.ca]
    const caddyCurl = [...http, '-k']
    const gateway = await measureHttp(lab, client, targets(gatewayBase), { ...measure, curlArgs: gatewayCurl })
    const caddyWireguardGo = await measureHttp(lab, client, targets(caddyBase), { ...measure, curlArgs: caddyCurl })
    // More wrk rounds, alternating which side goes first (the first round was ours, then theirs):
    // a slow spell of this shared VM then falls on both sides alike. Each side reports the
    // medians of its rounds, and the rounds themselves.
    const ourRounds = [gateway.small]
    const theirRounds = [caddyWireguardGo.small]
    for (let round = 2; round <= o.wrkRounds; round++) {
      const ours = async (): Promise<void> => { ourRounds.push(await measureSmall(lab, client, targets(gatewayBase).small, measure)) }
      const theirs = async (): Promise<void> => { theirRounds.push(await measureSmall(lab, client, targets(caddyBase).small, measure)) }
      if (round % 2 === 0) { await theirs(); await ours() } else { await ours(); await theirs() }
    }
    gateway.small = medianSmall(ourRounds)
    caddyWireguardGo.small = medianSmall(theirRounds)
    const concurrency: ConcurrencyLevel[] = []
    // CPU per request of each side's programs in its rounds: on a shared machine the rates follow
    // each process's share of the cores, the work per request much less.
    const ourPids = { cloudConnect: svc.process.pid, originWireguardGo: peer.wg.process.pid, nginx: originServers.nginx.pid }
    const theirPids = { caddy: caddy.process.pid, clientWireguardGo: clientWg.process.pid, originWireguardGo: originWg.process.pid, nginx: originServers.nginx.pid }
    for (const connections of o.connectionLevels ?? []) {
      const level = { ...measure, wrkConnections: connections, wrkThreads: CONCURRENCY_WRK_THREADS }
      const ours: SmallRequestStats[] = []
      const theirs: SmallRequestStats[] = []
      const ourCpu: Record<string, number> = {}
      const theirCpu: Record<string, number> = {}
      const measured = async (url: string, rounds: SmallRequestStats[], pids: Record<string, number>, cpu: Record<string, number>): Promise<void> => {
        const before = Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid, WITH_WORKERS)]))
        const r = await measureSmall(lab, client, url, level)
        rounds.push(r)
        for (const [k, pid] of Object.entries(pids)) cpu[k] = (cpu[k] ?? 0) + cpuSeconds(pid, WITH_WORKERS) - before[k]
        cpu.requests = (cpu.requests ?? 0) + r.requestsPerSecond * r.seconds
      }
      for (let round = 1; round <= o.wrkRounds; round++) {
        const sides = [
          async (): Promise<void> => { await measured(targets(gatewayBase).small, ours, ourPids, ourCpu) },
          async (): Promise<void> => { await measured(targets(caddyBase).small, theirs, theirPids, theirCpu) },
        ]
        if (round % 2 === 0) sides.reverse()
        for (const side of sides) await side()
      }
      const perRequest = (cpu: Record<string, number>): Record<string, number> =>
        Object.fromEntries(Object.entries(cpu).filter(([k]) => k !== 'requests').map(([k, v]) => [k, round2(v * 1e6 / Math.max(1, cpu.requests))]))
      const g = medianSmall(ours)
      const b = medianSmall(theirs)
      concurrency.push({
        connections,
        gateway: g,
        caddyWireguardGo: b,
        ratio: { requestsPerSecond: round2(g.requestsPerSecond / b.requestsPerSecond), p99: round2(g.latencyMs.p99 / b.latencyMs.p99) },
        cpuUsPerRequest: { gateway: perRequest(ourCpu), caddyWireguardGo: perRequest(theirCpu) },
        loadAverage: loadavg().map(round2),
      })
      process.stderr.write(`connections ${connections}: gateway ${g.requestsPerSecond}/s p99 ${g.latencyMs.p99} ms ${JSON.stringify(perRequest(ourCpu))} us/request, ` +
        `baseline ${b.requestsPerSecond}/s p99 ${b.latencyMs.p99} ms ${JSON.stringify(perRequest(theirCpu))} us/request, load ${loadavg()[0].toFixed(1)}\n`)
    }
    const nginx = originServers.nginx.pid
    const theirs = await phaseCosts(lab, client, caddyBase, caddyCurl, o, bulkFile, bulkBytes,
      { caddy: caddy.process.pid, clientWireguardGo: clientWg.process.pid, originWireguardGo: originWg.process.pid, nginx }, async () => await originCounters(lab, origin))
    const ours = await phaseCosts(lab, client, gatewayBase, gatewayCurl, o, bulkFile, bulkBytes,
      { cloudConnect: svc.process.pid, originWireguardGo: peer.wg.process.pid, nginx },
      async () => ({ ...await gatewayCounters(lab, client), ...await originCounters(lab, origin) }))

    let profile: ProfileResults | undefined
    if (o.profileDir !== undefined) {
      const windows = ours.windows
      await svc.process.stop(15_000) // profiles are written at exit; the main thread's is the largest
      const file = readdirSync(o.profileDir).filter(f => f.endsWith('.cpuprofile')).map(f => join(o.profileDir!, f))
        .sort((a, b) => statSync(b).size - statSync(a).size)[0]
      if (file !== undefined) {
        const phase = (w: [number, number]): ProfileSummary => summarizeProfile(file, w[0], w[1])
        profile = { file, phases: { small: phase(windows.small), download: phase(windows.download), upload: phase(windows.upload) } }
      }
    }
    const [wgVersion, caddyVersion] = await Promise.all([runOk('wireguard-go', ['--version']), runOk('caddy', ['version'])])
    return {
      bench: 'e2e',
      date: new Date().toISOString(),
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', node: process.version, wireguardGo: wgVersion.split('\n')[0].trim(), caddy: caddyVersion.split(' ')[0].trim() },
      loadAverage: { start: loadStart, end: loadavg().map(round2) },
      bulkBytes,
      smallBytes: SMALL_BYTES,
      wrk: { connections: o.wrkConnections, seconds: o.wrkSeconds, rounds: o.wrkRounds },
      bulkHttp: o.http1 ? 'http/1.1' : 'h2',
      gateway,
      caddyWireguardGo,
      cpu: { gateway: ours.costs, caddyWireguardGo: theirs.costs },
      ratio: {
        download: round2(gateway.download.medianMBps / caddyWireguardGo.download.medianMBps),
        upload: round2(gateway.upload.medianMBps / caddyWireguardGo.upload.medianMBps),
        requestsPerSecond: round2(gateway.small.requestsPerSecond / caddyWireguardGo.small.requestsPerSecond),
        p99: round2(gateway.small.latencyMs.p99 / caddyWireguardGo.small.latencyMs.p99),
      },
      ...(profile !== undefined ? { profile } : {}),
      ...(concurrency.length > 0 ? { concurrency } : {}),
    }
  })
}

const SPEC = {
  name: 'bench/e2e.ts',
  about: `Through the gateway: HTTPS to a container behind WireGuard, our whole stack (\`cloud-connect start\`:
edge, our TCP, our WireGuard) against Caddy over wireguard-go on both ends, same origin, client and
machine, one run. Bulk download and upload (curl, SHA-256 checked), small requests (wrk), and CPU
time per MB and per request of every program involved. JSON on stdout, about 3-4 minutes.

Needs root (network namespaces), wireguard-go, wireguard-tools, nginx, caddy, curl, wrk. The lab is
torn down at the end, also on Ctrl-C.`,
  options: {
    ...TRANSFER_OPTIONS,
    ...wrkOptions(8),
    'wrk-rounds': { type: 'string', default: '3', value: 'N', help: 'wrk rounds per side, 1-10, alternating which side goes first; the medians are reported' },
    'http1.1': { type: 'boolean', default: false, help: 'bulk transfers over HTTP/1.1 on both sides (default: HTTP/2 by ALPN)' },
    profile: { type: 'string', value: 'DIR', help: 'also record a CPU profile of `cloud-connect start` (node --cpu-prof) in DIR, summarized per phase (default: none)' },
    'udp-io': { type: 'string', default: 'auto', value: 'IO', help: 'our WireGuard socket: auto (batched where built), batched or dgram (node:dgram)' },
    connections: { type: 'string', value: 'LIST', help: 'also small requests at each of these wrk connection counts (wrk -t2), 1-1000 each, at most 6 (default: none)' },
    'report-interval': { type: 'string', default: '5', value: 'S', help: 'seconds between our gateway\'s reports to control (CC_REPORT_INTERVAL), 1-3600; a report carries the access log' },
  },
} as const

function connectionLevels (list: string): number[] {
  const levels = list.split(',').map(c => numberOption('connections', c, 1, 1000))
  if (levels.length > 6) throw new UsageError('--connections takes at most 6 values')
  return levels
}

if (isMain(import.meta.url)) {
  const options = labBenchArgs(SPEC, (values): E2eBenchOptions => ({
    ...transferValues(values),
    ...wrkValues(values),
    wrkRounds: numberOption('wrk-rounds', values['wrk-rounds'] as string | undefined, 1, 10),
    profileDir: values.profile === undefined ? undefined : resolve(values.profile),
    http1: values['http1.1'],
    udpIo: udpIoOption(values['udp-io']),
    ...(values.connections === undefined ? {} : { connectionLevels: connectionLevels(values.connections) }),
    reportIntervalS: numberOption('report-interval', values['report-interval'] as string | undefined, 1, 3600),
  }))
  const opensslCaps = withShippedOpensslCaps()
  const results = await runE2eBench(options)
  process.stdout.write(JSON.stringify({ ...results, opensslCaps, udpIo: options.udpIo, reportIntervalS: options.reportIntervalS }, null, 2) + '\n')
}
