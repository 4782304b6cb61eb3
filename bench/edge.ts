/**
 * Edge proxy benchmark, all on loopback: our Edge (gateway/edge, TLS by SNI from its local CA,
 * reverse proxy) against Caddy (`tls internal` + reverse_proxy) in front of the same nginx origin,
 * measured by the same clients in the same run. The WireGuard tunnel is not in this path: this
 * isolates the TLS + HTTP proxy layer.
 *
 *   node bin/run-ts.js bench/edge.ts [--size-mb 100] [--runs 3] [--wrk-seconds 10] [--wrk-connections 16] [--rounds 2] [--log-level info]
 *                                    [--edges 1:all]  our edge in each of these set-ups, WORKERS:CPUS[:ALLOCATOR]
 *                                                     (CPUS: `all`, or a taskset list such as 0 or 0+1)
 *                                    [--http1.1]      bulk transfers over HTTP/1.1 (default: HTTP/2)
 *   node bin/run-ts.js bench/edge.ts --help
 *
 * Measures, per proxy:
 *   small   wrk -t1 -cN -dS --latency on a 1 KiB file over HTTPS keep-alive: req/s, p50/p99
 *   bulk    curl download of a random file (MB/s, 10^6 bytes/s) and curl -T upload to the HTTP sink
 *           (SHA-256 must match), each `runs` times; medians
 *   memory  peak RSS of the proxy process (VmHWM) after the run
 *   CPU     the proxy process's CPU time per small request and per GB moved (/proc/PID/stat):
 *           unlike rates, this barely depends on what else the machine is running
 * and nginx directly (plain HTTP, no proxy) as a reference. Proxies alternate per round so drift
 * on a busy machine hits both. Needs nginx, caddy, wrk, curl; not root. Every process and transfer
 * is bounded in time; everything is removed at the end (also on Ctrl-C, SIGTERM, or when the output
 * pipe closes). JSON on stdout, a table on stderr.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync, readFileSync, rmSync, openSync, writeSync, closeSync, existsSync, mkdirSync, chmodSync } from 'node:fs'
import { createHash, randomBytes } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { join } from 'node:path'
import os from 'node:os'
import net from 'node:net'
import { onExitCleanup } from '../test/helpers/lab.ts'
import { freePort } from '../test/helpers/ports.ts'
import { LabProcess } from '../test/helpers/lab/process.ts'
import { parseWrk, type SmallRequestStats } from './baseline/measure.ts'
import { cpuSeconds } from './baseline/proc.ts'
import { ALLOCATORS, ALLOCATOR_NAMES, isAllocator } from './baseline/allocators.ts'
import { TRANSFER_OPTIONS, UsageError, exitOnBrokenPipe, numberOption, parseBenchArgs, transferValues, wrkOptions, wrkValues } from './baseline/cli.ts'

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']

const SPEC = {
  name: 'bench/edge.ts',
  about: `Edge proxy benchmark, all on loopback: our Edge (TLS by SNI from its local CA, reverse proxy)
against Caddy (tls internal + reverse_proxy) in front of the same nginx origin, measured by the
same clients in the same run, proxies alternating per round; nginx directly (plain HTTP) as a
reference. Per proxy: 1 KiB requests/s and p50/p99 (wrk), bulk download and upload MB/s (curl,
upload SHA-256 checked), peak RSS, CPU per request and per GB. JSON on stdout, a table on stderr;
a few minutes with the defaults.

Needs nginx, caddy, wrk, curl; not root. Everything it starts is stopped at the end, also on
Ctrl-C.`,
  options: {
    ...TRANSFER_OPTIONS,
    ...wrkOptions(16),
    rounds: { type: 'string', default: '2', value: 'N', help: 'measurement rounds per proxy, 1-5' },
    'log-level': { type: 'string', default: 'info', value: 'LEVEL', help: `our edge's log level (${LOG_LEVELS.join(', ')}): info logs a line per request, as in production` },
    'http1.1': { type: 'boolean', help: 'bulk transfers (curl) over HTTP/1.1 (default: HTTP/2, which curl negotiates with both proxies)' },
    edges: { type: 'string', default: '1:all', value: 'W:C,W:C', help: `our edge as W processes (node:cluster on one listener, 1-4) on CPUs C (all, or a taskset list like 0 or 0+1), optionally :A with memory allocator A (${ALLOCATOR_NAMES.join(', ')}; default glibc); at most 4 set-ups, each measured like a proxy` },
  },
} as const

exitOnBrokenPipe()
const settings = parseBenchArgs(SPEC, values => {
  if (!LOG_LEVELS.includes(values['log-level'])) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`)
  const edges = values.edges.split(',').map(spec => {
    const m = /^(\d+):(all|\d+(?:[-,]\d+)*)(?::([a-z0-9-]+))?$/.exec(spec.replace(/\+/g, ','))
    if (m === null) throw new UsageError(`--edges: ${spec} is not WORKERS:CPUS[:ALLOCATOR] (e.g. 1:all, 1:0, 2:0+1, 1:all:jemalloc)`)
    const allocator = m[3] ?? 'glibc'
    if (!isAllocator(allocator)) throw new UsageError(`--edges: allocator ${allocator} is not one of ${ALLOCATOR_NAMES.join(', ')}`)
    return { workers: numberOption('edges', m[1], 1, 4), cpus: m[2], allocator }
  })
  if (edges.length > 4) throw new UsageError('--edges takes at most 4 set-ups')
  return { ...transferValues(values), ...wrkValues(values), rounds: numberOption('rounds', values.rounds, 1, 5), logLevel: values['log-level'], edges, http1: values['http1.1'] === true }
})
const SIZE_MB = settings.sizeMB
const RUNS = settings.runs
const WRK_SECONDS = settings.wrkSeconds
const WRK_CONNECTIONS = settings.wrkConnections
const ROUNDS = settings.rounds
const LOG_LEVEL = settings.logLevel
const TRANSFER_TIMEOUT_S = 120
const HOST = 'localhost' // resolves to 127.0.0.1 without DNS, so wrk can use it (SNI = Host)
const SINK_HOST = 'sink.localhost' // curl --resolve only

/** The long-running processes (sink, nginx, our edge, caddy), each in a process group of its own. */
const servers: LabProcess[] = []
/** curl and wrk runs in flight. */
const oneShots = new Set<ChildProcess>()
const dir = mkdtempSync(join(existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(), 'cc-edge-bench-'))

