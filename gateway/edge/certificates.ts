/**
 * The certificate manager: keeps a certificate for every managed name (the route table's hostnames
 * plus configured wildcards), obtains missing ones from the Issuer under the store's lock, renews
 * them when a third of their lifetime remains, and answers the TLS server's SNI lookups.
 *
 * What stays in memory per name is its state and its certificate's validity and serial, never the
 * key: a TLS context is built on the first handshake that needs it, from the store, and kept in a
 * bounded LRU (tls-contexts.ts). Evicted and needed again, it is rebuilt from the same stored
 * record, so the client sees the same certificate. Renewal scans read only the validity kept here.
 *
 * Lookup order at the handshake (secureContext):
 *   0. the name must be one of the managed hostnames (the route table's); otherwise nothing, even
 *      when a wildcard would cover it;
 *   1. the exact name's own certificate, if it has one (read from the store first if this manager
 *      has not looked yet, and waiting briefly if one is being obtained right now); under a managed
 *      wildcard, only until it is due for renewal: such names are never renewed on their own;
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
import { DEFAULT_TLS_CONTEXT_CACHE, TlsContextCache } from './tls-contexts.ts'

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
  /** Store reads at once for names no handshake is waiting for (start-up, retries; default 8). */
  maxConcurrentReads?: number
  /** TLS contexts kept in memory, least recently used evicted first (default 1000). */
  contextCacheSize?: number
  /** Delays after the 1st, 2nd, ... failure; the last repeats (default 1,2,2,5,10,20,30 min, 1,2,3,6 h). */
  retryDelaysMs?: number[]
}

/** What is kept of a certificate between handshakes: no key, no context. */
interface CertificateInfo {
  name: string
  notBefore: number
  notAfter: number
  serialNumber: string
  issuer: string
}

