/**
 * Tools run inside lab namespaces: ping (with its output parsed), nginx with a temporary
 * configuration, and a small HTTP sink that hashes and discards request bodies.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { LabProcess, run, StopWaiting, waitUntil } from './process.ts'
import { inNetns, portBound } from './netns.ts'
import { REPO_ROOT } from './gateway.ts'
import type { FloodOptions, FloodResult } from '../handshake-flood.ts'

export interface PingOptions {
  count?: number
  /** seconds between echo requests (below 0.2 needs root, which the lab has) */
  interval?: number
  /** -W: seconds to wait for a reply when none has come */
  timeout?: number
  size?: number
}

export interface PingResult {
  transmitted: number
  received: number
  /** 0..1 */
  loss: number
  /** icmp_seq numbers (1-based) that got no reply */
  lostSeqs: number[]
  output: string
}

export function pingArgs (dest: string, o: PingOptions = {}): string[] {
  const args = ['-n', '-c', String(o.count ?? 5), '-i', String(o.interval ?? 0.2), '-W', String(o.timeout ?? 1)]
  if (o.size !== undefined) args.push('-s', String(o.size))
  return [...args, dest]
}

/** Parses iputils ping output: the statistics line and the icmp_seq of every reply. */
export function parsePing (output: string): PingResult {
  const stats = /(\d+) packets transmitted, (\d+) received/.exec(output)
  if (stats === null) throw new Error(`no ping statistics in output:\n${output.slice(-2000)}`)
  const transmitted = Number(stats[1])
  const seen = new Set<number>()
  for (const m of output.matchAll(/bytes from [^:]+: icmp_seq=(\d+)/g)) seen.add(Number(m[1]))
  const lostSeqs: number[] = []
  for (let s = 1; s <= transmitted; s++) if (!seen.has(s)) lostSeqs.push(s)
  const received = Number(stats[2])
  return { transmitted, received, loss: transmitted === 0 ? 1 : 1 - received / transmitted, lostSeqs, output }
}

/** Time limit for a ping run: every interval plus the reply timeout plus slack. */
export function pingTimeoutMs (o: PingOptions = {}): number {
  return Math.ceil(((o.count ?? 5) * (o.interval ?? 0.2) + (o.timeout ?? 1)) * 1000) + 15_000
}

export async function ping (ns: string, dest: string, o: PingOptions = {}): Promise<PingResult> {
  const [c, a] = inNetns(ns, 'ping', pingArgs(dest, o))
  const r = await run(c, a, { timeoutMs: pingTimeoutMs(o) })
  return parsePing(r.stdout + r.stderr)
}

export interface NginxOptions {
  /** Directory served as the document root. */
  root: string
  listen?: string
  /** Extra directives inside `server { }`. */
  serverExtra?: string
  workers?: number
}

export interface NginxHandle { process: LabProcess; listen: string; root: string }

function portOf (listen: string): number {
  return Number(listen.slice(listen.lastIndexOf(':') + 1))
}

/** nginx in the foreground (`daemon off`), everything under `dir`, serving `root`. */
export async function startNginx (ns: string, dir: string, o: NginxOptions, track: (p: LabProcess) => void): Promise<NginxHandle> {
  mkdirSync(dir, { recursive: true })
  const listen = o.listen ?? '0.0.0.0:80'
  const conf = join(dir, 'nginx.conf')
  writeFileSync(conf, `daemon off;
user root; # lab files live in 0700 temp directories
worker_processes ${o.workers ?? 1};
pid ${dir}/nginx.pid;
error_log stderr warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  server {
    listen ${listen};
    root ${o.root};
    ${o.serverExtra ?? ''}
  }
}
`)
  const [c, a] = inNetns(ns, 'nginx', ['-e', 'stderr', '-p', dir, '-c', conf])
  const proc = new LabProcess(`nginx ${ns}`, c, a)
  track(proc)
  await waitUntil(`nginx on ${listen}`, async () => {
    if (!proc.running) throw new StopWaiting(`nginx exited: ${proc.output().slice(-2000)}`)
    return portBound(ns, 'tcp', portOf(listen))
  }, 10_000, 50)
  return { process: proc, listen, root: o.root }
}

export interface HttpSinkHandle { process: LabProcess; listen: string }

/**
 * test/helpers/http-sink.ts in `ns`: answers every request with `{"bytes":N,"sha256":"..."}` of
 * its body, so uploads can be checked end to end without storing them.
 */
export async function startHttpSink (ns: string, listen: string, track: (p: LabProcess) => void): Promise<HttpSinkHandle> {
  const [c, a] = inNetns(ns, process.execPath, [join(REPO_ROOT, 'bin/run-ts.js'), join(REPO_ROOT, 'test/helpers/http-sink.ts'), listen])
  const proc = new LabProcess(`http-sink ${ns}`, c, a, { cwd: REPO_ROOT })
  track(proc)
  await proc.waitForOutput(/^listening /m, 20_000)
  return { process: proc, listen }
}

/** Runs test/helpers/handshake-flood.ts inside `ns` and returns its counts. */
export async function runFlood (ns: string, opts: FloodOptions): Promise<FloodResult> {
  const [c, a] = inNetns(ns, process.execPath, [join(REPO_ROOT, 'bin/run-ts.js'), join(REPO_ROOT, 'test/helpers/handshake-flood.ts'), JSON.stringify(opts)])
  const bound = Math.min(opts.durationMs, 60_000) + Math.min(opts.waitMs ?? 1500, 10_000) + 30_000
  const r = await run(c, a, { cwd: REPO_ROOT, timeoutMs: bound })
  if (r.code !== 0) throw new Error(`handshake flood failed (${r.timedOut ? 'timed out' : `exit ${r.code}`}): ${r.stderr.slice(-2000)}`)
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as FloodResult
}

export interface CaddyHandle { process: LabProcess; dir: string }

/**
 * Caddy (foreground, admin API off) inside `ns` with `caddyfile`; its data and config directories
 * (internal CA, certificates) live under `dir`, never in the real home directory. Resolves once
 * every port in `ports` accepts connections.
 */
export async function startCaddy (ns: string, dir: string, caddyfile: string, ports: number[], track: (p: LabProcess) => void): Promise<CaddyHandle> {
  mkdirSync(dir, { recursive: true })
  const file = join(dir, 'Caddyfile')
  writeFileSync(file, caddyfile)
  const env = { ...process.env, HOME: dir, XDG_DATA_HOME: join(dir, 'data'), XDG_CONFIG_HOME: join(dir, 'config') }
  const [c, a] = inNetns(ns, 'caddy', ['run', '--config', file, '--adapter', 'caddyfile'])
  const proc = new LabProcess(`caddy ${ns}`, c, a, { env, cwd: dir })
  track(proc)
  for (const port of ports) {
    await waitUntil(`caddy on port ${port}`, async () => {
      if (!proc.running) throw new StopWaiting(`caddy exited: ${proc.output().slice(-2000)}`)
      return portBound(ns, 'tcp', port)
    }, 20_000, 100)
  }
  return { process: proc, dir }
}
