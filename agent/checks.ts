/**
 * `cloud-connect agent test`: each step of a working connection checked on its own, with a verdict
 * in plain language, so an Erugo admin sees which part to fix.
 *
 *   api     the API answers at all (network, URL, TLS)
 *   token   the instance token is accepted
 *   udp     a WireGuard handshake with the gateway completes over UDP (outbound UDP allowed)
 *   tls_alpn     WireGuard over TLS: the gateway's HTTPS port takes the ALPN protocol cc-wireguard/1
 *   tls_upgrade  WireGuard over TLS: the gateway's HTTPS port takes the HTTP/1.1 upgrade
 *   tunnel  a round trip through the tunnel to the gateway's tunnel address
 *   target  the local web server accepts connections (userspace mode)
 *
 * `udp` and `tunnel` run for every gateway placed for the instance (each step names its gateway):
 * a backup that cannot be reached fails the test even while the primary carries the traffic.
 * The transports (udp, tls_alpn, tls_upgrade) each say whether they work; in userspace mode one
 * that works is enough for the gateway, in kernel mode (wg-quick) it must be UDP.
 */
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import { ApiError, type ApiClient } from './api.ts'
import type { ForwardTarget } from './forward.ts'
import { planGateways, type GatewayPlan, type Tunnel, type TunnelPlan } from './tunnel.ts'
import { proxyFromEnv, tryStream } from './transport.ts'
import { formatHostPort } from '../proto/net/address.ts'

export type StepName = 'api' | 'token' | 'udp' | 'tls_alpn' | 'tls_upgrade' | 'tunnel' | 'target'
export type StepResult = 'pass' | 'fail' | 'skip'

export interface CheckStep {
  step: StepName
  title: string
  result: StepResult
  message: string
  /** For `udp` and `tunnel`: the gateway checked (its id, or its endpoint without one). */
  gateway?: string
}

export interface TestReport {
  ok: boolean
  /** The API said 401: the token is the problem (exit status 3). */
  token_rejected: boolean
  steps: CheckStep[]
}

export interface CheckedTunnel {
  tunnel: Tunnel
  plan: TunnelPlan
  /** Called when the checks are done (a temporary tunnel closes here). */
  release (): Promise<void>
}

export interface CheckContext {
  api: ApiClient
  /** The tunnel to check: the running agent's, or a temporary one. Throws with a plain reason. */
  tunnel: () => Promise<CheckedTunnel>
  target: ForwardTarget | null
  handshakeTimeoutMs?: number
  /** WireGuard over TLS to each gateway's HTTPS port; absent: not checked (and UDP is required). */
  tls?: { port: number, serverName: string | null, proxyFor?: (host: string) => string | null, timeoutMs?: number, udpRequired: boolean }
}

const TRANSPORT_STEPS: ReadonlySet<StepName> = new Set(['udp', 'tls_alpn', 'tls_upgrade'])

const TITLES: Record<StepName, string> = {
  api: 'API reachable',
  token: 'Instance token valid',
  udp: 'Gateway reachable over UDP',
  tls_alpn: 'WireGuard over TLS (ALPN)',
  tls_upgrade: 'WireGuard over TLS (HTTP upgrade)',
  tunnel: 'Round trip through the tunnel',
  target: 'Local web server',
}

/** A handshake this recent proves UDP works (the cloud's own freshness window). */
const HANDSHAKE_FRESH_MS = 180_000

