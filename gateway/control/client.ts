/**
 * Keeps a gateway in step with its control plane (any ControlPlane: HTTP, static file, in-process):
 *
 *   watch loop   long-poll for the next snapshot, apply it, persist it; on failure back off
 *                (exponential with jitter, capped) and keep serving the last snapshot
 *   report loop  hello (again after any failure: control may have restarted), then a report every
 *                reportIntervalMs: per-peer handshake/endpoint/bytes, certificate states and the
 *                edge's per-instance usage and access log (given back to the edge when the report
 *                fails, so the next one carries it)
 *
 * Nothing here throws out of a loop: failures are logged (once per outage, then sparsely) and
 * retried. close() ends both loops at once, aborting a pending long-poll. Waits and report times
 * come from an injected Clock (tests run the loops on a fake one).
 */
import type { Logger } from 'pino'
import { systemClock, type Clock } from '../../proto/clock.ts'
import { RpcError, type CertificateReport, type ConfigSnapshot, type ControlPlane, type GatewayHello, type GatewayReport } from '../../proto/rpc/index.ts'
import type { PeerStatus } from '../wireguard/device.ts'
import type { TrafficBatch } from '../edge/traffic.ts'
import { backoffMs, Outage, type BackoffOptions } from './outage.ts'
import { ReportBuilder } from './reporter.ts'
import type { SnapshotStore } from './store.ts'

/** What the client drives: the Gateway implements it. */
export interface ControlTarget {
  /** Applies a snapshot; never throws for bad peers (they are dropped and logged). */
  applySnapshot (snapshot: ConfigSnapshot): unknown
  peerStatuses (): PeerStatus[]
  certificateReports (): CertificateReport[]
  instanceIdOf (publicKey: string): string | undefined
  /** The edge's traffic since the last report (none without an edge). */
  takeTraffic? (): TrafficBatch | null
  /** A batch whose report failed: kept for the next report. */
  restoreTraffic? (batch: TrafficBatch): void
}

export type { BackoffOptions } from './outage.ts'

export interface ControlClientOptions {
  plane: ControlPlane
  target: ControlTarget
  logger: Logger
  /** Where the last snapshot is kept (HTTP control planes). */
  store?: SnapshotStore | null
  /** What to say in hello; null: no hello and no reports (static file). */
  hello?: GatewayHello | null
  /** Overrides the interval control asks for in its hello reply. */
  reportIntervalMs?: number
  backoff?: BackoffOptions
  /** Called after each applied snapshot with what applySnapshot returned. */
  onApplied?: (snapshot: ConfigSnapshot, result: unknown, source: string) => void
  /** Default: Date.now and real timers. */
  clock?: Clock
  /** Uniform [0, 1) source for the backoff's jitter. */
  random?: () => number
}

export class ControlClient {
  readonly #o: ControlClientOptions
  readonly #abort = new AbortController()
  readonly #builder: ReportBuilder | null
  readonly #clock: Clock
  #version: number | null = null
  #helloNeeded = true
  /** Cuts the watch loop's backoff short: a hello just went through, so control answers again. */
  #wakeWatch: (() => void) | null = null
  #loops: Array<Promise<void>> = []
  #started = false
  /** Snapshots applied since start (tests, /status). */
  applied = 0

  constructor (options: ControlClientOptions) {
    this.#o = options
    this.#clock = options.clock ?? systemClock
    this.#builder = options.hello == null ? null : new ReportBuilder(options.hello.gatewayId)
  }