/** On a signal or an early exit (EPIPE): no time to wait, SIGKILL every group, then the files. */
function killAllSync (): void {
  for (const c of oneShots) c.kill('SIGKILL')
  for (const p of servers) p.killSync()
  rmSync(dir, { recursive: true, force: true })
}
const unregisterCleanup = onExitCleanup(killAllSync)

/** At the end: SIGTERM first (nginx's master then stops its workers), SIGKILL what is still there after 3 s. */
async function cleanup (): Promise<void> {
  await Promise.all(servers.map(p => p.stop(3_000).catch(() => p.killSync())))
  rmSync(dir, { recursive: true, force: true })
  unregisterCleanup()
}

/** Run a command to completion with a time limit; stdout as text. */
function run (cmd: string, args: string[], timeoutS: number): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return new Promise(resolve => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    oneShots.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
    child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutS * 1000)
    child.on('close', code => { clearTimeout(timer); oneShots.delete(child); resolve({ code, stdout, stderr }) })
  })
}

/** Start a long-running process; resolves once its output matches `ready` (or fails after 20 s). */
async function start (name: string, cmd: string, args: string[], ready: RegExp | null, env: NodeJS.ProcessEnv = process.env): Promise<LabProcess> {
  const p = new LabProcess(name, cmd, args, { env })
  servers.push(p)
  if (ready !== null) await p.waitForOutput(ready, 20_000)
  return p
}

async function waitPort (port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>(resolve => {
      const s = net.connect(port, '127.0.0.1', () => { s.destroy(); resolve(true) })
      s.on('error', () => resolve(false))
    })
    if (ok) return
    await new Promise(r => setTimeout(r, 100))
  }
  throw new Error(`port ${port} never opened`)
}

function peakRssMB (pid: number | undefined): number {
  if (pid === undefined) return NaN
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m === null ? NaN : Math.round(Number(m[1]) / 1024)
}

function median (xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s.length === 0 ? NaN : s.length % 2 === 1 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2
}
const round1 = (x: number): number => Math.round(x * 10) / 10

interface Target {
  name: string
  scheme: 'https' | 'http'
  port: number
  curlArgs: string[]
  pid?: number
}

