/**
 * The Cloud Connect agent (spec "Flow 2: Connecting Erugo Instance"): key pair kept in the state
 * file, POST /tunnel/register, tunnel up, heartbeats at the interval the API asks for, the
 * connection state for Erugo's settings page, and POST /tunnel/disconnect on a graceful stop.
 *
 * Resilience:
 *  - the API down or failing (network, 429, 5xx): retried with jittered exponential backoff;
 *  - the tunnel silent for `deadAfterMs` (gateway restarted, network changed, NAT mapping lost):
 *    register again (fresh configuration; a regenerated token shows up here as 401), then a new
 *    UDP socket, the endpoint resolved again and a fresh handshake, repeated with backoff;
 *  - 401 from the API: state `error`, the tunnel comes down and the agent exits (EXIT_TOKEN_REJECTED)
 *    instead of looping: only a new token can help;
 *  - 402 (suspended instance): state `error`, retried at the longest backoff (an upgrade fixes it);
 *  - 409 KEY_IN_USE: a new key pair, registered at once.
 *
 * Fleet: every gateway placed for the instance is probed on its own. The tunnel is `connected`
 * while any of them answers; one that stays silent gets a fresh handshake (its peer only, the
 * others untouched); a heartbeat answering another set of gateways adds and removes peers.
 */
import type { Logger } from 'pino'
import { ApiClient, ApiError } from './api.ts'
import { FatalError, heartbeatAnswered, heartbeatFailure, registrationFailure, type Retry, type RetryInput, type Suspended } from './decisions.ts'
import { EXIT_FAILURE, EXIT_KERNEL_UNAVAILABLE, EXIT_OK, EXIT_REFUSED, EXIT_TOKEN_REJECTED, EXIT_UDP_BLOCKED } from './exit-codes.ts'
import { Supervisor } from './supervision.ts'
import { proxyFromEnv, tryStream } from './transport.ts'
import type { AgentSettings } from './settings.ts'
import { freshState, loadOrCreateState, writeState, type AgentState, type ConnectionStatus } from './state.ts'
import { checkGatewayList, checkPlan, checkRegistration, planGateways, planWithGateways, samePlan, TunnelConfigError, TunnelUnavailableError, type Tunnel, type TunnelMode, type TunnelPlan } from './tunnel.ts'
import { formatTunnelConfig, type GatewayRole } from './tunnel-config.ts'
import type { HeartbeatResponse, RegisterTunnelResponse, TunnelConfig, TunnelStatusResponse } from '../proto/api/tunnel.ts'
import { decodeKey } from '../proto/noise/keys.ts'
import { systemClock, type Clock } from '../proto/clock.ts'

export { FatalError } from './decisions.ts'
import { formatHostPort } from '../proto/net/address.ts'

/** One gateway in the status report. */
export interface GatewayStatus {
  /** The fleet's gateway id (null: an older control plane's single gateway). */
  id: string | null
  role: GatewayRole
  region: string | null
  endpoint: string
  public_key: string
  /** The gateway's tunnel address. */
  address: string
  last_handshake_at: string | null
  /** It answered a round trip within the dead-after window. */
  connected: boolean
  /** What carries the tunnel to it: udp, or tls (WireGuard over TLS to its HTTPS port); null: not known yet. */
  transport: 'udp' | 'tls' | null
}

/** What `agent status --json` and the status endpoint print (the spec's cloud_connect_* settings). */
export interface StatusReport {
  /** `connected`: the tunnel is up through at least one gateway (see `gateways`). */
  status: ConnectionStatus
  last_error: string | null
  subdomain: string | null
  custom_domains: string[]
  public_key: string | null
  tunnel_ip: string | null
  /** The primary gateway's endpoint. */
  gateway_endpoint: string | null
  /** Every gateway placed for the instance, primary first. */
  gateways: GatewayStatus[]
  mode: TunnelMode | null
  /** What carries the tunnel (the first gateway's): udp, or tls when UDP is blocked; null before a tunnel. */
  transport: 'udp' | 'tls' | null
  /** Whether an agent process is running (false: read from the state file). */
  running: boolean
  pid: number | null
  /** When `status` last changed. */
  since: string
  /** The latest handshake with any gateway. */
  last_handshake_at: string | null
  /** The tunnel status as the cloud last reported it (GET /tunnel/status). */
  cloud_status: string | null
  api_url: string | null
}