export async function runChecks (ctx: CheckContext): Promise<TestReport> {
  const steps: CheckStep[] = []
  const add = (step: StepName, result: StepResult, message: string): void => { steps.push({ step, title: TITLES[step], result, message }) }
  let tokenRejected = false

  const started = performance.now()
  let apiOk = false
  let tokenOk = false
  try {
    const status = await ctx.api.status()
    add('api', 'pass', `the API at ${ctx.api.baseUrl} answered in ${ms(performance.now() - started)}`)
    add('token', 'pass', `the instance token is valid (${status.domains.subdomain.domain}; the cloud sees the tunnel as ${status.tunnel_status})`)
    apiOk = tokenOk = true
  } catch (err) {
    const e = err as ApiError
    if (!(err instanceof ApiError) || e.failure === 'unreachable') {
      add('api', 'fail', `${e.message}. Check the API URL and that this container may make outbound HTTPS connections.`)
    } else if (e.failure === 'unavailable') {
      add('api', 'fail', `${e.message}; try again in a minute.`)
    } else {
      apiOk = true
      add('api', 'pass', `the API at ${ctx.api.baseUrl} answered in ${ms(performance.now() - started)}`)
      if (e.failure === 'token_rejected') {
        tokenRejected = true
        add('token', 'fail', 'the API rejected the instance token: it was regenerated or its instance was deleted. Copy the current token from the Cloud Connect dashboard.')
      } else {
        add('token', 'fail', e.message)
      }
    }
  }
  if (!apiOk) add('token', 'skip', 'needs the API')

  let checked: CheckedTunnel | null = null
  if (tokenOk) {
    try {
      checked = await ctx.tunnel()
    } catch (err) {
      add('udp', 'fail', (err as Error).message)
    }
  } else {
    add('udp', 'skip', 'needs a valid token')
  }
  try {
    if (checked !== null) {
      const tunnel = checked.tunnel
      const gateways = planGateways(checked.plan)
      const results = await Promise.all(gateways.map(async g => {
        const [steps, tls] = await Promise.all([checkGateway(tunnel, g, ctx.handshakeTimeoutMs ?? 10_000), checkTls(g, ctx.tls)])
        return [steps[0], ...tls, ...steps.slice(1)]
      }))
      for (let i = 0; i < gateways.length; i++) {
        const gateway = gateways.length > 1 || gateways[i].gatewayId !== null ? gatewayName(gateways[i]) : undefined
        for (const [step, result, message] of results[i]) steps.push({ step, title: TITLES[step], result, message, ...(gateway === undefined ? {} : { gateway }) })
      }
    } else {
      add('tunnel', 'skip', 'needs a tunnel')
    }
  } finally {
    await checked?.release()
  }

  if (ctx.target !== null) {
    const where = `${ctx.target.host}:${ctx.target.port}`
    if (await canConnect(ctx.target, 3_000)) add('target', 'pass', `${where} accepts connections`)
    else add('target', 'fail', `nothing accepts connections at ${where}: is Erugo's web server running there?`)
  }
  // A transport that fails is tolerated while another of its gateway works (userspace mode; in
  // kernel mode UDP is the only one wg-quick has).
  const tolerated = (s: CheckStep): boolean => ctx.tls !== undefined && TRANSPORT_STEPS.has(s.step) && !(s.step === 'udp' && ctx.tls.udpRequired) &&
    steps.some(o => o.gateway === s.gateway && TRANSPORT_STEPS.has(o.step) && o.result === 'pass')
  return { ok: steps.every(s => s.result === 'pass' || (s.result === 'fail' && tolerated(s))), token_rejected: tokenRejected, steps }
}

function gatewayName (g: GatewayPlan): string {
  const where = formatHostPort(g.endpointHost, g.endpointPort)
  return g.gatewayId === null ? where : `${g.gatewayId} (${g.role}, ${where})`
}

/** The tls_alpn and tls_upgrade steps for one gateway (none without `tls`). */
async function checkTls (g: GatewayPlan, tls: CheckContext['tls']): Promise<Array<[StepName, StepResult, string]>> {
  if (tls === undefined) return []
  const proxy = (tls.proxyFor ?? proxyFromEnv)(g.endpointHost)
  const where = `${g.endpointHost.includes(':') ? `[${g.endpointHost}]` : g.endpointHost}:${tls.port}${proxy === null ? '' : ` through the proxy ${proxyHost(proxy)}`}`
  const options = { host: g.endpointHost, port: tls.port, servername: tls.serverName ?? g.endpointHost, proxy, timeoutMs: tls.timeoutMs ?? 5_000 }
  const [alpn, upgrade] = await Promise.all([tryStream({ ...options, via: 'alpn' }), tryStream({ ...options, via: 'upgrade' })])
  return [
    ['tls_alpn', alpn.ok ? 'pass' : 'fail', alpn.ok ? `${where} takes WireGuard over TLS (ALPN cc-wireguard/1)` : alpn.error],
    ['tls_upgrade', upgrade.ok ? 'pass' : 'fail', upgrade.ok ? `${where} takes WireGuard over TLS (HTTP/1.1 upgrade)` : upgrade.error],
  ]
}

function proxyHost (proxy: string): string {
  try { return new URL(proxy.includes('://') ? proxy : `http://${proxy}`).host } catch { return 'from HTTPS_PROXY' }
}

