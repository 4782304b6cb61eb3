/**
 * Certificate storage and issuance locks (modelled on certmagic's Storage and Locker): one
 * interface with a file-backed implementation for a single node; the control-backed one
 * (gateway/control/cert-store.ts) serves a fleet. Keys are names: a hostname or a one-label wildcard (`*.example.com`), lower case.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { X509Certificate, createPrivateKey } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { CodedError } from '../../proto/errors.ts'
import { writeAtomic } from '../atomic-write.ts'
import { CERTIFICATE_NAME } from '../../proto/rpc/schemas.ts'

export interface CertificateRecord {
  /** Hostname or wildcard the certificate was obtained for. */
  name: string
  /** PEM chain, leaf first. */
  certificatePem: string
  /** PEM PKCS#8 private key of the leaf. */
  privateKeyPem: string
  /** Which issuer produced it ('local-ca', 'acme:<directory>', 'manual'). */
  issuer: string
}

/**
 * The contract every store keeps:
 * - get() returns undefined for a name never stored or deleted, never a partial record.
 * - put() replaces the record; readers see the old or the new one. Private keys are readable by
 *   the gateway alone (files: mode 0600).
 * - list() names every stored record.
 * - lock(name, ttlMs) returns once this caller holds the named lock; while another holder's lock
 *   is unexpired it waits. A lock whose holder died expires after ttlMs and is taken over, so a
 *   crash never wedges issuance. unlock() releases a lock this caller holds.
 * Locks guard issuance (one order per name across gateways); reads need no lock.
 */
export interface CertStore {
  get (name: string): Promise<CertificateRecord | undefined>
  put (record: CertificateRecord): Promise<void>
  delete (name: string): Promise<void>
  list (): Promise<string[]>
  lock (name: string, ttlMs: number): Promise<void>
  unlock (name: string): Promise<void>
}

/** UNAVAILABLE: a remote store (control) failed or could not be reached after its retries. */
export type CertStoreErrorCode = 'INVALID_NAME' | 'LOCK_TIMEOUT' | 'UNAVAILABLE'

export class CertStoreError extends CodedError<CertStoreErrorCode> {
  override readonly name = 'CertStoreError'
}

/** File-system-safe form of a certificate name (no path separators can survive CERTIFICATE_NAME). */
export function storageKey (name: string): string {
  if (name.length > 253 || !CERTIFICATE_NAME.test(name)) throw new CertStoreError('INVALID_NAME', `not a certificate name: ${JSON.stringify(name)}`)
  return name.startsWith('*.') ? `wildcard_${name.slice(1)}` : name
}

function nameFromKey (key: string): string {
  return key.startsWith('wildcard_.') ? `*${key.slice('wildcard_'.length)}` : key
}

export interface FileCertStoreOptions {
  /** Directory for certificates/ and locks/. Created (0700) when missing. */
  directory: string
  /** How long lock() waits for another holder before failing (default 2 min). */
  lockWaitMs?: number
  /** How often lock() looks again while waiting (default 250 ms). */
  lockPollMs?: number
  /** Clock for lock expiry (ms since the epoch). */
  now?: () => number
}

/**
 * Layout: `<dir>/certificates/<name>/certificate.pem` (0644), `private-key.pem` (0600),
 * `meta.json`; `<dir>/locks/<name>.lock` holding `{expiresAt}`. Each file is written to a
 * temporary name and renamed into place; the key is written before the certificate, and get()
 * checks that the two belong together, so a reader racing a put sees a whole record or none.
 */
export class FileCertStore implements CertStore {
  readonly directory: string
  private readonly lockWaitMs: number
  private readonly lockPollMs: number
  private readonly now: () => number
  private readonly held = new Set<string>()

  constructor (options: FileCertStoreOptions) {
    this.directory = options.directory
    this.lockWaitMs = options.lockWaitMs ?? 120_000
    this.lockPollMs = options.lockPollMs ?? 250
    this.now = options.now ?? Date.now
  }

