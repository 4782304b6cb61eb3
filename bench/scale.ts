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
 *
 * Per-item figures are against N = 0 of the same curve; "net of peers" subtracts the idle-peer
 * curve's RSS at the same N, leaving what a hostname and its certificate cost.
 *
 *   node bin/run-ts.js bench/scale.ts [--counts 1,100,1000,10000] [--curves hostnames,peers]
 *                                    [--names custom|wildcard] [--timeout-s 900]
 *
 * Bounded: every gateway run has a time limit, and each is stopped (SIGTERM, then SIGKILL) and its
 * directory removed before the next; Ctrl-C stops the running one.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, readdirSync, lstatSync, rmSync, writeFileSync } from 'node:fs'
import net from 'node:net'
import tls from 'node:tls'
import { cpus, loadavg, tmpdir, totalmem } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { onExitCleanup } from '../test/helpers/lab.ts'
import { exitOnBrokenPipe, isMain, numberOption, parseBenchArgs, round2, UsageError } from './baseline/cli.ts'
import { generatePrivateKey, encodeKey } from '../proto/noise/index.ts'

const ROOT = resolve(fileURLToPath(import.meta.url), '../..')
const CLI = join(ROOT, 'bin/cloud-connect.js')
const BASE = 'scale.test'
const CLOCK_TICKS = 100
/** Idle: less than this much CPU (share of one core) for IDLE_SECONDS in a row. */
const IDLE_CPU_SHARE = 0.03
const IDLE_SECONDS = 3

export type Curve = 'hostnames' | 'peers'
/** custom: every hostname its own certificate; wildcard: hostnames under a configured `*.<base>`. */
export type NameMode = 'custom' | 'wildcard'

export interface ScaleBenchOptions { counts: number[], curves: Curve[], names: NameMode, timeoutS: number, contextCache?: number }

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
  runs: ScaleRun[]
  /** Per item against N = 0 of the same curve, for N >= 100. */
  perItem: Array<{ curve: Curve, count: number, rssKB: number, rssNetOfPeersKB: number | null, diskKB: number }>
}

interface Gateway { child: ChildProcess, dir: string, httpsPort: number, output: string[] }

async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })
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

function startGateway (dir: string, configFile: string, httpsPort: number): Gateway {
  const child = spawn(process.execPath, [CLI, 'gateway', '--config', configFile, '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'], cwd: dir })
  const output: string[] = []
  const keep = (chunk: Buffer): void => {
    output.push(chunk.toString())
    if (output.length > 50) output.shift()
  }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  return { child, dir, httpsPort, output }
}

async function stopGateway (g: Gateway): Promise<void> {
  if (g.child.exitCode === null && g.child.signalCode === null) {
    const exited = new Promise(resolve => g.child.once('exit', resolve))
    g.child.kill('SIGTERM')
    const killer = setTimeout(() => g.child.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(killer)
  }
}

/** utime + stime of `pid` in seconds. */
function cpuSeconds (pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS
}

function memoryMB (pid: number): { rss: number, peak: number } {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (field: string): number => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN)
  return { rss: kb('VmRSS') / 1024, peak: kb('VmHWM') / 1024 }
}

/** Bytes the directory takes on disk (allocated blocks) and how many certificates it holds. */
function diskUsage (dir: string): { bytes: number, certificates: number } {
  let bytes = 0
  let certificates = 0
  const walk = (p: string): void => {
    let st
    try { st = lstatSync(p) } catch { return }
    bytes += st.blocks * 512
    if (!st.isDirectory()) {
      if (p.endsWith('certificate.pem')) certificates++
      return
    }
    let entries: string[] = []
    try { entries = readdirSync(p) } catch { return }
    for (const e of entries) walk(join(p, e))
  }
  walk(dir)
  return { bytes, certificates }
}

function exited (g: Gateway): boolean {
  return g.child.exitCode !== null || g.child.signalCode !== null
}

function failure (g: Gateway, what: string): Error {
  return new Error(`${what}; gateway output:\n${g.output.join('').slice(-4000)}`)
}