interface TargetResult {
  small: SmallRequestStats[]
  downloadMBps: number[]
  uploadMBps: number[]
  /** CPU time of the proxy process per small request (µs) and per GB moved (s), per round. */
  cpuUsPerRequest: number[]
  cpuSecondsPerGBDown: number[]
  cpuSecondsPerGBUp: number[]
}

async function curlMBps (t: Target, args: string[], expectBytes: number, field: 'speed_download' | 'speed_upload'): Promise<{ mbps: number, body: string }> {
  const r = await run('curl', ['-sS', '--max-time', String(TRANSFER_TIMEOUT_S), ...(settings.http1 && t.scheme === 'https' ? ['--http1.1'] : []), ...t.curlArgs, '-w', `\\n%{http_code} %{${field}} %{size_download} %{size_upload}`, ...args], TRANSFER_TIMEOUT_S + 5)
  const lines = r.stdout.trimEnd().split('\n')
  const [code, speed, down, up] = lines.pop()!.split(' ').map(Number)
  const bytes = field === 'speed_download' ? down : up
  if (r.code !== 0 || code !== 200 || bytes !== expectBytes) throw new Error(`${t.name}: curl ${args.join(' ')} -> exit ${r.code}, HTTP ${code}, ${bytes} bytes: ${r.stderr}`)
  return { mbps: round1(speed / 1e6), body: lines.join('\n') }
}

/** CPU seconds of a proxy and its workers (children and grandchildren) so far; NaN for a target without a process of its own. */
function targetCpuSeconds (t: Target): number {
  return t.pid === undefined ? NaN : cpuSeconds(t.pid, { levels: 2 })
}

async function measure (t: Target, res: TargetResult, bulkFile: string, bulkBytes: number, bulkSha: string): Promise<void> {
  const base = `${t.scheme}://${HOST}:${t.port}`
  let cpu = targetCpuSeconds(t)
  const wrk = await run('wrk', ['-t1', `-c${WRK_CONNECTIONS}`, `-d${WRK_SECONDS}s`, '--latency', `${base}/small.bin`], WRK_SECONDS + 30)
  const small = parseWrk(wrk.stdout, WRK_CONNECTIONS, WRK_SECONDS)
  const requests = Number(/(\d+) requests in/.exec(wrk.stdout)?.[1] ?? NaN)
  res.small.push(small)
  res.cpuUsPerRequest.push(Math.round((targetCpuSeconds(t) - cpu) / requests * 1e6))
  cpu = targetCpuSeconds(t)
  for (let i = 0; i < RUNS; i++) {
    res.downloadMBps.push((await curlMBps(t, ['-o', '/dev/null', `${base}/bulk.bin`], bulkBytes, 'speed_download')).mbps)
  }
  res.cpuSecondsPerGBDown.push(Math.round((targetCpuSeconds(t) - cpu) / (RUNS * bulkBytes / 1e9) * 100) / 100)
  cpu = targetCpuSeconds(t)
  const sinkUrl = t.scheme === 'https' ? `https://${SINK_HOST}:${t.port}/sink` : `http://${HOST}:${t.port}/sink`
  for (let i = 0; i < RUNS; i++) {
    const { mbps, body } = await curlMBps(t, ['-T', bulkFile, sinkUrl], bulkBytes, 'speed_upload')
    const sink = JSON.parse(body) as { sha256: string }
    if (sink.sha256 !== bulkSha) throw new Error(`${t.name}: upload hash mismatch`)
    res.uploadMBps.push(mbps)
  }
  res.cpuSecondsPerGBUp.push(Math.round((targetCpuSeconds(t) - cpu) / (RUNS * bulkBytes / 1e9) * 100) / 100)
}

async function sha256File (path: string): Promise<string> {
  const h = createHash('sha256')
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer)
  return h.digest('hex')
}

