/**
 * The container side of Cloud Connect (`cloud-connect agent`): the agent itself (agent.ts), its two
 * tunnel modes (userspace.ts: no privileges; kernel.ts: wg-quick), the status endpoint and the
 * checks. This file wires them for the three subcommands: run, status, test.
 *
 *   const code = await runAgent(settings, logger, signals)   // until SIGTERM/SIGINT or a fatal error
 *   const report = await readStatus(settings)                // StatusReport, running agent or state file
 *   const result = await runTest(settings, logger)           // TestReport
 */
import process from 'node:process'
import type http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import { Agent, type GatewayStatus, type StatusReport } from './agent.ts'
import { formatHostPort } from '../proto/net/address.ts'
import { ApiClient } from './api.ts'
import { runChecks, type CheckedTunnel, type TestReport } from './checks.ts'
import { EXIT_FAILURE } from './exit-codes.ts'
import { KernelTunnel } from './kernel.ts'
import type { AgentSettings } from './settings.ts'
import { loadOrCreateState, readState, writeState } from './state.ts'
import { askRunningAgent, closeStatusServer, startStatusServer } from './status-server.ts'
import { checkRegistration, type Tunnel } from './tunnel.ts'
import { UserspaceTunnel } from './userspace.ts'
import { decodeKey } from '../proto/noise/keys.ts'
import type { TunnelConfig } from '../proto/api/tunnel.ts'
import { moduleLogger } from '../proto/log.ts'

export { Agent, FatalError, type GatewayStatus, type StatusReport } from './agent.ts'
export { ApiClient, ApiError, type ApiFailure } from './api.ts'
export { Backoff } from './backoff.ts'
export { runChecks, formatReport, type TestReport, type CheckStep } from './checks.ts'
export * from './exit-codes.ts'
export { loadSettings, describeSettings, settingFlags, SettingsError, type AgentSettings } from './settings.ts'
export { checkRegistration, planFromConfig, TunnelConfigError, TunnelUnavailableError, type Tunnel, type TunnelPlan, type TunnelHealth } from './tunnel.ts'
export { UserspaceTunnel } from './userspace.ts'
export { KernelTunnel, wgQuickConfig, wgSyncConfig } from './kernel.ts'

export function createTunnel (settings: AgentSettings, privateKey: Buffer, logger: Logger): Tunnel {
  if (settings.mode === 'kernel') {
    return new KernelTunnel({ privateKey, interfaceName: settings.interfaceName, stateFile: settings.stateFile, logger: moduleLogger(logger, 'kernel') })
  }
  return new UserspaceTunnel({ privateKey, target: settings.target, tunnelPorts: settings.tunnelPorts, listenPort: settings.listenPort, transport: settings.transport, logger: moduleLogger(logger, 'userspace') })
}

export interface Signals {
  on (signal: 'SIGTERM' | 'SIGINT', handler: () => void): void
  off (signal: 'SIGTERM' | 'SIGINT', handler: () => void): void
}

/** What `agent test` tries besides UDP: WireGuard over TLS to each gateway's HTTPS port, as the agent would. */
function checkTransports (settings: AgentSettings): NonNullable<Parameters<typeof runChecks>[0]['tls']> {
  const t = settings.transport
  return { port: t.tlsPort, serverName: t.serverName, ...(t.proxyFor === undefined ? {} : { proxyFor: t.proxyFor }), udpRequired: settings.mode === 'kernel' }
}

/** Runs the agent until SIGTERM/SIGINT or a fatal error; resolves with the exit status. */
export async function runAgent (settings: AgentSettings, logger: Logger, signals: Signals = process): Promise<number> {
  let agent: Agent | null = null
  let server: http.Server | null = null
  if (settings.statusListen !== null) {
    const { host, port } = settings.statusListen
    try {
      server = await startStatusServer(host, port, {
        status: () => agent?.report() ?? null,
        test: async () => {
          const running = agent
          if (running === null) return null
          return await runChecks({
            api: running.apiClient,
            tunnel: async () => {
              const current = running.currentTunnel
              const lastError = running.report().last_error
              if (current === null) throw new Error(`the agent has no tunnel yet${lastError === null ? '' : `: ${lastError}`}`)
              return { ...current, release: async () => {} }
            },
            target: settings.mode === 'userspace' ? settings.target : null,
    tls: checkTransports(settings),
          })
        },
      }, logger)
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code
      logger.error({ err }, `cannot open the status endpoint ${formatHostPort(host, port)}${code === 'EADDRINUSE' ? ': in use (is another agent running? --status-listen off runs without it)' : ''}`)
      return EXIT_FAILURE
    }
    // With port 0 the state file must name the port actually bound.
    const bound = server.address() as AddressInfo
    settings = { ...settings, statusListen: { host, port: bound.port } }
    logger.info({ statusEndpoint: `http://${formatHostPort(host, bound.port)}/status` }, 'status endpoint listening')
  }
  const stop = (): void => { agent?.stop() }
  signals.on('SIGTERM', stop)
  signals.on('SIGINT', stop)
  try {
    const running = new Agent({ settings, logger, createTunnel: key => createTunnel(settings, key, logger) })
    agent = running
    return await running.run()
  } finally {
    signals.off('SIGTERM', stop)
    signals.off('SIGINT', stop)
    if (server !== null) await closeStatusServer(server)
  }
}