export interface AgentOptions {
  settings: AgentSettings
  logger: Logger
  /** Builds the tunnel for a private key (userspace or kernel, chosen by the caller). */
  createTunnel: (privateKey: Buffer) => Tunnel
  /** Called on every status change (the status endpoint, tests). */
  onStatus?: (report: StatusReport) => void
  /** Uniform [0, 1) source for the backoff's jitter. */
  random?: () => number
  /** Default: Date.now and real timers (tests drive the loops on a fake clock). */
  clock?: Clock
}

const PROBE_TIMEOUT_MAX_MS = 5_000
const DISCONNECT_TIMEOUT_MS = 5_000

export class Agent {
  readonly settings: AgentSettings
  private readonly logger: Logger
  private readonly api: ApiClient
  private readonly options: AgentOptions
  private readonly clock: Clock
  private readonly random: () => number
  private state: AgentState
  private tunnel: Tunnel | null = null
  private plan: TunnelPlan | null = null
  private cloudStatus: TunnelStatusResponse | null = null
  private readonly stopController = new AbortController()
  private fatal: FatalError | null = null
  private heartbeatLoop: Promise<void> | null = null
  private running = false
  /** Wall-clock ms of each gateway's latest answered probe, by public key. */
  private readonly answeredAt = new Map<string, number>()
  /** Applies one at a time (registration, recovery and heartbeats all reconfigure the tunnel). */
  private applying: Promise<void> = Promise.resolve()

  constructor (options: AgentOptions) {
    this.options = options
    this.settings = options.settings
    this.logger = options.logger
    this.clock = options.clock ?? systemClock
    this.random = options.random ?? Math.random
    if (options.settings.token === null) throw new Error('the agent needs an instance token')
    this.api = new ApiClient({ baseUrl: options.settings.apiUrl, token: options.settings.token, region: options.settings.region })
    this.state = loadOrCreateState(this.settings.stateFile, (reason, movedTo) => {
      this.logger.warn({ reason, movedTo }, 'state file unusable: moved aside, starting with a new key pair')
    })
  }

  get stopping (): boolean {
    return this.stopController.signal.aborted
  }

  /** Runs until stop() or a fatal error; resolves with the exit status. Never rejects. */
  async run (): Promise<number> {
    this.running = true
    try {
      if (this.state.api_url !== this.settings.apiUrl) this.state.registration = null
      this.state.api_url = this.settings.apiUrl
      this.state.pid = process.pid
      this.state.mode = this.settings.mode
      this.state.status_listen = this.settings.statusListen === null ? null : formatHostPort(this.settings.statusListen.host, this.settings.statusListen.port)
      this.setStatus('connecting', null)
      this.logger.info({ publicKey: this.state.public_key, api: this.settings.apiUrl, mode: this.settings.mode, stateFile: this.settings.stateFile }, 'agent starting')
      await this.connect()
      if (!this.stopping) {
        this.heartbeatLoop = this.heartbeats()
        await this.supervise()
      }
      await this.heartbeatLoop
      if (this.fatal !== null) throw this.fatal
      await this.shutdown(true)
      return EXIT_OK
    } catch (err) {
      const fatal = err instanceof FatalError ? err : new FatalError(`unexpected failure: ${(err as Error).message}`, EXIT_FAILURE)
      if (!(err instanceof FatalError)) this.logger.error({ err }, 'agent failed')
      else this.logger.error({ exitCode: fatal.exitCode }, fatal.message)
      this.stopController.abort()
      await this.heartbeatLoop?.catch(() => {})
      this.setStatus('error', fatal.message)
      // A rejected token cannot say goodbye; anything else can still try.
      await this.shutdown(fatal.exitCode !== EXIT_TOKEN_REJECTED && fatal.exitCode !== EXIT_REFUSED)
      return fatal.exitCode
    } finally {
      this.running = false
    }
  }

