/**
 * Test helpers for the agent: `cloud-connect start` spawned on loopback (temp CC_DATA_DIR, chosen
 * or ephemeral ports), an account and an instance provisioned through the public API, and
 * `cloud-connect agent` spawned against it. No root needed.
 */
import type { Test } from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { json } from '../helpers/cli-process.ts'
import { startOrigin, type Origin } from './origin.ts'

export const ROOT = resolve(fileURLToPath(import.meta.url), '../../..')
export const CLI = join(ROOT, 'bin/cloud-connect.js')

export function tempDir (t: Test, prefix = 'cc-agent-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

export { freePort } from '../helpers/ports.ts'

export class Proc {
  readonly child: ChildProcess
  output = ''
  readonly exited: Promise<number | null>

  constructor (readonly name: string, args: string[], env: NodeJS.ProcessEnv, t: Test) {
    this.child = spawn(process.execPath, [CLI, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    this.child.stdout!.setEncoding('utf8').on('data', (c: string) => { this.output += c })
    this.child.stderr!.setEncoding('utf8').on('data', (c: string) => { this.output += c })
    this.exited = new Promise(resolve => { this.child.on('exit', code => { resolve(code) }) })
    t.teardown(async () => {
      if (this.child.exitCode === null && this.child.signalCode === null) {
        this.child.kill('SIGKILL')
        await this.exited
      }
    })
  }

  get running (): boolean {
    return this.child.exitCode === null && this.child.signalCode === null
  }

  /** Waits for `pattern` in the output (after `from`); rejects on exit or timeout with the output. */
  async waitFor (pattern: RegExp, timeoutMs = 60_000, from = 0): Promise<RegExpExecArray> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const m = pattern.exec(this.output.slice(from))
      if (m !== null) return m
      if (!this.running) throw new Error(`${this.name} exited (${String(this.child.exitCode)}) before ${String(pattern)}:\n${this.output.slice(-4000)}`)
      if (Date.now() > deadline) throw new Error(`${this.name}: no ${String(pattern)} within ${timeoutMs} ms:\n${this.output.slice(-4000)}`)
      await delay(50)
    }
  }

  async stop (signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 30_000): Promise<number | null> {
    if (!this.running) return await this.exited
    this.child.kill(signal)
    const timer = setTimeout(() => { this.child.kill('SIGKILL') }, timeoutMs)
    const code = await this.exited
    clearTimeout(timer)
    return code
  }
}

export async function delay (ms: number): Promise<void> {
  await new Promise(resolve => setTimeout(resolve, ms))
}

export interface ServicePorts { api: number, wg: number, https: number }

export interface Service {
  proc: Proc
  /** `http://127.0.0.1:<port>/v1` */
  api: string
  wgPort: number
  httpsPort: number
  ca: string
  outbox: string
  dataDir: string
}

/** The environment `cloud-connect start` gets from these helpers (also for CLI commands on its data). */
export function serviceEnv (dataDir: string, ports: Partial<ServicePorts>, extra: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CC_DATA_DIR: dataDir,
    CC_API_HOST: '127.0.0.1',
    CC_API_PORT: String(ports.api ?? 0),
    CC_HTTP_PORT: '0',
    CC_HTTPS_PORT: String(ports.https ?? 0),
    CC_WG_PORT: String(ports.wg ?? 0),
    CC_EDGE_HOST: '127.0.0.1',
    CC_WG_HOST: '127.0.0.1',
    CC_ARGON2_MEMORY_KIB: '64',
    CC_ARGON2_TIME_COST: '1',
    CC_LOG_LEVEL: 'info',
    CC_REPORT_INTERVAL: '0.5',
  }
  for (const name of ['DATABASE_URL', 'CC_BASE_DOMAIN', 'CC_PUBLIC_URL', 'CC_GATEWAY_ENDPOINT', 'CC_GATEWAY_PUBLIC_KEY', 'CC_SMTP_URL']) delete env[name]
  return { ...env, ...extra }
}

/** `cloud-connect start`; resolves once its banner is printed. `env` adds settings (Stripe, DNS, CC_PUBLIC_URL). */
export async function startService (t: Test, dataDir: string, ports: Partial<ServicePorts> = {}, env: NodeJS.ProcessEnv = {}): Promise<Service> {
  const proc = new Proc('start', ['start'], serviceEnv(dataDir, ports, env), t)
  await proc.waitFor(/^ {2}Data /m, 120_000)
  const find = (re: RegExp): RegExpExecArray => {
    const m = re.exec(proc.output)
    if (m === null) throw new Error(`no ${String(re)} in:\n${proc.output}`)
    return m
  }
  return {
    proc,
    api: `${find(/^ {2}API +(http:\/\/\S+)\/v1 /m)[1]}/v1`,
    wgPort: Number(find(/^ {2}WireGuard +localhost:(\d+) /m)[1]),
    httpsPort: Number(find(/^ {2}HTTPS +https:\/\/<subdomain>\.localhost:(\d+)/m)[1]),
    ca: readFileSync(find(/^ {2}CA certificate +(\S+)/m)[1], 'utf8'),
    // Empty when mail goes through CC_SMTP_URL.
    outbox: /^ {2}Mail outbox +(\S+)$/m.exec(proc.output)?.[1] ?? '',
    dataDir,
  }
}

