/**
 * The control-backed CertStore: certificates, the ACME account key and issuance locks kept by
 * control (control/services/cert-store.ts) and shared by every gateway of a fleet, so a hostname
 * they all serve is ordered once and all of them use one ACME account.
 *
 * - The lock holder is `<gateway id>/<random id of this process>`: a restarted gateway is a new
 *   holder and waits for (or outlives) its predecessor's lock like any other gateway. Control takes
 *   a lock atomically; lock() asks again every `lockPollMs` until it holds it or `lockWaitMs` has
 *   passed (CertStoreError LOCK_TIMEOUT). Callers in this process queue for a name locally first,
 *   since control sees them as one holder.
 * - Every call is retried on retryable failures (control unreachable, 5xx) a bounded number of
 *   times with doubling delays, then fails with CertStoreError UNAVAILABLE naming the operation.
 *   Every operation is idempotent for one holder (a lock request that reached control but whose
 *   answer was lost is granted again to its sender), so retrying is safe.
 */
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import type { Logger } from 'pino'
import { RpcError, type CertificateStorePlane } from '../../proto/rpc/index.ts'
import { CertStoreError, storageKey, type CertStore, type CertificateRecord } from '../edge/cert-store.ts'

export interface ControlCertStoreOptions {
  plane: CertificateStorePlane
  /** This gateway's id (CC_GATEWAY_ID): the first half of the lock holder. */
  gatewayId: string
  logger?: Logger
  /** How long lock() waits for another holder before failing (default 2 min, as the file store). */
  lockWaitMs?: number
  /** How often lock() asks control again while another holder has the lock (default 1 s). */
  lockPollMs?: number
  /** Tries per call before giving up (default 4). */
  attempts?: number
  /** Delay before the first retry; doubles per retry (default 250 ms). */
  retryDelayMs?: number
}

/** Whether a control plane also offers the certificate store. */
export function hasCertificateStore (plane: object): plane is CertificateStorePlane {
  const p = plane as Partial<CertificateStorePlane>
  return typeof p.getCertificate === 'function' && typeof p.lockCertificate === 'function' && typeof p.unlockCertificate === 'function'
}

interface LocalHold { released: Promise<void>, release: () => void }

export class ControlCertStore implements CertStore {
  /** `<gateway id>/<per-process random id>`: who holds the locks this store takes. */
  readonly holder: string
  readonly #plane: CertificateStorePlane
  readonly #logger: Logger | undefined
  readonly #lockWaitMs: number
  readonly #lockPollMs: number
  readonly #attempts: number
  readonly #retryDelayMs: number
  readonly #held = new Map<string, LocalHold>()

  constructor (options: ControlCertStoreOptions) {
    this.#plane = options.plane
    this.holder = `${options.gatewayId}/${randomBytes(9).toString('base64url')}`
    this.#logger = options.logger
    this.#lockWaitMs = options.lockWaitMs ?? 120_000
    this.#lockPollMs = options.lockPollMs ?? 1_000
    this.#attempts = Math.max(1, options.attempts ?? 4)
    this.#retryDelayMs = options.retryDelayMs ?? 250
  }

  async get (name: string): Promise<CertificateRecord | undefined> {
    storageKey(name)
    const stored = await this.#call(`get ${name}`, async () => await this.#plane.getCertificate(name))
    if (stored === null) return undefined
    return { name: stored.name, certificatePem: stored.certificatePem, privateKeyPem: stored.privateKeyPem, issuer: stored.issuer }
  }

  async put (record: CertificateRecord): Promise<void> {
    storageKey(record.name)
    const { name, certificatePem, privateKeyPem, issuer } = record
    await this.#call(`put ${name}`, async () => { await this.#plane.putCertificate({ name, certificatePem, privateKeyPem, issuer }) })
  }

  async delete (name: string): Promise<void> {
    storageKey(name)
    await this.#call(`delete ${name}`, async () => await this.#plane.deleteCertificate(name))
  }

  async list (): Promise<string[]> {
    return await this.#call('list', async () => await this.#plane.listCertificates())
  }

  async lock (name: string, ttlMs: number): Promise<void> {
    storageKey(name)
    const deadline = Date.now() + this.#lockWaitMs
    // Local queue first: control cannot tell two callers of this process apart.
    for (let hold = this.#held.get(name); hold !== undefined; hold = this.#held.get(name)) {
      const left = deadline - Date.now()
      if (left <= 0) throw this.#timeout(name)
      const timer = new AbortController()
      await Promise.race([hold.released, sleep(left, undefined, { signal: timer.signal }).catch(() => {})])
      timer.abort()
    }
    let release!: () => void
    const released = new Promise<void>(resolve => { release = resolve })
    this.#held.set(name, { released, release })
    try {
      while (true) {
        const reply = await this.#call(`lock ${name}`, async () => await this.#plane.lockCertificate({ name, holder: this.holder, ttlMs }))
        if (reply.acquired) return
        if (Date.now() + this.#lockPollMs > deadline) throw this.#timeout(name)
        await sleep(this.#lockPollMs)
      }
    } catch (err) {
      this.#held.delete(name)
      release()
      throw err
    }
  }

  async unlock (name: string): Promise<void> {
    const hold = this.#held.get(name)
    if (hold === undefined) return
    try {
      const released = await this.#call(`unlock ${name}`, async () => await this.#plane.unlockCertificate({ name, holder: this.holder }))
      // Not released: it expired and another holder took it over; nothing of ours to free.
      if (!released) this.#logger?.warn({ hostname: name, holder: this.holder }, 'certificate lock had expired before it was released')
    } finally {
      this.#held.delete(name)
      hold.release()
    }
  }

  #timeout (name: string): CertStoreError {
    return new CertStoreError('LOCK_TIMEOUT', `lock ${name} still held by another gateway after ${this.#lockWaitMs} ms`)
  }

  /** `body` with bounded retries on retryable failures; other failures at once, as CertStoreError. */
  async #call<T> (what: string, body: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await body()
      } catch (err) {
        const retryable = !(err instanceof RpcError) || err.retryable
        if (!retryable || attempt >= this.#attempts) throw describe(what, err, attempt)
        const delay = this.#retryDelayMs * 2 ** (attempt - 1)
        this.#logger?.debug({ what, attempt, delay, err: (err as Error).message }, 'certificate store call failed; retrying')
        await sleep(delay)
      }
    }
  }
}

function describe (what: string, err: unknown, attempts: number): CertStoreError {
  const message = err instanceof Error ? err.message : String(err)
  if (err instanceof RpcError && err.code === 'NOT_FOUND') {
    return new CertStoreError('UNAVAILABLE', `certificate store (control): ${what}: control offers no certificate store (${message}); upgrade control or set CC_CERT_STORE=file`)
  }
  const tries = attempts === 1 ? '' : ` (after ${attempts} attempts)`
  return new CertStoreError('UNAVAILABLE', `certificate store (control): ${what}: ${message}${tries}`)
}