async function accepts (port: number): Promise<boolean> {
  return await new Promise(resolve => {
    const s = net.connect({ host: '127.0.0.1', port }, () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
    s.setTimeout(1_000, () => { s.destroy(); resolve(false) })
  })
}

/** One HTTPS request with SNI `servername` and an unrouted Host: true when an HTTP status line comes back. */
async function httpsAnswers (port: number, servername: string): Promise<boolean> {
  return await new Promise(resolve => {
    let text = ''
    const done = (ok: boolean): void => { socket.destroy(); resolve(ok) }
    const socket = tls.connect({ host: '127.0.0.1', port, servername, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, () => {
      socket.write('GET / HTTP/1.1\r\nhost: unrouted.invalid\r\nconnection: close\r\n\r\n')
    })
    socket.setEncoding('utf8')
    socket.on('data', (chunk: string) => {
      text += chunk
      if (/^HTTP\/1\.1 \d{3} /.test(text)) done(true)
    })
    socket.once('error', () => done(false))
    socket.once('close', () => done(false))
    socket.setTimeout(15_000, () => done(false))
  })
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
    g = startGateway(dir, configFile, httpsPort)
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
  const counts = [0, ...o.counts.filter(n => n > 0)]
  for (const curve of o.curves) {
    for (const count of counts) {
      process.stderr.write(`${curve}: ${count}\n`)
      runs.push(await measureRun(curve, count, o))
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
    runs,
    perItem,
  }
}

/** The short table for a terminal (and bench/RESULTS.md). */
export function scaleTable (r: ScaleResults): string {
  const lines = [
    '| curve | N | listening s | first answer s | idle s | CPU s | RSS MB | RSS/item KB | net of peers KB | disk MB | disk/item KB | certificates |',
    '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ]
  for (const run of r.runs) {
    const per = r.perItem.find(p => p.curve === run.curve && p.count === run.count)
    lines.push(`| ${run.curve} | ${run.count} | ${run.listeningS} | ${run.firstAnswerS ?? '-'} | ${run.idleS} | ${run.cpuS} | ${run.rssMB} | ` +
      `${per?.rssKB ?? '-'} | ${per?.rssNetOfPeersKB ?? '-'} | ${run.diskMB} | ${per?.diskKB ?? '-'} | ${run.certificates} |`)
  }
  return lines.join('\n') + '\n'
}

const SPEC = {
  name: 'bench/scale.ts',
  about: `Routed hostnames and idle peers at growing counts, one gateway process per point
(cloud-connect gateway --config FILE on loopback, certificates from the local CA, no traffic):
start-up to the first HTTPS answer, CPU, RSS and data-directory size, per item against N = 0.
JSON on stdout, a table on stderr. Needs nothing but this machine.`,
  options: {
    counts: { type: 'string', default: '1,100,1000,10000', value: 'N,N', help: 'peer counts, each 1-20000, at most 6' },
    curves: { type: 'string', default: 'hostnames,peers', value: 'LIST', help: 'hostnames, peers or both' },
    names: { type: 'string', default: 'custom', value: 'MODE', help: 'custom (a certificate per hostname) or wildcard (hostnames under a configured *.scale.test)' },
    'context-cache': { type: 'string', value: 'N', help: 'edge.limits.tlsContextCache for the gateway (default: its own default)' },
    'timeout-s': { type: 'string', default: '900', value: 'S', help: 'limit for one gateway run, 10-3600' },
  },
} as const

if (isMain(import.meta.url)) {
  exitOnBrokenPipe()
  const options = parseBenchArgs(SPEC, (values): ScaleBenchOptions => {
    const counts = values.counts.split(',').map(c => numberOption('counts', c, 1, 20_000))
    if (counts.length > 6) throw new UsageError('--counts takes at most 6 values')
    const curves = values.curves.split(',')
    if (curves.length === 0 || curves.some(c => c !== 'hostnames' && c !== 'peers')) throw new UsageError('--curves must be hostnames, peers or both')
    if (values.names !== 'custom' && values.names !== 'wildcard') throw new UsageError('--names must be custom or wildcard')
    return {
      counts,
      curves: [...new Set(curves)] as Curve[],
      names: values.names,
      timeoutS: numberOption('timeout-s', values['timeout-s'], 10, 3600),
      ...(values['context-cache'] === undefined ? {} : { contextCache: numberOption('context-cache', values['context-cache'], 1, 1_000_000) }),
    }
  })
  const results = await runScaleBench(options)
  process.stderr.write(scaleTable(results))
  process.stdout.write(JSON.stringify(results, null, 2) + '\n')
}