export { json }

export interface Instance {
  id: string
  token: string
  tunnelIp: string
  hostname: string
  /** The owner's access token (for regenerate-token and the like). */
  access: string
}

let accounts = 0

/**
 * Registers and verifies an account (link from the outbox, or from `mails()` when the service
 * sends over SMTP), logs in and creates an instance.
 */
export async function createInstance (service: Service, subdomain: string, mails?: () => string[]): Promise<Instance> {
  const email = `agent-${process.pid}-${accounts++}@example.com`
  const password = 'correct horse battery'
  const reg = await json(`${service.api}/auth/register`, 'POST', { name: 'Agent Test', email, password, password_confirmation: password, accept_terms: true, accept_privacy: true, accept_marketing: false, erugo_version: '1.0.0' })
  if (reg.status !== 201) throw new Error(`register: ${reg.status} ${JSON.stringify(reg.body)}`)
  let verify: string | undefined
  for (let i = 0; i < 200 && verify === undefined; i++) {
    const texts = mails?.() ?? (existsSync(service.outbox) ? readdirSync(service.outbox) : []).map(f => readFileSync(join(service.outbox, f), 'utf8'))
    for (const text of texts) {
      if (text.includes(email)) verify ??= /verify-email\?token=([^\s&]+)/.exec(text)?.[1]
    }
    if (verify === undefined) await delay(50)
  }
  if (verify === undefined) throw new Error('no verification mail')
  const verified = await json(`${service.api}/auth/verify-email?token=${verify}`)
  if (verified.status !== 200) throw new Error(`verify: ${verified.status}`)
  const login = await json(`${service.api}/auth/login`, 'POST', { email, password })
  if (login.status !== 200) throw new Error(`login: ${login.status}`)
  const access = login.body.access_token as string
  const created = await json(`${service.api}/instances`, 'POST', { name: 'Home', subdomain }, access)
  if (created.status !== 201) throw new Error(`create instance: ${created.status} ${JSON.stringify(created.body)}`)
  return {
    id: created.body.instance.id,
    token: created.body.credentials.instance_token,
    tunnelIp: created.body.instance.tunnel_ip,
    hostname: created.body.instance.full_domain,
    access,
  }
}

export async function tunnelStatus (service: Service, token: string): Promise<string | undefined> {
  const r = await json(`${service.api}/tunnel/status`, 'GET', undefined, token)
  return r.body?.tunnel_status
}

export interface AgentOptions {
  api: string
  token: string
  dir: string
  target?: string
  extra?: string[]
  env?: NodeJS.ProcessEnv
}

/** Fast probing and short backoff so that faults show within seconds. */
export const FAST = ['--probe-interval', '0.5', '--dead-after', '3', '--backoff-initial', '0.2', '--backoff-max', '2']

/** `cloud-connect agent` with its token in a file, state in `dir`, status endpoint on an ephemeral port. */
export function startAgent (t: Test, o: AgentOptions, subcommand: string[] = []): Proc {
  const tokenFile = join(o.dir, 'token')
  writeFileSync(tokenFile, o.token + '\n', { mode: 0o600 })
  const env: NodeJS.ProcessEnv = { ...process.env, ...o.env }
  for (const name of Object.keys(env)) if (name.startsWith('CC_') && o.env?.[name] === undefined) delete env[name]
  const args = ['agent', ...subcommand, '--api', o.api, '--token-file', tokenFile, '--state', join(o.dir, 'agent.json'), '--status-listen', '127.0.0.1:0',
    ...(o.target === undefined ? [] : ['--target', o.target]), ...FAST, ...(o.extra ?? [])]
  return new Proc(`agent ${subcommand.join(' ')}`.trim(), args, env, t)
}

export interface ConnectedAgent { dir: string, service: Service, instance: Instance, origin: Origin, agent: Proc }

/** A fresh service with instance `subdomain`, a local origin, and an agent serving it: resolves once the tunnel is up. */
export async function connectedAgent (t: Test, subdomain: string): Promise<ConnectedAgent> {
  const dir = tempDir(t)
  const service = await startService(t, join(dir, 'service'))
  const instance = await createInstance(service, subdomain)
  const origin = await startOrigin(t)
  const agent = startAgent(t, { api: service.api, token: instance.token, dir, target: `http://127.0.0.1:${origin.port}` })
  await agent.waitFor(/"msg":"tunnel up: the gateway answers"/, 90_000)
  return { dir, service, instance, origin, agent }
}

/** Polls `probe` until it returns something other than undefined/false. */
export async function waitUntil<T> (what: string, probe: () => Promise<T | undefined | false> | T | undefined | false, timeoutMs: number, intervalMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await delay(intervalMs)
  }
}