/** The udp and tunnel steps for one gateway. */
async function checkGateway (tunnel: Tunnel, g: GatewayPlan, timeoutMs: number): Promise<Array<[StepName, StepResult, string]>> {
  const endpoint = formatHostPort(g.endpointHost, g.endpointPort)
  const which = g.gatewayId === null ? 'the gateway' : `gateway ${g.gatewayId} (${g.role})`
  const handshakeAt = await waitForHandshake(tunnel, g, timeoutMs)
  if (handshakeAt === null) {
    return [
      ['udp', 'fail', `no WireGuard handshake with ${which} at ${endpoint} within ${Math.round(timeoutMs / 1000)} s: outbound UDP to port ${g.endpointPort} is probably blocked by a firewall${g.gatewayId === null ? '' : ', or that gateway is down'}`],
      ['tunnel', 'skip', 'needs a handshake'],
    ]
  }
  const health = gatewayHealth(tunnel, g)
  const resolved = health?.endpoint ?? null
  const steps: Array<[StepName, StepResult, string]> = health?.transport === 'tls'
    ? [['udp', 'fail', `no answer from ${which} at ${endpoint} over UDP: the tunnel runs over WireGuard over TLS`]]
    : [['udp', 'pass', `WireGuard handshake with ${which} at ${endpoint}${resolved === null ? '' : ` (${resolved})`} ${ago(handshakeAt)}`]]
  let rtt: number | null = null
  for (let i = 0; i < 3 && rtt === null; i++) rtt = await tunnel.probe(2_000, g.gatewayAddress)
  if (rtt !== null) steps.push(['tunnel', 'pass', `${which === 'the gateway' ? 'the gateway\'s' : `${which}'s`} tunnel address ${g.gatewayAddress} answered through the tunnel in ${ms(rtt)}`])
  else steps.push(['tunnel', 'fail', `the handshake worked but ${g.gatewayAddress} did not answer through the tunnel: the gateway may be overloaded; try again`])
  return steps
}

function gatewayHealth (tunnel: Tunnel, g: GatewayPlan): { lastHandshakeAt: number | null, endpoint: string | null, transport: 'udp' | 'tls' } | undefined {
  return tunnel.gateways().find(h => h.publicKey === g.peerPublicKey)
}

/** The gateway's latest handshake if it is fresh; otherwise nudges it with probes and waits for one. */
async function waitForHandshake (tunnel: Tunnel, g: GatewayPlan, timeoutMs: number): Promise<number | null> {
  const fresh = (): number | null => {
    const at = gatewayHealth(tunnel, g)?.lastHandshakeAt ?? null
    return at !== null && Date.now() - at < HANDSHAKE_FRESH_MS ? at : null
  }
  const deadline = Date.now() + timeoutMs
  let at = fresh()
  while (at === null && Date.now() < deadline) {
    const started = Date.now()
    await tunnel.probe(Math.min(1_000, Math.max(1, deadline - Date.now())), g.gatewayAddress)
    at = fresh()
    // A probe that could not even be sent returns at once: do not spin.
    if (at === null && Date.now() - started < 100) await new Promise(resolve => setTimeout(resolve, 200))
  }
  return at
}

async function canConnect (target: ForwardTarget, timeoutMs: number): Promise<boolean> {
  return await new Promise(resolve => {
    const socket = net.connect({ host: target.host, port: target.port })
    const done = (ok: boolean): void => {
      socket.destroy()
      resolve(ok)
    }
    socket.setTimeout(timeoutMs, () => { done(false) })
    socket.once('connect', () => { done(true) })
    socket.once('error', () => { done(false) })
  })
}

function ms (value: number): string {
  return `${Math.max(0, Math.round(value))} ms`
}

function ago (at: number): string {
  const s = Math.round((Date.now() - at) / 1000)
  return s <= 1 ? 'just now' : `${s} s ago`
}

/** Plain-text rendering: one line per step. */
export function formatReport (report: TestReport): string {
  const title = (s: CheckStep): string => s.gateway === undefined ? s.title : `${s.title} [${s.gateway}]`
  const width = Math.max(...report.steps.map(s => title(s).length))
  const lines = report.steps.map(s => `${s.result.toUpperCase().padEnd(4)}  ${title(s).padEnd(width)}  ${s.message}`)
  lines.push('', report.ok ? 'All checks passed.' : 'Some checks failed: see FAIL above.')
  return lines.join('\n') + '\n'
}