  /** Graceful stop (SIGTERM/SIGINT): run() takes the tunnel down, tells the API, and resolves. */
  stop (): void {
    if (this.stopping) return
    this.logger.info('stopping')
    this.stopController.abort()
  }

  report (): StatusReport {
    const health = this.tunnel?.health() ?? null
    const now = this.clock.now()
    const live = new Map((this.tunnel?.gateways() ?? []).map(g => [g.publicKey, g]))
    const gateways: GatewayStatus[] = this.plan === null ? [] : planGateways(this.plan).map(g => {
      const handshake = live.get(g.peerPublicKey)?.lastHandshakeAt ?? null
      const answered = this.answeredAt.get(g.peerPublicKey)
      return {
        id: g.gatewayId,
        role: g.role,
        region: g.region,
        endpoint: formatHostPort(g.endpointHost, g.endpointPort),
        public_key: g.peerPublicKey,
        address: g.gatewayAddress,
        last_handshake_at: handshake === null ? null : new Date(handshake).toISOString(),
        connected: answered !== undefined && now - answered <= this.settings.deadAfterMs,
        transport: live.get(g.peerPublicKey)?.transport ?? null,
      }
    })
    const reg = this.state.registration
    const activeCustom = this.cloudStatus?.domains.custom_domains.filter(d => d.status === 'active').map(d => d.domain)
    return {
      status: this.state.status,
      last_error: this.state.last_error,
      subdomain: reg?.domains.subdomain ?? null,
      custom_domains: activeCustom ?? reg?.domains.custom_domains ?? [],
      public_key: this.state.public_key,
      tunnel_ip: this.plan?.address ?? null,
      gateway_endpoint: reg?.tunnel_config.peer.endpoint ?? null,
      gateways,
      mode: this.settings.mode,
      transport: gateways.find(g => g.connected)?.transport ?? gateways[0]?.transport ?? null,
      running: this.running,
      pid: process.pid,
      since: this.state.since,
      last_handshake_at: health?.lastHandshakeAt == null ? null : new Date(health.lastHandshakeAt).toISOString(),
      cloud_status: this.cloudStatus?.tunnel_status ?? null,
      api_url: this.settings.apiUrl,
    }
  }

  /** The tunnel in use and its plan (null before the first registration): for `test` inside the agent. */
  get currentTunnel (): { tunnel: Tunnel, plan: TunnelPlan } | null {
    return this.tunnel === null || this.plan === null ? null : { tunnel: this.tunnel, plan: this.plan }
  }

  get apiClient (): ApiClient {
    return this.api
  }

  // ---- connecting ----

  /** Registers and brings the tunnel up, retrying until it works, stop() or a fatal error. */
  private async connect (): Promise<void> {
    let attempt = 0
    while (!this.stopping) {
      try {
        await this.registerAndApply()
        return
      } catch (err) {
        const decision = registrationFailure(err, this.retryAt(attempt))
        if (decision.kind === 'fatal') throw new FatalError(decision.message, decision.code)
        if (decision.kind === 'retry' && decision.grows) attempt++
        this.record(decision)
        await this.clock.sleep(decision.ms, this.stopController.signal)
      }
    }
  }