interface ManagedName {
  name: string
  certificate?: CertificateInfo
  inFlight?: Promise<void>
  /** A store read of this name in progress (shared by the background and handshakes). */
  reading?: Promise<void>
  /** The store was read at least once. */
  storeRead: boolean
  /** A handshake is waiting for it: its reads and issuance go before the others'. */
  urgent: boolean
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
  private readonly reads: Semaphore
  /** Built TLS contexts, by certificate name. */
  readonly contexts: TlsContextCache
  /** Context builds in progress, by certificate name (concurrent handshakes share one). */
  private readonly building = new Map<string, Promise<tls.SecureContext | undefined>>()
  private managed = new Map<string, ManagedName>()
  /** The store's names (list()), taken once per update or scan: names not in it need no read of their own. */
  private listing: Promise<Set<string> | undefined> | undefined
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
    this.reads = new Semaphore(options.maxConcurrentReads ?? 8)
    this.contexts = new TlsContextCache(options.contextCacheSize ?? DEFAULT_TLS_CONTEXT_CACHE)
    this.wildcards = (options.wildcards ?? []).map(wildcardName)
    this.setHostnames([])
  }

  /**
   * Replace the managed hostnames (the route table's) and the wildcards managed besides the
   * configured ones. New names start being obtained in the background; names no longer listed
   * stop being served at once.
   */
  setHostnames (hostnames: Iterable<string>, wildcards: Iterable<string> = []): void {
    const next = new Map<string, ManagedName>()
    const names = new Set<string>(this.wildcards)
    for (const w of wildcards) names.add(wildcardName(w))
    for (const h of hostnames) {
      const n = normalizeHost(h)
      if (n !== '') names.add(n)
    }
    for (const name of names) next.set(name, this.managed.get(name) ?? { name, storeRead: false, urgent: false, failures: 0, noRetry: false })
    for (const name of this.managed.keys()) if (!next.has(name)) this.contexts.delete(name)
    this.managed = next
    this.listing = undefined
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
    this.listing = undefined
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
    await this.ready(exact)
    const wildcard = this.coveringWildcard(name)
    if (wildcard !== undefined && (exact.certificate === undefined || this.isDue(exact.certificate))) await this.ready(wildcard)
    const served = this.servingEntry(exact)
    return served === undefined ? undefined : await this.contextOf(served)
  }

  certificateStates (): CertificateState[] {
    const states: CertificateState[] = []
    for (const entry of this.managed.values()) {
      const served = this.servingEntry(entry)?.certificate
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

  /**
   * For a handshake: what the store holds for `entry`, read now rather than in its turn, and, when
   * nothing is stored and an issuance is on its way, that issuance moved to the front and waited for.
   */
  private async ready (entry: ManagedName): Promise<void> {
    if (entry.certificate === undefined && !entry.storeRead) await this.readStored(entry)
    if (entry.certificate !== undefined || entry.inFlight === undefined) return
    entry.urgent = true
    this.reads.promote(entry.name)
    this.slots.promote(entry.name)
    await this.waitFor(entry.inFlight)
  }

  /** The entry whose certificate serves `entry`'s name (see the lookup order above). */
  private servingEntry (entry: ManagedName): ManagedName | undefined {
    const own = entry.certificate
    const wildcard = this.coveringWildcard(entry.name)
    if (own !== undefined && (wildcard?.certificate === undefined || !this.isDue(own))) return entry
    return wildcard?.certificate !== undefined ? wildcard : undefined
  }

  /** The context of `entry`'s certificate: from the cache, else built from its stored record. */
  private async contextOf (entry: ManagedName): Promise<tls.SecureContext | undefined> {
    const info = entry.certificate!
    const cached = this.contexts.get(entry.name, info.serialNumber)
    if (cached !== undefined) return cached
    let building = this.building.get(entry.name)
    if (building === undefined) {
      building = this.buildContext(entry).finally(() => this.building.delete(entry.name))
      this.building.set(entry.name, building)
    }
    return await building
  }

  private async buildContext (entry: ManagedName): Promise<tls.SecureContext | undefined> {
    const record = await this.store.get(entry.name)
    if (record === undefined) {
      // Gone from the store (removed by hand): obtain it again; this handshake fails.
      this.logger.warn({ hostname: entry.name }, 'certificate missing from the store; obtaining a new one')
      entry.certificate = undefined
      this.kick(entry)
      return undefined
    }
    return this.install(entry, record, true)
  }

  /** The covering wildcard entry of a hostname (none for a wildcard itself). */
  private coveringWildcard (name: string): ManagedName | undefined {
    if (name.startsWith('*.')) return undefined
    const dot = name.indexOf('.')
    return dot === -1 ? undefined : this.managed.get(`*${name.slice(dot)}`)
  }

  private isDue (cert: CertificateInfo): boolean {
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
    if (entry.certificate !== undefined && !this.isDue(entry.certificate)) return
    // Under a wildcard: its own certificate, once read, is used until due and never renewed.
    if (entry.storeRead && this.coveringWildcard(entry.name) !== undefined) return
    if (entry.noRetry) return
    if (entry.nextAttemptAt !== undefined && this.now() < entry.nextAttemptAt) return
    entry.inFlight = this.obtain(entry).finally(() => { entry.inFlight = undefined })
  }

  /** The store's names, or undefined when it cannot list them now (every name is then read). */
  private async storedNames (): Promise<Set<string> | undefined> {
    this.listing ??= this.store.list().then(names => new Set(names), err => {
      this.logger.warn({ err }, 'certificate store listing failed; reading names one by one')
      return undefined
    })
    return await this.listing
  }

  /** Read what the store holds for `entry` (one read at a time per name); keeps its validity only. */
  private async readStored (entry: ManagedName): Promise<void> {
    entry.reading ??= (async () => {
      try {
        const stored = await this.store.get(entry.name)
        if (stored !== undefined) this.install(entry, stored)
      } finally {
        entry.storeRead = true
        entry.reading = undefined
      }
    })()
    await entry.reading
  }

  private async obtain (entry: ManagedName): Promise<void> {
    const { name } = entry
    try {
      if (entry.certificate === undefined) {
        // One listing instead of a failed read per name never stored (10,000 new names at start).
        const listed = entry.storeRead ? undefined : await this.storedNames()
        if (listed !== undefined && !listed.has(name)) {
          entry.storeRead = true
        } else {
          await this.reads.run(name, entry.urgent, async () => { if (entry.certificate === undefined) await this.readStored(entry) })
        }
        if (entry.certificate !== undefined && !this.isDue(entry.certificate)) return
      }
      // A hostname under a managed wildcard is served by the wildcard: no certificate of its own.
      if (this.coveringWildcard(name) !== undefined) return
      if (this.managed.get(name) !== entry) return // no longer listed
      await this.slots.run(name, entry.urgent, async () => {
        await this.store.lock(name, this.lockTtlMs)
        try {
          // Another gateway (or an earlier run) may have renewed it while we waited for the lock.
          const stored = await this.store.get(name)
          if (stored !== undefined && (entry.certificate === undefined || this.validity(stored).serialNumber !== entry.certificate.serialNumber)) {
            this.install(entry, stored)
            if (entry.certificate !== undefined && !this.isDue(entry.certificate)) return
          }
          if (this.managed.get(name) !== entry) return
          entry.lastAttemptAt = this.now()
          const issued = await this.issuer.issue(name)
          const record: CertificateRecord = { name, ...issued, issuer: this.issuer.id }
          if (!keyMatchesCertificate(record.certificatePem, record.privateKeyPem)) throw new IssuerError('KEY_MISMATCH', 'issued certificate does not match its key', false)
          await this.store.put(record)
          this.install(entry, record)
          this.logger.info({ hostname: name, issuer: this.issuer.id, notAfter: new Date(entry.certificate!.notAfter).toISOString() }, 'certificate obtained')
        } finally {
          await this.store.unlock(name).catch(err => { this.logger.warn({ hostname: name, err }, 'certificate lock release failed') })
        }
      })
      entry.urgent = false
      entry.failures = 0
      entry.lastError = undefined
      entry.nextAttemptAt = undefined
    } catch (err) {
      entry.urgent = false
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

  /**
   * Take `record` as `entry`'s certificate. A context is built (and cached) only when one for this
   * name is in the cache already (a renewal of a name in use) or when a handshake asks for it.
   */
  private install (entry: ManagedName, record: CertificateRecord, forHandshake = false): tls.SecureContext | undefined {
    try {
      const v = this.validity(record)
      entry.certificate = { name: entry.name, ...v, issuer: record.issuer }
      if (!forHandshake && !this.contexts.has(entry.name)) return undefined
      const context = tls.createSecureContext({ key: record.privateKeyPem, cert: record.certificatePem })
      this.contexts.set(entry.name, v.serialNumber, context)
      return context
    } catch (err) {
      this.logger.warn({ hostname: entry.name, err }, 'stored certificate unusable; obtaining a new one')
      return undefined
    }
  }
}

/** `*.<parent>` in canonical form; throws for anything that is not a one-label wildcard. */
function wildcardName (w: string): string {
  const parent = normalizeHost(w.startsWith('*.') ? w.slice(2) : '')
  if (parent === '') throw new Error(`not a one-label wildcard: ${w}`)
  return `*.${parent}`
}

/**
 * At most `limit` tasks at once; the rest wait their turn in order, except one a handshake is
 * waiting for, which promote() moves to the front.
 */
class Semaphore {
  private active = 0
  private readonly waiting: Array<{ key: string, resolve: () => void }> = []
  constructor (private readonly limit: number) {}

  async run<T> (key: string, urgent: boolean, task: () => Promise<T>): Promise<T> {
    if (this.active >= this.limit) {
      await new Promise<void>(resolve => { if (urgent) this.waiting.unshift({ key, resolve }); else this.waiting.push({ key, resolve }) })
    }
    this.active++
    try {
      return await task()
    } finally {
      this.active--
      this.waiting.shift()?.resolve()
    }
  }

  promote (key: string): void {
    const i = this.waiting.findIndex(w => w.key === key)
    if (i > 0) this.waiting.unshift(...this.waiting.splice(i, 1))
  }
}