async function main (): Promise<void> {
  const bulkBytes = Math.round(SIZE_MB * 1e6)
  const files = join(dir, 'files')
  mkdirSync(files)
  const bulkFile = join(files, 'bulk.bin')
  const fd = openSync(bulkFile, 'w')
  const block = randomBytes(1 << 20)
  for (let left = bulkBytes; left > 0; left -= block.length) writeSync(fd, block, 0, Math.min(left, block.length))
  closeSync(fd)
  writeFileSync(join(files, 'small.bin'), randomBytes(1024))
  // nginx workers run as an unprivileged user: let them read the files.
  for (const p of [dir, files, bulkFile, join(files, 'small.bin')]) chmodSync(p, p === bulkFile || p.endsWith('.bin') ? 0o644 : 0o755)
  const bulkSha = await sha256File(bulkFile)

  // Origin: nginx serving the files (one worker), proxying /sink to the node sink unbuffered.
  const [nginxPort, sinkPort, caddyPort] = await Promise.all([freePort(), freePort(), freePort()])
  const resolve = (port: number): string[] => ['--resolve', `${HOST}:${port}:127.0.0.1`, '--resolve', `${SINK_HOST}:${port}:127.0.0.1`]
  await start('http sink', process.execPath, ['bin/run-ts.js', 'test/helpers/http-sink.ts', `127.0.0.1:${sinkPort}`], /listening/)
  const nginxConf = join(dir, 'nginx.conf')
  writeFileSync(nginxConf, `daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/nginx-body;
  proxy_temp_path ${dir}/nginx-proxy;
  fastcgi_temp_path ${dir}/nginx-fcgi; uwsgi_temp_path ${dir}/nginx-uwsgi; scgi_temp_path ${dir}/nginx-scgi;
  keepalive_requests 100000;
  sendfile on;
  server {
    listen 127.0.0.1:${nginxPort};
    root ${files};
    location /sink {
      proxy_pass http://127.0.0.1:${sinkPort};
      proxy_http_version 1.1;
      proxy_request_buffering off;
      client_max_body_size 0;
    }
  }
}
`)
  await start('nginx', 'nginx', ['-c', nginxConf, '-p', dir], null)
  await waitPort(nginxPort)

  // Our edge, in each set-up asked for (a port and data directory each).
  const edgeTargets: Target[] = []
  for (const [i, setup] of settings.edges.entries()) {
    const port = await freePort()
    const edgeDir = join(dir, `edge-${i}`)
    const node = [process.execPath, 'bin/run-ts.js', 'bench/edge-server.ts', JSON.stringify({
      dataDir: edgeDir,
      port,
      workers: setup.workers,
      logFile: join(dir, `edge-${i}-access.log`),
      logLevel: LOG_LEVEL,
      routes: [
        { instanceId: 'origin', tunnelIp: '127.0.0.1', port: nginxPort, hostnames: [HOST] },
        { instanceId: 'sink', tunnelIp: '127.0.0.1', port: sinkPort, hostnames: [SINK_HOST] },
      ],
    })]
    // taskset execs node in place: the pid is the edge's, its workers inherit the CPU set.
    const [cmd, ...args] = setup.cpus === 'all' ? node : ['taskset', '-c', setup.cpus, ...node]
    const edge = await start(`edge ${i}`, cmd, args, /"ready":true/, { ...process.env, ...ALLOCATORS[setup.allocator] })
    const edgeCa = join(edgeDir, 'tls', 'local-ca', 'ca.crt')
    const name = settings.edges.length === 1 && setup.workers === 1 && setup.cpus === 'all' && setup.allocator === 'glibc'
      ? 'edge (ours)'
      : `edge (ours) ${setup.workers} process${setup.workers > 1 ? 'es' : ''}, CPUs ${setup.cpus}${setup.allocator === 'glibc' ? '' : `, ${setup.allocator}`}`
    edgeTargets.push({ name, scheme: 'https', port, curlArgs: ['--cacert', edgeCa, ...resolve(port)], pid: edge.pid })
  }

  // Caddy with its internal CA, same origin.
  const caddyDir = join(dir, 'caddy')
  mkdirSync(caddyDir)
  writeFileSync(join(caddyDir, 'Caddyfile'), `{
  admin off
  skip_install_trust
  auto_https disable_redirects
  storage file_system ${caddyDir}/data
  log {
    level ERROR
  }
}
https://${HOST}:${caddyPort} {
  tls internal
  reverse_proxy 127.0.0.1:${nginxPort}
}
https://${SINK_HOST}:${caddyPort} {
  tls internal
  reverse_proxy 127.0.0.1:${sinkPort}
}
`)
  const caddy = await start('caddy', 'caddy', ['run', '--config', join(caddyDir, 'Caddyfile'), '--adapter', 'caddyfile'], null,
    { ...process.env, HOME: caddyDir, XDG_DATA_HOME: join(caddyDir, 'xdg-data'), XDG_CONFIG_HOME: join(caddyDir, 'xdg-config') })
  await waitPort(caddyPort)
  const caddyCa = join(caddyDir, 'data', 'pki', 'authorities', 'local', 'root.crt')
  for (let i = 0; i < 100 && !existsSync(caddyCa); i++) await new Promise(r => setTimeout(r, 100))

  const targets: Target[] = [
    ...edgeTargets,
    { name: 'caddy 2.6', scheme: 'https', port: caddyPort, curlArgs: ['--cacert', caddyCa, ...resolve(caddyPort)], pid: caddy.pid },
  ]
  const direct: Target = { name: 'nginx direct (HTTP, no proxy)', scheme: 'http', port: nginxPort, curlArgs: resolve(nginxPort) }
  const results = new Map<string, TargetResult>()
  for (const t of [...targets, direct]) results.set(t.name, { small: [], downloadMBps: [], uploadMBps: [], cpuUsPerRequest: [], cpuSecondsPerGBDown: [], cpuSecondsPerGBUp: [] })

  // Warm up both proxies (TLS session setup, JIT) before measuring.
  for (const t of targets) await run('wrk', ['-t1', '-c4', '-d2s', `https://${HOST}:${t.port}/small.bin`], 30)
  for (let r = 0; r < ROUNDS; r++) {
    const order = r % 2 === 0 ? targets : [...targets].reverse()
    for (const t of order) {
      process.stderr.write(`round ${r + 1}/${ROUNDS}: ${t.name}\n`)
      await measure(t, results.get(t.name)!, bulkFile, bulkBytes, bulkSha)
    }
  }
  process.stderr.write(`reference: ${direct.name}\n`)
  await measure(direct, results.get(direct.name)!, bulkFile, bulkBytes, bulkSha)

  const summary = [...targets, direct].map(t => {
    const res = results.get(t.name)!
    return {
      proxy: t.name,
      smallRequestsPerSecond: Math.round(median(res.small.map(s => s.requestsPerSecond))),
      p50ms: round1(median(res.small.map(s => s.latencyMs.p50))),
      p99ms: round1(median(res.small.map(s => s.latencyMs.p99))),
      smallErrors: res.small.reduce((a, s) => a + s.errors, 0),
      downloadMBps: round1(median(res.downloadMBps)),
      uploadMBps: round1(median(res.uploadMBps)),
      peakRssMB: peakRssMB(t.pid),
      cpuUsPerRequest: median(res.cpuUsPerRequest),
      cpuSecondsPerGBDown: Math.round(median(res.cpuSecondsPerGBDown) * 100) / 100,
      cpuSecondsPerGBUp: Math.round(median(res.cpuSecondsPerGBUp) * 100) / 100,
      runs: res,
    }
  })
  const machine = { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '', node: process.version, date: new Date().toISOString() }
  process.stdout.write(JSON.stringify({ machine, loadAverage: os.loadavg().map(round1), edges: settings.edges, sizeMB: SIZE_MB, runs: RUNS, rounds: ROUNDS, wrkSeconds: WRK_SECONDS, wrkConnections: WRK_CONNECTIONS, edgeLogLevel: LOG_LEVEL, summary }, null, 2) + '\n')
  process.stderr.write('\n| proxy | 1 KiB req/s | p50 ms | p99 ms | download MB/s | upload MB/s | CPU µs/request | CPU s/GB down | CPU s/GB up | peak RSS MB |\n|---|---|---|---|---|---|---|---|---|---|\n')
  const show = (x: number): string => Number.isNaN(x) ? '-' : String(x)
  for (const s of summary) {
    process.stderr.write(`| ${s.proxy} | ${s.smallRequestsPerSecond} | ${s.p50ms} | ${s.p99ms} | ${s.downloadMBps} | ${s.uploadMBps} | ${show(s.cpuUsPerRequest)} | ${show(s.cpuSecondsPerGBDown)} | ${show(s.cpuSecondsPerGBUp)} | ${show(s.peakRssMB)} |\n`)
  }
}

try {
  await main()
} finally {
  await cleanup()
}
