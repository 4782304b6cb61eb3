/**
 * The embedded default issuer: a private certificate authority kept in the data directory. It is
 * created once (ECDSA P-256, 10 years) and reused on every start; it signs ~90-day leaf
 * certificates whose only SAN is the requested name. Clients trust it by installing
 * `certificatePath` (curl --cacert, the `ca` option of node's tls).
 *
 * X.509 generation uses @peculiar/x509 over node's WebCrypto: maintained, typed, no native code,
 * and it builds the extensions we need (SAN, key usage, key identifiers) without OpenSSL CLI calls.
 * node-forge would work but is RSA-centred and slow for ECDSA; `selfsigned` cannot sign with a CA.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { webcrypto, randomBytes } from 'node:crypto'
// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import type { Issuer, IssuedCertificate } from './issuer.ts'
import { keyMatchesCertificate } from './cert-store.ts'
import { publishPemPair, readPemPair, type PemPair, type PemPairFiles } from './pem-pair.ts'

const crypto = webcrypto as unknown as Crypto
const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const

const HOUR = 3_600_000
const DAY = 24 * HOUR
export const CA_LIFETIME_MS = 3652 * DAY
export const LEAF_LIFETIME_MS = 90 * DAY
/** Certificates start an hour in the past so a client whose clock lags a little still accepts them. */
const BACKDATE_MS = HOUR
/** RFC 5280 A.1: ub-common-name is 64 characters; longer names go in the SAN only. */
const MAX_COMMON_NAME = 64

export interface LocalCaOptions {
  /** Directory for ca.crt (0644) and ca.key (0600); created (0700) when missing. */
  directory: string
  /** Clock (ms since the epoch) for validity periods. */
  now?: () => number
  leafLifetimeMs?: number
}

export class LocalCaError extends Error {
  readonly code = 'LOCAL_CA_INVALID'
  constructor (message: string) {
    super(message)
    this.name = 'LocalCaError'
  }
}

export class LocalCa implements Issuer {
  readonly id = 'local-ca'
  /** Path of the CA certificate (PEM) for clients to trust. */
  readonly certificatePath: string
  readonly certificatePem: string
  private readonly certificate: x509.X509Certificate
  private readonly signingKey: CryptoKey
  private readonly now: () => number
  private readonly leafLifetimeMs: number

  private constructor (certificatePath: string, certificatePem: string, signingKey: CryptoKey, options: LocalCaOptions) {
    this.certificatePath = certificatePath
    this.certificatePem = certificatePem
    this.certificate = new x509.X509Certificate(certificatePem)
    this.signingKey = signingKey
    this.now = options.now ?? Date.now
    this.leafLifetimeMs = options.leafLifetimeMs ?? LEAF_LIFETIME_MS
  }

  /** Load the CA from `directory`, creating it on first use. */
  static async open (options: LocalCaOptions): Promise<LocalCa> {
    const dir = options.directory
    const certPath = path.join(dir, 'ca.crt')
    const keyPath = path.join(dir, 'ca.key')
    await fs.mkdir(dir, { recursive: true, mode: 0o700 })
    const files: PemPairFiles = { certPath, keyPath, what: 'the CA', makeError: message => new LocalCaError(message) }
    let pair = await readPemPair(files)
    if (pair === undefined) pair = await createCa(files, options.now ?? Date.now)
    if (!keyMatchesCertificate(pair.certificatePem, pair.privateKeyPem)) {
      throw new LocalCaError(`${certPath} and ${keyPath} do not belong together; move both away to create a new CA`)
    }
    const signingKey = await importPkcs8(pair.privateKeyPem)
    return new LocalCa(certPath, pair.certificatePem, signingKey, options)
  }

  async issue (name: string): Promise<IssuedCertificate> {
    const keys = await crypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])
    const now = this.now()
    const subject = name.length <= MAX_COMMON_NAME ? `CN=${name}` : ''
    const leaf = await x509.X509CertificateGenerator.create({
      serialNumber: serialNumber(),
      subject,
      issuer: this.certificate.subject,
      notBefore: new Date(now - BACKDATE_MS),
      notAfter: new Date(now + this.leafLifetimeMs),
      signingAlgorithm: SIGNING,
      publicKey: keys.publicKey,
      signingKey: this.signingKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        // RFC 5280 4.2.1.6: the SAN is critical when the subject is empty.
        new x509.SubjectAlternativeNameExtension([{ type: 'dns', value: name }], subject === ''),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
        await x509.AuthorityKeyIdentifierExtension.create(this.certificate.publicKey, false, crypto),
      ],
    }, crypto)
    return { certificatePem: leaf.toString('pem') + '\n', privateKeyPem: await exportPkcs8(keys.privateKey) }
  }

  /** Validity of the CA itself (for status pages). */
  validity (): { notBefore: Date, notAfter: Date } {
    return { notBefore: this.certificate.notBefore, notAfter: this.certificate.notAfter }
  }
}


async function createCa (files: PemPairFiles, now: () => number): Promise<PemPair> {
  const keys = await crypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])
  const t = now()
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serialNumber(),
    name: `CN=Erugo Cloud Connect Local CA ${randomBytes(4).toString('hex')}, O=Erugo Cloud Connect`,
    notBefore: new Date(t - BACKDATE_MS),
    notAfter: new Date(t + CA_LIFETIME_MS),
    signingAlgorithm: SIGNING,
    keys,
    extensions: [
      // Path length 0: it signs leaves only.
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey, false, crypto),
    ],
  }, crypto)
  const certificatePem = ca.toString('pem') + '\n'
  const privateKeyPem = await exportPkcs8(keys.privateKey)
  return await publishPemPair(files, { certificatePem, privateKeyPem })
}

function serialNumber (): string {
  // RFC 5280 4.1.2.2: positive, at most 20 octets; 16 random octets with the top bit clear.
  const b = randomBytes(16)
  b[0] &= 0x7f
  if (b[0] === 0) b[0] = 1
  return b.toString('hex')
}

async function exportPkcs8 (key: CryptoKey): Promise<string> {
  const der = Buffer.from(await crypto.subtle.exportKey('pkcs8', key))
  return x509.PemConverter.encode(der, 'PRIVATE KEY') + '\n'
}

async function importPkcs8 (pem: string): Promise<CryptoKey> {
  const der = x509.PemConverter.decodeFirst(pem)
  try {
    return await crypto.subtle.importKey('pkcs8', der, EC_P256, false, ['sign'])
  } catch {
    throw new LocalCaError('the CA key is not an ECDSA P-256 PKCS#8 key')
  }
}
