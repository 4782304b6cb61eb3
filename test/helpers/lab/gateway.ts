/**
 * Our gateway (`cloud-connect gateway --config FILE`) running inside a lab namespace, with helpers
 * to read its /status and /metrics endpoints from inside that namespace.
 */
import { writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { LabProcess, runOk, StopWaiting, waitUntil } from './process.ts'
import { inNetns, portBound } from './netns.ts'

export const REPO_ROOT = resolve(fileURLToPath(import.meta.url), '../../../..')

export interface GatewayPeerConfig {
  publicKey: string
  allowedIPs: string[]
  endpoint?: string
  /** seconds */
  persistentKeepalive?: number
  /** HTTPS hostnames the edge routes to this peer, its upstream port and label. */
  hostnames?: string[]
  port?: number
  name?: string
}

/** The static configuration file of `cloud-connect gateway --config FILE`. */
export interface GatewayConfig {
  privateKey: string
  listenPort: number
  listenAddress?: string
  address?: string
  peers: GatewayPeerConfig[]
  metricsListen?: string
  testing?: { rekeyAfterTimeMs?: number } & Record<string, unknown>
  faults?: Record<string, unknown>
  [key: string]: unknown
}

export interface GatewayOptions {
  logLevel?: string
  readyTimeoutMs?: number
  /** Extra command-line arguments after `--config FILE`. */
  args?: string[]
}

export class Gateway {
  readonly ns: string
  readonly config: GatewayConfig
  readonly configPath: string
  readonly process: LabProcess

  private constructor (ns: string, config: GatewayConfig, configPath: string, proc: LabProcess) {
    this.ns = ns; this.config = config; this.configPath = configPath; this.process = proc
  }

  /**
   * Writes the config to `dir`, starts the gateway in `ns`, and resolves once its UDP port is bound
   * (and, with metricsListen, /status answers). Rejects with the logs if it exits or times out.
   */
  static async start (ns: string, name: string, dir: string, config: GatewayConfig, opts: GatewayOptions, track: (p: LabProcess) => void): Promise<Gateway> {
    const configPath = join(dir, `${name}.json`)
    writeFileSync(configPath, JSON.stringify(config, null, 2), { mode: 0o600 })
    const [cmd, args] = inNetns(ns, process.execPath, [
      join(REPO_ROOT, 'bin/cloud-connect.js'), 'gateway', '--config', configPath,
      '--log-level', opts.logLevel ?? 'debug', ...(opts.args ?? []),
    ])
    const proc = new LabProcess(name, cmd, args, { cwd: REPO_ROOT })
    track(proc)
    const gw = new Gateway(ns, config, configPath, proc)
    await waitUntil(`${name} to listen on UDP ${config.listenPort}`, async () => {
      if (!proc.running) throw new StopWaiting(`${name} exited (${proc.exitStatus?.code ?? proc.exitStatus?.signal})`)
      if (!await portBound(ns, 'udp', config.listenPort)) return false
      if (config.metricsListen !== undefined) await gw.status()
      return true
    }, opts.readyTimeoutMs ?? 20_000, 100).catch(err => {
      throw new Error(`${(err as Error).message}\n--- ${name} output ---\n${proc.output().slice(-4000)}`)
    })
    return gw
  }

  private async get (path: string): Promise<string> {
    if (this.config.metricsListen === undefined) throw new Error('gateway config has no metricsListen')
    const [c, a] = inNetns(this.ns, 'curl', ['-sS', '--fail', '--max-time', '5', `http://${this.config.metricsListen}${path}`])
    return runOk(c, a, { timeoutMs: 10_000 })
  }

  /** GET /status, parsed. */
  async status (): Promise<Record<string, unknown>> {
    return JSON.parse(await this.get('/status')) as Record<string, unknown>
  }

  /** GET /metrics (Prometheus text). */
  async metrics (): Promise<string> {
    return this.get('/metrics')
  }

  logs (): string {
    return this.process.output()
  }

  async stop (): Promise<void> {
    await this.process.stop(5000)
  }
}

/**
 * Sum of the Prometheus samples whose name is `name` (any labels) and whose labels contain every
 * `label="value"` pair given. 0 when absent.
 */
export function metricValue (text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line)
    if (m === null || m[1] !== name) continue
    const lbl = m[2] ?? ''
    if (Object.entries(labels).every(([k, v]) => lbl.includes(`${k}="${v}"`))) sum += Number(m[3])
  }
  return sum
}