  private async registerAndApply (): Promise<void> {
    let response: RegisterTunnelResponse
    try {
      response = await this.api.register(this.state.public_key, this.stopController.signal)
    } catch (err) {
      if (err instanceof ApiError && err.failure === 'key_in_use') await this.newKeyPair()
      throw err
    }
    let checked: ReturnType<typeof checkRegistration>
    try {
      // Every field checked before anything is kept or written; the state file gets our formatting.
      checked = checkRegistration(response)
    } catch (err) {
      if (err instanceof TunnelConfigError) throw new FatalError(err.message, EXIT_REFUSED)
      throw err
    }
    const { plan, registration } = checked
    this.state.registration = { ...registration, registered_at: new Date(this.clock.now()).toISOString() }
    this.save()
    if (this.stopping) return
    try {
      await this.applyPlan(plan)
    } catch (err) {
      if (err instanceof TunnelUnavailableError) throw new FatalError(err.message, EXIT_KERNEL_UNAVAILABLE)
      if (err instanceof TunnelConfigError) throw new FatalError(err.message, EXIT_REFUSED)
      throw err
    }
    this.logger.info({ tunnelIp: plan.address, endpoint: formatHostPort(plan.endpointHost, plan.endpointPort), subdomain: registration.domains.subdomain }, 'registered; tunnel configured')
  }

  /** Configures the tunnel for `plan`, after any apply still running. */
  private async applyPlan (plan: TunnelPlan): Promise<void> {
    const run = this.applying.then(async () => {
      if (this.stopping) return
      const tunnel = this.tunnel ?? (this.tunnel = this.options.createTunnel(decodeKey(this.state.private_key)))
      await tunnel.apply(plan)
      this.plan = plan
      const keys = new Set(planGateways(plan).map(g => g.peerPublicKey))
      for (const key of this.answeredAt.keys()) if (!keys.has(key)) this.answeredAt.delete(key)
    })
    this.applying = run.catch(() => {})
    await run
  }

