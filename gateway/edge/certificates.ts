/**
 * The certificate manager: keeps a certificate for every managed name (the route table's hostnames
 * plus configured wildcards), obtains missing ones from the Issuer under the store's lock, renews
 * them when a third of their lifetime remains, and answers the TLS server's SNI lookups.
 *
 * Lookup order at the handshake (secureContext):
 *   0. the name must be one of the managed hostnames (the route table's); otherwise nothing, even
 *      when a wildcard would cover it;
 *   1. the exact name's own certificate, if it has one (waiting briefly if one is being obtained
 *      right now);
 *   2. the one-label wildcard `*.<parent>`, if that is managed and has a certificate;
 *   3. nothing: the handshake fails. There is no default certificate, and a name that is not
 *      managed never starts an issuance (an SNI flood of random names costs nothing).
 */
import tls from 'node:tls'
import { X509Certificate } from 'node:crypto'
import type { Logger } from 'pino'
import type { CertStore, CertificateRecord } from './cert-store.ts'
import { keyMatchesCertificate } from './cert-store.ts'
import { IssuerError, type Issuer } from './issuer.ts'
import { normalizeHost } from './routes.ts'

export type CertificateStatus = 'pending' | 'active' | 'failing'

/** Per-hostname state, as reported to the control plane (`ssl_status`). */
export interface CertificateState {
  hostname: string
  status: CertificateStatus
  /** The certificate that serves this name: itself or the wildcard covering it. */
  certificateName?: string
  issuer?: string
  notBefore?: string
  notAfter?: string
  lastError?: string
  lastAttemptAt?: string
  /** When the next attempt is due after a failure. */
  nextAttemptAt?: string
}

/** Something that can pick the certificate for a TLS handshake. */
export interface CertificateSource {
  secureContext (servername: string): Promise<tls.SecureContext | undefined>
  certificateStates (): CertificateState[]
}

export interface CertificateManagerOptions {
  store: CertStore
  issuer: Issuer
  logger: Logger
  /** Wildcard names (`*.example.com`) to manage besides the hostnames; they cover one label. */
  wildcards?: string[]
  /** Clock (ms since the epoch). */
  now?: () => number
  /** Renew when this fraction of the lifetime remains (certmagic: 1/3). */
  renewalFraction?: number
  /** How often maintain() runs once start() was called (default 10 min). */
  scanIntervalMs?: number
  /** How long a handshake waits for a certificate being obtained (default 10 s). */
  handshakeWaitMs?: number
  /** Lock expiry for one issuance (default 10 min). */
  lockTtlMs?: number
  /** Issuances running at once (default 4). */
  maxConcurrentIssuance?: number
  /** Delays after the 1st, 2nd, ... failure; the last repeats (default 1,2,2,5,10,20,30 min, 1,2,3,6 h). */
  retryDelaysMs?: number[]
}

interface LoadedCertificate {
  name: string
  context: tls.SecureContext
  notBefore: number
  notAfter: number
  serialNumber: string
  issuer: string
}

interface ManagedName {
  name: string
  loaded?: LoadedCertificate
  inFlight?: Promise<void>
  failures: number
  noRetry: boolean
  lastError?: string
  lastAttemptAt?: number
  nextAttemptAt?: number
}

const MINUTE = 60_000
const DEFAULT_RETRY_DELAYS = [1, 2, 2, 5, 10, 20, 30, 60, 120, 180, 360].map(m => m * MINUTE)

export class CertificateManager implements CertificateSource {
  private readonly store: CertStore
  private readonly issuer: Issuer
  private readonly logger: Logger
  private readonly now: () => number
  private readonly renewalFraction: number
  private readonly scanIntervalMs: number
  private readonly handshakeWaitMs: number
  private readonly lockTtlMs: number
  private readonly retryDelaysMs: number[]
  private readonly wildcards: string[]
  private readonly slots: Semaphore
  private managed = new Map<string, ManagedName>()
  private timer: NodeJS.Timeout | undefined

