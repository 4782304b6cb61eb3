/**
 * The network-namespace test lab: real WireGuard peers (wireguard-go + Linux TCP) and our gateway,
 * each in a namespace of its own, joined by veth pairs in 198.18.0.0/15. See DESIGN.md "Test lab".
 *
 *   if (!requireLab(t)) return
 *   const lab = await Lab.create(t)            // torn down by t.teardown (and at exit / SIGINT)
 *   const gwNs = await lab.namespace('gw')
 *   const peerNs = await lab.namespace('peer')
 *   const [gwEnd, peerEnd] = await lab.link(gwNs, peerNs)
 *   const gw = await lab.startGateway(gwNs, { privateKey, listenPort: 51820, peers: [...] })
 *   const peer = await lab.startWireguardGo(peerNs, { address: '10.100.0.2/32', peers: [...] })
 *   const r = await lab.ping(peerNs, '10.100.0.1', { count: 20 })
 *
 * The host namespace never gets a lab address or route. Cleanup stops processes (process groups),
 * then deletes namespaces; it runs from t.teardown, from `destroy()`, and from exit/signal hooks.
 */
import { accessSync, constants, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execFileSync } from 'node:child_process'
import { LabProcess, run, type ExecOptions, type ExecResult } from './lab/process.ts'
import { unavailable } from './require.ts'
import { onPath } from '../../agent/kernel.ts'
import {
  addNetns, addVeth, addVethIpv6, claimRun, deleteNetns, deleteNetnsSync, ifName, inNetns, netnsName, newRunId,
  releaseRun, sweepStaleLabs, writeNetnsHosts, type VethEnd,
} from './lab/netns.ts'
import { WireguardGo, type WireguardGoOptions } from './lab/wireguard-go.ts'
import { Gateway, type GatewayConfig, type GatewayOptions } from './lab/gateway.ts'
import type { FloodOptions, FloodResult } from './handshake-flood.ts'
import {
  ping, pingArgs, parsePing, pingTimeoutMs, runFlood, startCaddy, startHttpSink, startNginx,
  type CaddyHandle, type HttpSinkHandle, type NginxHandle, type NginxOptions, type PingOptions, type PingResult,
} from './lab/tools.ts'

export { LabProcess, run, runOk, StopWaiting, waitUntil, type ExecResult } from './lab/process.ts'
export { sweepStaleLabs, type VethEnd } from './lab/netns.ts'
export { WireguardGo, wgGenKey, wgPubKey, parseWgDump, type WgDump, type WgDumpPeer, type WgPeerConfig, type WireguardGoOptions } from './lab/wireguard-go.ts'
export { Gateway, metricValue, REPO_ROOT, type GatewayConfig, type GatewayPeerConfig, type GatewayOptions } from './lab/gateway.ts'
export type { FloodOptions, FloodResult } from './handshake-flood.ts'
export { parsePing, type PingResult, type PingOptions, type NginxHandle, type HttpSinkHandle, type CaddyHandle } from './lab/tools.ts'

/** The part of a tap Test the lab uses. */
export interface LabTest {
  teardown (fn: () => unknown): void
  plan (n: number, comment?: string): void
  fail (message: string): unknown
  comment (...args: unknown[]): void
}

export { onPath }

const TOOLS = ['ip', 'wireguard-go', 'wg', 'ping', 'curl', 'ss']

/** Why the lab cannot run here, or null if it can. */
export function labMissing (): string | null {
  if (process.platform !== 'linux') return `the lab needs Linux (this is ${process.platform})`
  if (process.getuid?.() !== 0) return 'the lab needs root (network namespaces, TUN devices)'
  const missing = TOOLS.filter(t => !onPath(t))
  if (missing.length > 0) return `missing tools: ${missing.join(', ')} (apt-get install wireguard-go wireguard-tools iproute2 iputils-ping curl)`
  try {
    accessSync('/dev/net/tun', constants.R_OK | constants.W_OK)
  } catch {
    return '/dev/net/tun is not available'
  }
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'ignore', timeout: 5000 })
  } catch {
    return '`ip netns` does not work here'
  }
  return null
}

/**
 * Checks that the lab can run. If not: skips the test with the reason, or, when
 * CC_REQUIRE_INTEROP=1 (CI), fails it with the reason. Returns whether the caller may go on.
 */
export function requireLab (t: LabTest, extra: string[] = []): boolean {
  let reason = labMissing()
  if (reason === null) {
    const missing = extra.filter(tool => !onPath(tool))
    if (missing.length > 0) reason = `missing tools: ${missing.join(', ')}`
  }
  if (reason === null) return true
  return unavailable(t, 'lab', reason)
}

