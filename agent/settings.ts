/**
 * The agent's settings: flags first, then CC_ environment variables, then defaults; validated once.
 * A bad value raises SettingsError naming the flag or variable it came from (exit status 2); so
 * does a token file that group or others may access.
 */
import { closeSync, fstatSync, openSync, readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import { join } from 'node:path'
import Joi from 'joi'
import { checkSetting, ConfigError } from '../proto/config-env.ts'
import { parseTarget, type ForwardTarget } from './forward.ts'
import type { TunnelMode } from './tunnel.ts'
import { REGION_NAME } from '../proto/api/tunnel.ts'
import { TRANSPORT_SETTINGS, type TransportOptions, type TransportSetting } from './transport.ts'

/** A bad flag or variable: a ConfigError whose field is where the value came from. */
export class SettingsError extends ConfigError {
  constructor (readonly source: string, message: string) {
    super(source, message)
    this.name = 'SettingsError'
  }
}

export interface AgentSettings {
  apiUrl: string
  /** The instance token, or null when none was given (only `status` can run without one). */
  token: string | null
  stateFile: string
  mode: TunnelMode
  target: ForwardTarget
  targetText: string
  tunnelPorts: number[]
  listenPort: number
  /** Loopback host:port of the status endpoint, or null (off). */
  statusListen: { host: string, port: number } | null
  interfaceName: string
  probeIntervalMs: number
  deadAfterMs: number
  backoffInitialMs: number
  backoffMaxMs: number
  logLevel: string | undefined
  /** Where the container runs (CC_AGENT_REGION): placement prefers gateways of this region; null: none. */
  region: string | null
  /** Userspace: UDP, TLS, or UDP with TLS as fallback (CC_AGENT_TRANSPORT and the CC_AGENT_TLS_* / UDP probe settings). */
  transport: TransportOptions
}

interface Setting {
  flag: string
  env: string
  schema: Joi.Schema
  help: string
}

const seconds = Joi.number().positive().max(86_400)
const port = Joi.number().integer().min(0).max(65535)

/** Every setting: its flag, its variable, its check, and one line of help. */
export const SETTINGS = {
  api: { flag: '--api', env: 'CC_API_URL', schema: Joi.string().uri({ scheme: ['http', 'https'] }).default('https://api.erugo.cloud/v1'), help: 'Cloud Connect API base URL' },
  token: { flag: '--token', env: 'CC_INSTANCE_TOKEN', schema: Joi.string().pattern(/^[A-Za-z0-9._~+/=-]{10,8192}$/).message('is not an instance token'), help: 'the instance token (prefer --token-file: flags show in ps)' },
  tokenFile: { flag: '--token-file', env: 'CC_INSTANCE_TOKEN_FILE', schema: Joi.string(), help: 'file holding the instance token' },
  state: { flag: '--state', env: 'CC_AGENT_STATE', schema: Joi.string(), help: 'state file: key pair, registration, status (mode 0600; default $CC_DATA_DIR/agent.json, CC_DATA_DIR=./data)' },
  mode: { flag: '--mode', env: 'CC_AGENT_MODE', schema: Joi.string().valid('userspace', 'kernel').default('userspace'), help: 'userspace (no privileges) or kernel (wg-quick, needs NET_ADMIN)' },
  target: { flag: '--target', env: 'CC_AGENT_TARGET', schema: Joi.string().default('http://127.0.0.1:80'), help: 'userspace: where tunnel connections go (Erugo\'s web server)' },
  tunnelPorts: { flag: '--tunnel-port', env: 'CC_AGENT_TUNNEL_PORTS', schema: Joi.string().pattern(/^\d{1,5}(,\d{1,5})*$/).message('must be a port or a comma-separated list of ports').default('80'), help: 'userspace: ports accepted on the tunnel address' },
  listenPort: { flag: '--listen-port', env: 'CC_AGENT_WG_PORT', schema: port.default(0), help: 'userspace: local UDP port (0 = any)' },
  statusListen: { flag: '--status-listen', env: 'CC_AGENT_STATUS_LISTEN', schema: Joi.string().default('127.0.0.1:51821'), help: 'loopback host:port of the status endpoint, or off' },
  interfaceName: { flag: '--interface', env: 'CC_AGENT_INTERFACE', schema: Joi.string().pattern(/^[A-Za-z0-9_=+.-]{1,15}$/).message('must be a WireGuard interface name (1-15 of A-Z a-z 0-9 _=+.-)').default('erugo-cc'), help: 'kernel: WireGuard interface name' },
  probeInterval: { flag: '--probe-interval', env: 'CC_AGENT_PROBE_INTERVAL', schema: seconds.default(10), help: 'seconds between round trips to the gateway' },
  deadAfter: { flag: '--dead-after', env: 'CC_AGENT_DEAD_AFTER', schema: seconds.default(35), help: 'seconds without an answer before reconnecting' },
  backoffInitial: { flag: '--backoff-initial', env: 'CC_AGENT_BACKOFF_INITIAL', schema: seconds.default(1), help: 'first retry delay ceiling, seconds' },
  backoffMax: { flag: '--backoff-max', env: 'CC_AGENT_BACKOFF_MAX', schema: seconds.default(60), help: 'longest retry delay, seconds' },
  transport: { flag: '--transport', env: 'CC_AGENT_TRANSPORT', schema: Joi.string().valid(...TRANSPORT_SETTINGS).default('auto'), help: 'userspace: auto (UDP, WireGuard over TLS when UDP gets no answer), udp or tls' },
  tlsFallbackAfter: { flag: '--tls-fallback-after', env: 'CC_AGENT_TLS_FALLBACK_AFTER', schema: seconds.default(5), help: 'userspace, auto: seconds UDP gets to complete a handshake before TLS is tried' },
  udpProbeInterval: { flag: '--udp-probe-interval', env: 'CC_AGENT_UDP_PROBE_INTERVAL', schema: seconds.default(300), help: 'userspace, auto: seconds between UDP handshake attempts while on TLS' },
  tlsPort: { flag: '--tls-port', env: 'CC_AGENT_TLS_PORT', schema: port.min(1).default(443), help: 'userspace: the gateways\' HTTPS port for WireGuard over TLS' },
  tlsServerName: { flag: '--tls-server-name', env: 'CC_AGENT_TLS_SERVER_NAME', schema: Joi.string().hostname(), help: 'userspace: TLS server name for WireGuard over TLS (default: the API URL\'s host)' },
  region: { flag: '--region', env: 'CC_AGENT_REGION', schema: Joi.string().pattern(REGION_NAME).message('must be lower-case letters, digits and . _ - (at most 64), like a gateway\'s CC_GATEWAY_REGION'), help: 'the region this container runs in: gateways of that region are preferred' },
  logLevel: { flag: '--log-level', env: 'CC_LOG_LEVEL', schema: Joi.string(), help: 'fatal, error, warn, info, debug, trace, silent' },
} satisfies Record<string, Setting>

export type SettingName = keyof typeof SETTINGS

export function describeSettings (): string {
  return Object.values(SETTINGS).map((s: Setting) => {
    const d = (s.schema.describe() as { flags?: { default?: unknown } }).flags?.default
    return `  ${`${s.flag} / ${s.env}`.padEnd(48)} ${s.help}${d === undefined ? '' : ` (default ${String(d)})`}`
  }).join('\n')
}

/** parseArgs options for every setting flag. */
export function settingFlags (): Record<string, { type: 'string' }> {
  return Object.fromEntries(Object.values(SETTINGS).map(s => [s.flag.slice(2), { type: 'string' as const }]))
}

const LOOPBACK_NAMES = new Set(['localhost', 'localhost.', 'ip6-localhost'])

export function isLoopbackHost (host: string): boolean {
  const h = host.replace(/^\[(.*)\]$/, '$1')
  if (LOOPBACK_NAMES.has(h.toLowerCase())) return true
  if (isIP(h) === 4) return h.startsWith('127.')
  return h === '::1'
}

export interface LoadOptions {
  /** Whether a token is required (run, test) or optional (status). */
  requireToken: boolean
}

export function loadSettings (flags: Record<string, string | undefined>, env: NodeJS.ProcessEnv, options: LoadOptions): AgentSettings {
  const value = (name: SettingName): { value: unknown, source: string } => {
    const s: Setting = SETTINGS[name]
    const fromFlag = flags[s.flag.slice(2)]
    const fromEnv = env[s.env]
    const raw = fromFlag ?? (fromEnv === '' ? undefined : fromEnv)
    const source = fromFlag !== undefined ? s.flag : s.env
    return { value: checkSetting(s.schema, raw, source, name === 'token', SettingsError), source }
  }
  const api = value('api')
  const apiUrl = (api.value as string).replace(/\/+$/, '')
  // Spec "Container Side": API communication over HTTPS only (plain HTTP for a loopback API or a lab).
  const apiHost = new URL(apiUrl).hostname
  if (apiUrl.startsWith('http:') && !isLoopbackHost(apiHost) && env.CC_AGENT_ALLOW_HTTP !== '1') {
    throw new SettingsError(api.source, `must be https:// (plain http:// only for a loopback API, or with CC_AGENT_ALLOW_HTTP=1) (got "${apiUrl}")`)
  }

  const token = readToken(value('token'), value('tokenFile'), flags)
  if (token === null && options.requireToken) {
    throw new SettingsError('--token', 'no instance token: give --token-file FILE, --token TOKEN, CC_INSTANCE_TOKEN_FILE or CC_INSTANCE_TOKEN')
  }

  const stateFile = (value('state').value as string | undefined) ?? join(env.CC_DATA_DIR === undefined || env.CC_DATA_DIR === '' ? './data' : env.CC_DATA_DIR, 'agent.json')
  const target = value('target')
  let parsedTarget: ForwardTarget
  try {
    parsedTarget = parseTarget(target.value as string)
  } catch (err) {
    throw new SettingsError(target.source, (err as Error).message)
  }
  const ports = value('tunnelPorts')
  const tunnelPorts = [...new Set((ports.value as string).split(',').map(Number))]
  if (tunnelPorts.some(p => p < 1 || p > 65535)) throw new SettingsError(ports.source, `ports are 1-65535 (got "${String(ports.value)}")`)

  const status = value('statusListen')
  let statusListen: AgentSettings['statusListen'] = null
  if (status.value !== 'off') {
    const m = /^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(status.value as string)
    if (m === null || Number(m[2]) > 65535) throw new SettingsError(status.source, `must be host:port on loopback, or off (got "${String(status.value)}")`)
    const host = m[1].replace(/^\[(.*)\]$/, '$1')
    // The endpoint answers without authentication: it must not be reachable from outside the container.
    if (!isLoopbackHost(host)) throw new SettingsError(status.source, `must be a loopback address such as 127.0.0.1 (got "${host}")`)
    statusListen = { host, port: Number(m[2]) }
  }
  const probeIntervalMs = (value('probeInterval').value as number) * 1000
  const deadAfter = value('deadAfter')
  const deadAfterMs = (deadAfter.value as number) * 1000
  if (deadAfterMs < probeIntervalMs) throw new SettingsError(deadAfter.source, 'must be at least the probe interval')
  const backoffInitialMs = (value('backoffInitial').value as number) * 1000
  const backoffMax = value('backoffMax')
  const backoffMaxMs = (backoffMax.value as number) * 1000
  if (backoffMaxMs < backoffInitialMs) throw new SettingsError(backoffMax.source, 'must be at least the initial backoff')
  return {
    apiUrl,
    token,
    stateFile,
    mode: value('mode').value as TunnelMode,
    target: parsedTarget,
    targetText: target.value as string,
    tunnelPorts,
    listenPort: value('listenPort').value as number,
    statusListen,
    interfaceName: value('interfaceName').value as string,
    probeIntervalMs,
    deadAfterMs,
    transport: {
      setting: value('transport').value as TransportSetting,
      fallbackAfterMs: (value('tlsFallbackAfter').value as number) * 1000,
      udpProbeIntervalMs: (value('udpProbeInterval').value as number) * 1000,
      tlsPort: value('tlsPort').value as number,
      // The API's name: a gateway has a certificate for api.<base> (an IP literal is no SNI).
      serverName: (value('tlsServerName').value as string | undefined) ?? (isIP(apiHost) === 0 ? apiHost : null),
    },
    backoffInitialMs,
    backoffMaxMs,
    logLevel: value('logLevel').value as string | undefined,
    region: (value('region').value as string | undefined) ?? null,
  }
}

/** --token, then --token-file, then CC_INSTANCE_TOKEN, then CC_INSTANCE_TOKEN_FILE. */
function readToken (token: { value: unknown, source: string }, file: { value: unknown, source: string }, flags: Record<string, string | undefined>): string | null {
  const fromFile = (path: string, source: string): string => {
    let fd: number
    try {
      fd = openSync(path, 'r')
    } catch (err) {
      throw new SettingsError(source, `cannot read the token file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    }
    let text: string
    try {
      // The mode of the file actually opened (no window between a check and the read).
      const mode = fstatSync(fd).mode & 0o777
      // The token is a bearer credential: group and others must not be able to read (or change) it.
      if ((mode & 0o077) !== 0) {
        throw new SettingsError(source, `the token file ${path} has mode 0${mode.toString(8).padStart(3, '0')}: group and others must have no access (chmod 600 ${path})`)
      }
      text = readFileSync(fd, 'utf8').trim()
    } catch (err) {
      if (err instanceof SettingsError) throw err
      throw new SettingsError(source, `cannot read the token file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
    } finally {
      closeSync(fd)
    }
    const checked = SETTINGS.token.schema.validate(text)
    if (checked.error !== undefined) throw new SettingsError(source, `the file ${path} does not hold an instance token`)
    return text
  }
  if (flags.token !== undefined) return token.value as string
  if (flags['token-file'] !== undefined) return fromFile(file.value as string, file.source)
  if (token.value !== undefined) return token.value as string
  if (file.value !== undefined) return fromFile(file.value as string, file.source)
  return null
}