  /**
   * A heartbeat's `peers`: the gateways placed for the instance now. Another set than the tunnel's
   * is applied in place (new gateways added, vanished ones removed, the rest untouched). A list
   * that fails the checks is logged and ignored: the tunnel stays as it is.
   */
  private async followPlacement (beat: HeartbeatResponse): Promise<void> {
    const current = this.plan
    if (beat.peers === undefined || beat.peers === null || current === null || this.tunnel === null) return
    let next: TunnelPlan
    try {
      next = planWithGateways(current, checkGatewayList(beat.peers, checkPlan(current).tunnelIp))
    } catch (err) {
      if (!(err instanceof TunnelConfigError)) throw err
      this.logger.warn({ field: err.field }, `ignoring the heartbeat's gateways: ${err.message}`)
      return
    }
    if (samePlan(current, next)) return
    const before = new Set(planGateways(current).map(g => g.gatewayId ?? g.peerPublicKey))
    const after = planGateways(next).map(g => g.gatewayId ?? g.peerPublicKey)
    try {
      await this.applyPlan(next)
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'could not apply the heartbeat\'s gateways; keeping the tunnel as it is')
      return
    }
    const reg = this.state.registration
    if (reg !== null) {
      reg.tunnel_config = formatTunnelConfig(checkPlan(next)) satisfies TunnelConfig
      this.save()
    }
    this.logger.info({ added: after.filter(g => !before.has(g)), removed: [...before].filter(g => !after.includes(g)), gateways: after }, 'gateways changed: tunnel reconfigured')
  }

  /** Another instance holds our public key (a copied state file): take a new key pair. */
  private async newKeyPair (): Promise<void> {
    const fresh = freshState()
    this.logger.warn({ old: this.state.public_key, new: fresh.public_key }, 'the public key is registered to another instance: generated a new key pair')
    this.state.private_key = fresh.private_key
    this.state.public_key = fresh.public_key
    this.state.registration = null
    this.save()
    const old = this.tunnel
    this.tunnel = null
    this.plan = null
    await old?.close()
  }

  /** Records a retry that is not fatal: the state says why (402: `error`), the log how long. */
  private record (decision: Retry | Suspended): void {
    if (decision.kind === 'suspended') {
      this.setStatus('error', decision.message)
    } else if (decision.message !== null) {
      this.logger.warn({ retryInMs: decision.ms }, decision.message)
      this.setStatus(this.state.status === 'connected' ? 'connected' : 'connecting', decision.message)
    }
  }

  // ---- connected ----

  /** Probes every gateway each probe interval and performs what the Supervisor decides. */
  private async supervise (): Promise<void> {
    const supervisor = new Supervisor({
      deadAfterMs: this.settings.deadAfterMs,
      backoff: this.backoffLimits(),
      udpCheckAfterMs: this.settings.mode === 'kernel' ? this.settings.transport.fallbackAfterMs : null,
      answeredAt: this.answeredAt,
      now: this.clock.now(),
    })
    const probeTimeout = Math.min(this.settings.probeIntervalMs, PROBE_TIMEOUT_MAX_MS)
    while (!this.stopping && this.fatal === null) {
      const started = this.clock.now()
      const tunnel = this.tunnel
      const gateways = this.plan === null ? [] : planGateways(this.plan)
      const rtts = tunnel === null ? [] : await Promise.all(gateways.map(async g => await tunnel.probe(probeTimeout, g.gatewayAddress)))
      if (this.stopping || this.fatal !== null) break
      const probes = rtts.map((rttMs, i) => ({ publicKey: gateways[i].peerPublicKey, rttMs }))
      const heardAt = tunnel?.health().lastReceiveAt ?? null
      for (const action of supervisor.observe({ started, now: this.clock.now(), probes, heardAt })) {
        if (action.kind === 'check-udp') {
          await this.refuseBlockedUdp(gateways)
        } else if (action.kind === 'answered') {
          if (this.state.status !== 'connected' || this.state.last_error !== null) {
            // Recorded first: whoever reads the log line finds the state file saying so.
            this.setStatus('connected', null)
            this.logger.info({ rttMs: Math.round(action.rttMs) }, 'tunnel up: the gateway answers')
          }
        } else if (action.kind === 'nudge') {
          // The others carry the tunnel; a silent one gets its own fresh handshake now and then.
          const g = gateways.find(g => g.peerPublicKey === action.publicKey)
          this.logger.warn({ gateway: g?.gatewayId ?? action.publicKey, silentForSeconds: Math.round(action.silentForMs / 1000) }, 'no answer from one gateway: fresh handshake with it; the others carry the tunnel')
          await tunnel?.reconnect(action.publicKey).catch((err: unknown) => { this.logger.warn({ err: (err as Error).message }, 'reconnect failed') })
        } else {
          const silentFor = Math.round(action.silentForMs / 1000)
          this.logger.warn({ silentForSeconds: silentFor }, 'no answer from the gateway: reconnecting')
          this.setStatus('connecting', `no answer from the gateway for ${silentFor} s: reconnecting`)
          await this.recover()
          supervisor.recovered(this.clock.now(), this.random())
        }
      }
      await this.clock.sleep(this.settings.probeIntervalMs - (this.clock.now() - started), this.stopController.signal)
    }
  }

  /**
   * Kernel mode, before the first answer: no handshake over UDP, yet a gateway's HTTPS port takes
   * WireGuard over TLS. Then UDP is blocked on the way, and wg-quick cannot do anything else: stop
   * with EXIT_UDP_BLOCKED and say so. When TLS does not work either, the gateway may just be away:
   * keep trying as usual.
   */
  private async refuseBlockedUdp (gateways: ReturnType<typeof planGateways>): Promise<void> {
    const health = this.tunnel?.health()
    if (health === undefined || health.lastHandshakeAt !== null) return
    const t = this.settings.transport
    for (const g of gateways) {
      const proxy = (t.proxyFor ?? proxyFromEnv)(g.endpointHost)
      const tls = await tryStream({ host: g.endpointHost, port: t.tlsPort, servername: t.serverName ?? g.endpointHost, proxy, timeoutMs: 5_000 })
      if (!tls.ok || this.tunnel?.health().lastHandshakeAt !== null) continue
      const seconds = Math.round(t.fallbackAfterMs / 100) / 10
      throw new FatalError(`UDP to the gateway seems blocked: no WireGuard handshake with ${formatHostPort(g.endpointHost, g.endpointPort)} over UDP in ${seconds} s, ` +
        `while its HTTPS port ${t.tlsPort} answers. Kernel mode (wg-quick) speaks UDP only: run the agent with --mode userspace, ` +
        'which carries the tunnel over TLS on the HTTPS port when UDP is blocked', EXIT_UDP_BLOCKED)
    }
  }

  /** Fresh registration when the API answers (fatal answers propagate), then a fresh path. */
  private async recover (): Promise<void> {
    try {
      await this.registerAndApply()
    } catch (err) {
      if (err instanceof FatalError) throw err
      if (err instanceof ApiError) {
        const decision = registrationFailure(err, this.retryAt(0))
        if (decision.kind === 'fatal') throw new FatalError(decision.message, decision.code)
        if (decision.kind === 'suspended') {
          this.setStatus('error', decision.message)
          return
        }
      }
      this.logger.warn({ err: (err as Error).message }, 'could not register again; keeping the last configuration')
    }
    try {
      await this.tunnel?.reconnect()
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'reconnect failed')
    }
  }

  /** Heartbeats (and a status refresh) every next_heartbeat_in seconds; 401 is fatal. */
  private async heartbeats (): Promise<void> {
    let attempt = 0
    while (!this.stopping && this.fatal === null) {
      let wait: number
      try {
        const beat = await this.api.heartbeat(new Date(this.clock.now()), this.stopController.signal)
        wait = heartbeatAnswered(beat.next_heartbeat_in).ms
        attempt = 0
        await this.followPlacement(beat)
        this.cloudStatus = await this.api.status(this.stopController.signal).catch(() => this.cloudStatus)
      } catch (err) {
        if (this.stopping) return
        const decision = heartbeatFailure(err, this.retryAt(attempt))
        if (decision.kind === 'fatal') {
          this.fatal = new FatalError(decision.message, decision.code)
          this.stopController.abort()
          return
        }
        attempt++
        wait = decision.ms
        this.logger.warn({ retryInMs: wait }, decision.message)
      }
      await this.clock.sleep(wait, this.stopController.signal)
    }
  }

  // ---- stopping ----

  private async shutdown (sayGoodbye: boolean): Promise<void> {
    const tunnel = this.tunnel
    this.tunnel = null
    try {
      await tunnel?.close()
    } catch (err) {
      this.logger.warn({ err }, 'taking the tunnel down failed')
    }
    // After the tunnel is down, so no later handshake can make the cloud think we are back.
    if (sayGoodbye && this.state.registration !== null) {
      try {
        await this.api.disconnect(AbortSignal.timeout(DISCONNECT_TIMEOUT_MS))
        this.logger.info('the API was told: disconnected')
      } catch (err) {
        this.logger.warn({ err: (err as Error).message }, 'could not tell the API about the disconnect')
      }
    }
    if (this.state.status !== 'error') this.setStatus('disconnected', null)
    this.state.pid = null
    this.save()
  }

  // ---- state ----

  private setStatus (status: ConnectionStatus, lastError: string | null): void {
    const changed = status !== this.state.status || lastError !== this.state.last_error
    if (status !== this.state.status) this.state.since = new Date(this.clock.now()).toISOString()
    this.state.status = status
    this.state.last_error = lastError
    if (changed) {
      this.save()
      this.options.onStatus?.(this.report())
    }
  }

  private save (): void {
    this.state.updated_at = new Date(this.clock.now()).toISOString()
    try {
      writeState(this.settings.stateFile, this.state)
    } catch (err) {
      this.logger.error({ err, stateFile: this.settings.stateFile }, 'cannot write the state file')
    }
  }

  private backoffLimits (): { initialMs: number, maxMs: number } {
    return { initialMs: this.settings.backoffInitialMs, maxMs: this.settings.backoffMaxMs }
  }

  private retryAt (attempt: number): RetryInput {
    return { attempt, jitter: this.random(), limits: this.backoffLimits() }
  }
}