  constructor (options: CertificateManagerOptions) {
    this.store = options.store
    this.issuer = options.issuer
    this.logger = options.logger
    this.now = options.now ?? Date.now
    this.renewalFraction = options.renewalFraction ?? 1 / 3
    this.scanIntervalMs = options.scanIntervalMs ?? 10 * MINUTE
    this.handshakeWaitMs = options.handshakeWaitMs ?? 10_000
    this.lockTtlMs = options.lockTtlMs ?? 10 * MINUTE
    this.retryDelaysMs = options.retryDelaysMs ?? DEFAULT_RETRY_DELAYS
    this.slots = new Semaphore(options.maxConcurrentIssuance ?? 4)
    this.wildcards = (options.wildcards ?? []).map(w => {
      const parent = normalizeHost(w.startsWith('*.') ? w.slice(2) : '')
      if (parent === '') throw new Error(`not a one-label wildcard: ${w}`)
      return `*.${parent}`
    })
    this.setHostnames([])
  }

  /**
   * Replace the managed hostnames (the route table's). New names start being obtained in the
   * background; names no longer listed stop being served at once.
   */
  setHostnames (hostnames: Iterable<string>): void {
    const next = new Map<string, ManagedName>()
    const names = new Set<string>(this.wildcards)
    for (const h of hostnames) {
      const n = normalizeHost(h)
      if (n !== '') names.add(n)
    }
    for (const name of names) next.set(name, this.managed.get(name) ?? { name, failures: 0, noRetry: false })
    this.managed = next
    for (const entry of next.values()) this.kick(entry)
  }

  /** Run maintenance every scanIntervalMs (the timer does not hold the process open). */
  start (): void {
    if (this.timer !== undefined) return
    this.timer = setInterval(() => { void this.maintain() }, this.scanIntervalMs)
    this.timer.unref()
  }

  stop (): void {
    if (this.timer !== undefined) clearInterval(this.timer)
    this.timer = undefined
  }

  /** One maintenance pass: obtain what is missing, renew what is due, retry failures whose wait is over. */
  async maintain (): Promise<void> {
    for (const entry of this.managed.values()) this.kick(entry)
    await this.settled()
  }

  /** Resolves once no issuance is running. */
  async settled (): Promise<void> {
    while (true) {
      const running = [...this.managed.values()].map(e => e.inFlight).filter((p): p is Promise<void> => p !== undefined)
      if (running.length === 0) return
      await Promise.allSettled(running)
    }
  }

  async secureContext (servername: string): Promise<tls.SecureContext | undefined> {
    const name = normalizeHost(servername)
    const exact = this.managed.get(name)
    if (exact === undefined) return undefined
    if (exact.loaded === undefined && exact.inFlight !== undefined) await this.waitFor(exact.inFlight)
    if (exact.loaded !== undefined) return exact.loaded.context
    const dot = name.indexOf('.')
    if (dot === -1) return undefined
    const wildcard = this.managed.get(`*${name.slice(dot)}`)
    if (wildcard === undefined) return undefined
    if (wildcard.loaded === undefined && wildcard.inFlight !== undefined) await this.waitFor(wildcard.inFlight)
    return wildcard.loaded?.context
  }

  certificateStates (): CertificateState[] {
    const states: CertificateState[] = []
    for (const entry of this.managed.values()) {
      const served = entry.loaded ?? (entry.name.startsWith('*.') ? undefined : this.coveringWildcard(entry.name)?.loaded)
      const failing = entry.lastError !== undefined && (served === undefined || this.isDue(served))
      const state: CertificateState = {
        hostname: entry.name,
        status: failing ? 'failing' : served !== undefined && served.notAfter > this.now() ? 'active' : 'pending',
      }
      if (served !== undefined) {
        state.certificateName = served.name
        state.issuer = served.issuer
        state.notBefore = new Date(served.notBefore).toISOString()
        state.notAfter = new Date(served.notAfter).toISOString()
      }
      if (entry.lastError !== undefined) state.lastError = entry.lastError
      if (entry.lastAttemptAt !== undefined) state.lastAttemptAt = new Date(entry.lastAttemptAt).toISOString()
      if (entry.nextAttemptAt !== undefined && entry.lastError !== undefined) state.nextAttemptAt = new Date(entry.nextAttemptAt).toISOString()
      states.push(state)
    }
    return states
  }

  private coveringWildcard (name: string): ManagedName | undefined {
    const dot = name.indexOf('.')
    return dot === -1 ? undefined : this.managed.get(`*${name.slice(dot)}`)
  }

  private isDue (cert: LoadedCertificate): boolean {
    const lifetime = cert.notAfter - cert.notBefore
    return this.now() >= cert.notAfter - lifetime * this.renewalFraction
  }