const liveLabs = new Set<Lab>()
let hooksInstalled = false
let sweptOnce = false

const exitCleanups = new Set<() => void>()

/** Labs first (their processes use the files), then what scripts registered with onExitCleanup. */
function runExitCleanups (): void {
  for (const lab of liveLabs) lab.destroySync()
  for (const fn of exitCleanups) {
    exitCleanups.delete(fn)
    try { fn() } catch { /* best effort at exit */ }
  }
}

/**
 * Runs `fn` at process exit and on SIGINT / SIGTERM / SIGHUP, with the labs' own teardown, for
 * what a script starts outside a Lab (processes, temporary files). `fn` must be synchronous
 * (SIGKILL, rmSync): nothing asynchronous runs at exit. Returns a function that unregisters it,
 * for once the script has cleaned up by itself.
 */
export function onExitCleanup (fn: () => void): () => void {
  installExitHooks()
  exitCleanups.add(fn)
  return () => { exitCleanups.delete(fn) }
}

function installExitHooks (): void {
  if (hooksInstalled) return
  hooksInstalled = true
  process.on('exit', runExitCleanups)
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    const handler = (): void => {
      runExitCleanups()
      // Only exit ourselves if nobody else (e.g. the test runner) handles this signal.
      if (process.listenerCount(sig) <= 1) process.exit(128 + (sig === 'SIGINT' ? 2 : sig === 'SIGTERM' ? 15 : 1))
    }
    process.on(sig, handler)
  }
}

export interface LinkEnds { a: VethEnd; b: VethEnd }

export class Lab {
  readonly runId: string
  /** Temporary directory for configs and served files; removed by destroy(). */
  readonly dir: string
  private readonly namespaces: string[] = []
  private readonly processes: LabProcess[] = []
  private links = 0
  private interfaces = 0
  private destroyed = false
  /** Everything removed: set at the end of destroy() (a signal may arrive while it runs) or by destroySync(). */
  private tornDown = false

  private constructor (runId: string, dir: string) {
    this.runId = runId
    this.dir = dir
  }

  /**
   * A new lab with its own run id. With `t`, teardown is registered on it. The first lab of a
   * process also sweeps namespaces left by crashed runs.
   */
  static async create (t?: LabTest): Promise<Lab> {
    const reason = labMissing()
    if (reason !== null) throw new Error(`lab unavailable: ${reason}`)
    if (!sweptOnce) {
      sweptOnce = true
      await sweepStaleLabs()
    }
    installExitHooks()
    const runId = newRunId()
    const lab = new Lab(runId, mkdtempSync(join(tmpdir(), `cc-lab-${runId}-`)))
    claimRun(runId)
    liveLabs.add(lab)
    t?.teardown(() => lab.destroy())
    return lab
  }

  /** Creates namespace `cc<runId>-<role>` with loopback up; returns its name. */
  async namespace (role: string): Promise<string> {
    const name = netnsName(this.runId, role)
    this.namespaces.push(name)
    await addNetns(name)
    return name
  }

  /** Host names for programs run in `ns` (its own /etc/hosts, e.g. `{ 'x.cloud.test': '127.0.0.1' }`). */
  hosts (ns: string, entries: Record<string, string>): void {
    if (!this.namespaces.includes(ns)) throw new Error(`${ns} is not a namespace of this lab`)
    writeNetnsHosts(ns, entries)
  }

  /**
   * A veth pair between two lab namespaces: `a` gets 198.18.x.1/30, `b` 198.18.x.2/30; with
   * `ipv6`, also fd00:198:18:x::1/64 and ::2/64 (`ip6` of each end).
   */
  async link (nsA: string, nsB: string, options: { ipv6?: boolean } = {}): Promise<LinkEnds> {
    const n = this.links++
    const [a, b] = await addVeth(nsA, ifName(this.runId, 'v', 2 * n), nsB, ifName(this.runId, 'v', 2 * n + 1), n)
    if (options.ipv6 === true) await addVethIpv6(a, b, n)
    return { a, b }
  }

  /** A file in the lab's temporary directory. */
  file (name: string, content: string | Buffer): string {
    const path = join(this.dir, name)
    writeFileSync(path, content)
    return path
  }

  private track = (p: LabProcess): void => { this.processes.push(p) }

  /** Runs a command inside `ns` to completion (never rejects; see ExecResult). */
  exec (ns: string, cmd: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    const [c, a] = inNetns(ns, cmd, args)
    return run(c, a, opts)
  }