  /** Version of the snapshot being served, or null before the first. */
  get version (): number | null { return this.#version }

  /** Applies `initial` (stored, or fetched before the gateway started) and starts the loops. */
  start (initial: ConfigSnapshot | null = null, source: 'stored' | 'control' = 'control'): void {
    if (this.#started) throw new Error('ControlClient already started')
    this.#started = true
    if (initial !== null) this.#apply(initial, source)
    this.#loops.push(this.#watchLoop())
    if (this.#builder !== null) this.#loops.push(this.#reportLoop(this.#builder))
  }

  async close (): Promise<void> {
    this.#abort.abort()
    await Promise.all(this.#loops)
  }

  #apply (snapshot: ConfigSnapshot, source: string): boolean {
    let result: unknown
    try {
      result = this.#o.target.applySnapshot(snapshot)
    } catch (err) {
      this.#o.logger.error({ err, version: snapshot.version }, 'applying the configuration failed')
      return false
    }
    this.#version = snapshot.version
    this.applied++
    // Stored before it is announced: whoever sees "configuration applied" finds it on disk too.
    if (this.#o.store != null && source !== 'stored') {
      try {
        this.#o.store.save(snapshot)
      } catch (err) {
        this.#o.logger.warn({ err: (err as Error).message, path: this.#o.store.path }, 'cannot store the snapshot')
      }
    }
    this.#o.logger.info({ version: snapshot.version, peers: snapshot.peers.length, source, result }, 'configuration applied')
    try {
      this.#o.onApplied?.(snapshot, result, source)
    } catch (err) {
      this.#o.logger.error({ err, version: snapshot.version }, 'after applying the configuration')
    }
    return true
  }

  async #watchLoop (): Promise<void> {
    const signal = this.#abort.signal
    const outage = new Outage(this.#o.logger, 'control plane unreachable: serving the last configuration', this.#o.backoff, this.#o.random)
    while (!signal.aborted) {
      try {
        const snapshot = await this.#o.plane.watch(this.#version, signal)
        outage.over()
        if (snapshot !== null && !signal.aborted && !this.#apply(snapshot, 'control')) {
          await this.#pause(outage.fail(new Error('apply failed')))
        }
      } catch (err) {
        if (signal.aborted) break
        this.#helloNeeded = true
        await this.#pauseUntilWoken(outage.fail(err))
      }
    }
  }

  /** Like #pause, but a successful hello ends it early (the backoff may have grown to 30 s). */
  async #pauseUntilWoken (ms: number): Promise<void> {
    const woken = new AbortController()
    this.#wakeWatch = () => { woken.abort() }
    try {
      await this.#clock.sleep(ms, AbortSignal.any([this.#abort.signal, woken.signal]))
    } finally {
      this.#wakeWatch = null
    }
  }

  async #reportLoop (builder: ReportBuilder): Promise<void> {
    const signal = this.#abort.signal
    const hello = this.#o.hello!
    let intervalMs = this.#o.reportIntervalMs ?? 5_000
    const helloOutage = new Outage(this.#o.logger, 'hello to the control plane failed', this.#o.backoff, this.#o.random)
    const reportOutage = new Outage(this.#o.logger, 'report to the control plane failed', this.#o.backoff, this.#o.random)
    while (!signal.aborted) {
      if (this.#helloNeeded) {
        try {
          const reply = await this.#o.plane.hello(hello)
          this.#helloNeeded = false
          helloOutage.over()
          intervalMs = this.#o.reportIntervalMs ?? reply.reportIntervalMs
          builder.forceFull()
          this.#o.logger.info({ gatewayId: hello.gatewayId, reportIntervalMs: intervalMs, configVersion: reply.configVersion }, 'control plane accepted hello')
          this.#wakeWatch?.()
        } catch (err) {
          if (signal.aborted) break
          await this.#pause(helloOutage.fail(err))
          continue
        }
      }
      const target = this.#o.target
      let traffic: TrafficBatch | null = null
      try {
        const report = builder.build(target.peerStatuses(), key => target.instanceIdOf(key), target.certificateReports(), this.#clock.now())
        traffic = target.takeTraffic?.() ?? null
        if (traffic !== null) withTraffic(report, traffic)
        if (report.full || report.peers.length > 0 || report.certificates.length > 0 || report.usage !== undefined || report.accessLog !== undefined || report.accessLogDropped !== undefined) {
          await this.#o.plane.report(report)
          builder.acknowledge(report)
        }
        traffic = null
        reportOutage.over()
      } catch (err) {
        if (traffic !== null) {
          // A report control refuses as such would be refused again: drop its traffic, keep reporting.
          if (err instanceof RpcError && (err.code === 'VALIDATION_ERROR' || err.code === 'PAYLOAD_TOO_LARGE')) {
            this.#o.logger.warn({ err: err.message, usage: traffic.usage.length, accessLog: traffic.accessLog.length }, 'control refused a report: its traffic records are dropped')
          } else {
            target.restoreTraffic?.(traffic)
          }
        }
        if (signal.aborted) break
        reportOutage.fail(err)
        this.#helloNeeded = true
      }
      await this.#pause(intervalMs)
    }
  }

  /** Ends early when the client closes (the loop then ends). */
  async #pause (ms: number): Promise<void> {
    await this.#clock.sleep(ms, this.#abort.signal)
  }

  /** Backoff for the n-th consecutive failure (n >= 1): initial * 2^(n-1), capped, +-25 % jitter. */
  static backoffMs (failures: number, options: BackoffOptions = {}, random = Math.random): number {
    return backoffMs(failures, options, random())
  }
}

/** Adds the non-empty parts of `traffic` to `report` (absent fields keep an older control's view unchanged). */
function withTraffic (report: GatewayReport, traffic: TrafficBatch): void {
  if (traffic.usage.length > 0) report.usage = traffic.usage
  if (traffic.accessLog.length > 0) report.accessLog = traffic.accessLog
  if (traffic.accessLogDropped > 0) report.accessLogDropped = traffic.accessLogDropped
}

/**
 * The snapshot to start from: the stored one when there is one (serve at once, catch up later),
 * else the first one control gives (after `hello`, when given), retried with backoff until it
 * answers or `signal` aborts (then null).
 */
export async function initialSnapshot (plane: ControlPlane, store: SnapshotStore | null, logger: Logger, signal?: AbortSignal, backoff: BackoffOptions = {},
  hello?: GatewayHello, clock: Clock = systemClock): Promise<{ snapshot: ConfigSnapshot, source: 'stored' | 'control' } | null> {
  const stored = store?.load() ?? null
  if (stored !== null) {
    logger.info({ version: stored.version, peers: stored.peers.length, path: store!.path }, 'serving the stored configuration until control answers')
    return { snapshot: stored, source: 'stored' }
  }
  const outage = new Outage(logger, 'waiting for the control plane: no stored configuration to serve yet', backoff)
  const aborted = (): boolean => signal?.aborted === true
  while (!aborted()) {
    try {
      // Each attempt introduces the gateway first (a fleet control answers only gateways it knows).
      if (hello !== undefined) await plane.hello(hello)
      const snapshot = await plane.watch(null, signal)
      if (snapshot !== null) {
        outage.over()
        return { snapshot, source: 'control' }
      }
    } catch (err) {
      if (aborted()) break
      await clock.sleep(outage.fail(err), signal)
    }
  }
  return null
}