/** The running agent's report (asked over its status endpoint), else what the state file says. */
export async function readStatus (settings: AgentSettings): Promise<StatusReport> {
  const state = readState(settings.stateFile)
  const listen = state?.status_listen ?? (settings.statusListen === null ? null : formatHostPort(settings.statusListen.host, settings.statusListen.port))
  if (listen !== null) {
    const live = await askRunningAgent<StatusReport>(listen, '/status', 3_000)
    if (live !== null && (state === null || live.public_key === state.public_key)) return live
  }
  const alive = state?.pid != null && state.pid !== process.pid && processAlive(state.pid)
  const status = state === null ? 'disconnected' : alive ? state.status : state.status === 'error' ? 'error' : 'disconnected'
  const reg = state?.registration ?? null
  return {
    status,
    last_error: status === 'error' || alive ? state?.last_error ?? null : null,
    subdomain: reg?.domains.subdomain ?? null,
    custom_domains: reg?.domains.custom_domains ?? [],
    public_key: state?.public_key ?? null,
    tunnel_ip: reg === null ? null : reg.tunnel_config.interface.address.split('/')[0],
    gateway_endpoint: reg?.tunnel_config.peer.endpoint ?? null,
    gateways: reg === null ? [] : savedGateways(reg.tunnel_config),
    mode: state?.mode ?? null,
    transport: null,
    running: alive,
    pid: alive ? state.pid : null,
    since: state?.since ?? new Date().toISOString(),
    last_handshake_at: null,
    cloud_status: null,
    api_url: state?.api_url ?? null,
  }
}

/**
 * The checks: inside the running agent when one answers on its status endpoint; otherwise here,
 * with a temporary userspace tunnel on the state file's key (registering it, as the agent would).
 */
export async function runTest (settings: AgentSettings, logger: Logger): Promise<TestReport> {
  const state = readState(settings.stateFile)
  const listen = state?.status_listen ?? (settings.statusListen === null ? null : formatHostPort(settings.statusListen.host, settings.statusListen.port))
  if (listen !== null && state !== null) {
    const live = await askRunningAgent<StatusReport>(listen, '/status', 3_000)
    if (live !== null && live.public_key === state.public_key) {
      const report = await askRunningAgent<TestReport>(listen, '/test', 60_000)
      if (report !== null) return report
    }
  }
  const api = new ApiClient({ baseUrl: settings.apiUrl, token: settings.token!, region: settings.region })
  return await runChecks({
    api,
    target: settings.mode === 'userspace' ? settings.target : null,
    tls: checkTransports(settings),
    tunnel: async (): Promise<CheckedTunnel> => {
      const current = loadOrCreateState(settings.stateFile)
      const response = await api.register(current.public_key)
      const { plan, registration } = checkRegistration(response)
      current.registration = { ...registration, registered_at: new Date().toISOString() }
      current.api_url = settings.apiUrl
      writeState(settings.stateFile, current)
      const tunnel = new UserspaceTunnel({ privateKey: decodeKey(current.private_key), target: settings.target, tunnelPorts: [], listenPort: 0, transport: { setting: 'udp' }, logger: moduleLogger(logger, 'test') })
      try {
        await tunnel.apply(plan)
      } catch (err) {
        await tunnel.close()
        throw new Error(`cannot resolve the gateway ${plan.endpointHost}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
      }
      return { tunnel, plan, release: async () => { await tunnel.close() } }
    },
  })
}

/** The gateways the state file names (`peers`, or the one `peer` of an older control plane); none known to be connected. */
function savedGateways (config: TunnelConfig): GatewayStatus[] {
  // The state file is ours, but may have been edited by hand: anything odd shows no gateways.
  try {
    return gatewaysOf(config)
  } catch {
    return []
  }
}

function gatewaysOf (config: TunnelConfig): GatewayStatus[] {
  const peers = Array.isArray(config.peers) && config.peers.length > 0
    ? config.peers
    : [{ ...config.peer, gateway_id: null, role: 'primary' as const, region: null }]
  return peers.map(p => ({
    id: p.gateway_id,
    role: p.role,
    region: p.region ?? null,
    endpoint: p.endpoint,
    public_key: p.public_key,
    address: p.allowed_ips.split('/')[0],
    last_handshake_at: null,
    connected: false,
    transport: null,
  }))
}

function processAlive (pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}