  private async waitFor (p: Promise<void>): Promise<void> {
    let timer: NodeJS.Timeout | undefined
    await Promise.race([p, new Promise<void>(resolve => { timer = setTimeout(resolve, this.handshakeWaitMs) })])
    clearTimeout(timer)
  }

  /** Start obtaining or renewing `entry` when it needs it and no attempt is running or waiting. */
  private kick (entry: ManagedName): void {
    if (entry.inFlight !== undefined) return
    if (entry.loaded !== undefined && !this.isDue(entry.loaded)) return
    if (entry.noRetry) return
    if (entry.nextAttemptAt !== undefined && this.now() < entry.nextAttemptAt) return
    entry.inFlight = this.obtain(entry).finally(() => { entry.inFlight = undefined })
  }

  private async obtain (entry: ManagedName): Promise<void> {
    const { name } = entry
    try {
      if (entry.loaded === undefined) {
        const stored = await this.store.get(name)
        if (stored !== undefined) this.install(entry, stored)
        if (entry.loaded !== undefined && !this.isDue(entry.loaded)) return
      }
      // A hostname under a managed wildcard is served by the wildcard: no certificate of its own.
      if (entry.loaded === undefined && !name.startsWith('*.') && this.coveringWildcard(name) !== undefined) return
      if (this.managed.get(name) !== entry) return // no longer listed
      await this.slots.run(async () => {
        await this.store.lock(name, this.lockTtlMs)
        try {
          // Another gateway (or an earlier run) may have renewed it while we waited for the lock.
          const stored = await this.store.get(name)
          if (stored !== undefined && (entry.loaded === undefined || this.validity(stored).serialNumber !== entry.loaded.serialNumber)) {
            this.install(entry, stored)
            if (entry.loaded !== undefined && !this.isDue(entry.loaded)) return
          }
          if (this.managed.get(name) !== entry) return
          entry.lastAttemptAt = this.now()
          const issued = await this.issuer.issue(name)
          const record: CertificateRecord = { name, ...issued, issuer: this.issuer.id }
          if (!keyMatchesCertificate(record.certificatePem, record.privateKeyPem)) throw new IssuerError('KEY_MISMATCH', 'issued certificate does not match its key', false)
          await this.store.put(record)
          this.install(entry, record)
          this.logger.info({ hostname: name, issuer: this.issuer.id, notAfter: new Date(entry.loaded!.notAfter).toISOString() }, 'certificate obtained')
        } finally {
          await this.store.unlock(name).catch(err => { this.logger.warn({ hostname: name, err }, 'certificate lock release failed') })
        }
      })
      entry.failures = 0
      entry.lastError = undefined
      entry.nextAttemptAt = undefined
    } catch (err) {
      entry.failures++
      entry.lastAttemptAt = this.now()
      entry.lastError = err instanceof Error ? err.message : String(err)
      entry.noRetry = err instanceof IssuerError && !err.retry
      const backoff = this.retryDelaysMs[Math.min(entry.failures, this.retryDelaysMs.length) - 1] ?? 0
      const delay = Math.max(backoff, err instanceof IssuerError ? err.retryAfterMs ?? 0 : 0)
      entry.nextAttemptAt = this.now() + delay
      this.logger.warn({ hostname: name, err, failures: entry.failures, retryInMs: entry.noRetry ? null : delay }, 'certificate not obtained')
    }
  }

  private validity (record: CertificateRecord): { notBefore: number, notAfter: number, serialNumber: string } {
    const c = new X509Certificate(record.certificatePem)
    return { notBefore: Date.parse(c.validFrom), notAfter: Date.parse(c.validTo), serialNumber: c.serialNumber }
  }

  private install (entry: ManagedName, record: CertificateRecord): void {
    try {
      const v = this.validity(record)
      const context = tls.createSecureContext({ key: record.privateKeyPem, cert: record.certificatePem })
      entry.loaded = { name: entry.name, context, ...v, issuer: record.issuer }
    } catch (err) {
      this.logger.warn({ hostname: entry.name, err }, 'stored certificate unusable; obtaining a new one')
    }
  }
}

/** At most `limit` tasks at once; the rest wait their turn in order. */
class Semaphore {
  private active = 0
  private readonly waiting: Array<() => void> = []
  constructor (private readonly limit: number) {}

  async run<T> (task: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) await new Promise<void>(resolve => this.waiting.push(resolve))
    this.active++
    try {
      return await task()
    } finally {
      this.active--
      this.waiting.shift()?.()
    }
  }
}