  /** Starts a long-running command inside `ns`; stopped by cleanup. */
  spawn (ns: string, name: string, cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): LabProcess {
    const [c, a] = inNetns(ns, cmd, args)
    const p = new LabProcess(name, c, a, opts)
    this.track(p)
    return p
  }

  /** wireguard-go with a fresh interface name (the control socket path is global). */
  startWireguardGo (ns: string, opts: WireguardGoOptions): Promise<WireguardGo> {
    return WireguardGo.start(ns, ifName(this.runId, 'w', this.interfaces++), this.dir, opts, this.track)
  }

  /** `cloud-connect gateway --config FILE` inside `ns`; resolves once it listens. */
  startGateway (ns: string, config: GatewayConfig, opts: GatewayOptions = {}): Promise<Gateway> {
    return Gateway.start(ns, `gateway-${this.processes.length}`, this.dir, config, opts, this.track)
  }

  /** `ping -c N -i I -W T` inside `ns`, parsed. */
  ping (ns: string, dest: string, opts: PingOptions = {}): Promise<PingResult> {
    return ping(ns, dest, opts)
  }

  /** A ping running in the background; `result` resolves when it has sent all its requests. */
  startPing (ns: string, dest: string, opts: PingOptions = {}): { process: LabProcess; result: Promise<PingResult> } {
    const p = this.spawn(ns, `ping ${dest}`, 'ping', pingArgs(dest, opts))
    const limit = pingTimeoutMs(opts)
    const result = (async () => {
      const timer = setTimeout(() => { p.killSync() }, limit)
      await p.exited
      clearTimeout(timer)
      return parsePing(p.output())
    })()
    return { process: p, result }
  }

  /** curl inside `ns` (add your own -sS / -o / -w flags). */
  curl (ns: string, args: string[], opts: ExecOptions = {}): Promise<ExecResult> {
    return this.exec(ns, 'curl', args, { timeoutMs: 60_000, ...opts })
  }

  /** nginx (foreground) inside `ns` serving `opts.root`. */
  startNginx (ns: string, opts: NginxOptions): Promise<NginxHandle> {
    return startNginx(ns, join(this.dir, `nginx-${this.processes.length}`), opts, this.track)
  }

  /** test/helpers/http-sink.ts inside `ns`: hashes and discards request bodies. */
  startHttpSink (ns: string, listen = '0.0.0.0:8080'): Promise<HttpSinkHandle> {
    return startHttpSink(ns, listen, this.track)
  }

  /** Caddy inside `ns` with a Caddyfile; state kept in the lab directory. */
  startCaddy (ns: string, caddyfile: string, ports: number[]): Promise<CaddyHandle> {
    return startCaddy(ns, join(this.dir, `caddy-${this.processes.length}`), caddyfile, ports, this.track)
  }

  /** A bounded flood of mac1-valid handshake initiations from `ns` (test/helpers/handshake-flood.ts). */
  flood (ns: string, opts: FloodOptions): Promise<FloodResult> {
    return runFlood(ns, opts)
  }

  /** Stops every process (newest first), then deletes the namespaces and the temporary directory. */
  async destroy (): Promise<void> {
    if (this.destroyed) return
    this.destroyed = true
    const errors: string[] = []
    for (const p of [...this.processes].reverse()) {
      try { await p.stop() } catch (err) { errors.push(String(err)) }
    }
    for (const ns of [...this.namespaces].reverse()) {
      try { await deleteNetns(ns) } catch (err) { errors.push(String(err)) }
    }
    this.cleanupFiles()
    this.tornDown = true
    liveLabs.delete(this)
    if (errors.length > 0) throw new Error(`lab ${this.runId} cleanup: ${errors.join('; ')}`)
  }

  /** For exit and signal hooks: SIGKILL every group, then delete namespaces, synchronously. */
  destroySync (): void {
    if (this.tornDown) return
    this.destroyed = true
    this.tornDown = true
    for (const p of this.processes) p.killSync()
    for (const ns of this.namespaces) deleteNetnsSync(ns)
    this.cleanupFiles()
    liveLabs.delete(this)
  }

  private cleanupFiles (): void {
    for (let i = 0; i < this.interfaces; i++) rmSync(`/var/run/wireguard/${ifName(this.runId, 'w', i)}.sock`, { force: true })
    if (existsSync(this.dir)) rmSync(this.dir, { recursive: true, force: true })
    releaseRun(this.runId)
  }
}