  private certDir (name: string): string {
    return path.join(this.directory, 'certificates', storageKey(name))
  }

  private lockPath (name: string): string {
    return path.join(this.directory, 'locks', `${storageKey(name)}.lock`)
  }

  async get (name: string): Promise<CertificateRecord | undefined> {
    const dir = this.certDir(name)
    try {
      const [certificatePem, privateKeyPem, metaText] = await Promise.all([
        fs.readFile(path.join(dir, 'certificate.pem'), 'utf8'),
        fs.readFile(path.join(dir, 'private-key.pem'), 'utf8'),
        fs.readFile(path.join(dir, 'meta.json'), 'utf8').catch(() => '{}'),
      ])
      const meta = JSON.parse(metaText) as { issuer?: unknown }
      if (!keyMatchesCertificate(certificatePem, privateKeyPem)) return undefined
      return { name, certificatePem, privateKeyPem, issuer: typeof meta.issuer === 'string' ? meta.issuer : 'unknown' }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
      throw err
    }
  }

  async put (record: CertificateRecord): Promise<void> {
    const dir = this.certDir(record.name)
    await fs.mkdir(dir, { recursive: true, mode: 0o700 })
    await writeAtomic(path.join(dir, 'private-key.pem'), record.privateKeyPem, 0o600)
    await writeAtomic(path.join(dir, 'certificate.pem'), record.certificatePem, 0o644)
    await writeAtomic(path.join(dir, 'meta.json'), JSON.stringify({ issuer: record.issuer, storedAt: new Date(this.now()).toISOString() }) + '\n', 0o644)
  }

  async delete (name: string): Promise<void> {
    await fs.rm(this.certDir(name), { recursive: true, force: true })
  }

  async list (): Promise<string[]> {
    try {
      const entries = await fs.readdir(path.join(this.directory, 'certificates'), { withFileTypes: true })
      return entries.filter(e => e.isDirectory()).map(e => nameFromKey(e.name)).filter(n => CERTIFICATE_NAME.test(n)).sort()
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return []
      throw err
    }
  }

  async lock (name: string, ttlMs: number): Promise<void> {
    const file = this.lockPath(name)
    await fs.mkdir(path.dirname(file), { recursive: true, mode: 0o700 })
    const deadline = this.now() + this.lockWaitMs
    while (true) {
      try {
        await fs.writeFile(file, JSON.stringify({ expiresAt: this.now() + ttlMs, pid: process.pid }), { flag: 'wx', mode: 0o600 })
        this.held.add(name)
        return
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      }
      if (await this.lockExpired(file)) {
        // Take over a dead holder's lock: remove it and race for it again like everyone else.
        await fs.rm(file, { force: true })
        continue
      }
      if (this.now() >= deadline) throw new CertStoreError('LOCK_TIMEOUT', `lock ${name} still held after ${this.lockWaitMs} ms`)
      await sleep(this.lockPollMs)
    }
  }

  private async lockExpired (file: string): Promise<boolean> {
    try {
      const { expiresAt } = JSON.parse(await fs.readFile(file, 'utf8')) as { expiresAt?: unknown }
      return typeof expiresAt !== 'number' || expiresAt <= this.now()
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false // released meanwhile: retry
      // Unreadable or half-written: treat as expired only once it is clearly old.
      const st = await fs.stat(file).catch(() => undefined)
      return st !== undefined && st.mtimeMs + 10_000 < Date.now()
    }
  }

  async unlock (name: string): Promise<void> {
    if (!this.held.delete(name)) return
    await fs.rm(this.lockPath(name), { force: true })
  }
}

/** True when the first certificate of the PEM chain carries the public half of the key. */
export function keyMatchesCertificate (certificatePem: string, privateKeyPem: string): boolean {
  try {
    return new X509Certificate(certificatePem).checkPrivateKey(createPrivateKey(privateKeyPem))
  } catch {
    return false
  }
}
