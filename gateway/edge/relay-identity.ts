/**
 * The relay identity: a key and a self-signed certificate kept in the data dir (key 0600, like
 * the WireGuard key), generated at first start. Gateways authenticate each other by pinning the
 * SHA-256 fingerprint of this certificate (control distributes it in the snapshot's fleet), so
 * no CA, name or validity period is checked: the certificate is only a carrier for the key.
 */
import fs from 'node:fs/promises'
import path from 'node:path'
import { createHash, randomBytes, webcrypto, X509Certificate } from 'node:crypto'
// @peculiar/x509 resolves its algorithms through tsyringe, which needs the Reflect metadata API.
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import { keyMatchesCertificate } from './cert-store.ts'

const crypto = webcrypto as unknown as Crypto
const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const
const SIGNING = { name: 'ECDSA', hash: 'SHA-256' } as const
const LIFETIME_MS = 100 * 365 * 24 * 3_600_000

export const RELAY_DIRECTORY = 'relay'
export const RELAY_KEY_FILE = 'relay.key'
export const RELAY_CERTIFICATE_FILE = 'relay.crt'

export interface RelayIdentity {
  certificatePem: string
  privateKeyPem: string
  /** Lower-case hex SHA-256 of the certificate's DER. */
  fingerprint: string
}

export class RelayIdentityError extends Error {
  readonly code = 'RELAY_IDENTITY_INVALID'
  constructor (message: string) {
    super(message)
    this.name = 'RelayIdentityError'
  }
}

/** Lower-case hex SHA-256 of a certificate's DER (given as PEM or DER). */
export function certificateFingerprint (certificate: string | Buffer): string {
  const der = typeof certificate === 'string' ? new X509Certificate(certificate).raw : certificate
  return createHash('sha256').update(der).digest('hex')
}

/** Reads `<dataDir>/relay/relay.{key,crt}`, creating both on first use. */
export async function loadOrCreateRelayIdentity (dataDir: string): Promise<RelayIdentity> {
  const dir = path.join(dataDir, RELAY_DIRECTORY)
  const keyPath = path.join(dir, RELAY_KEY_FILE)
  const certPath = path.join(dir, RELAY_CERTIFICATE_FILE)
  await fs.mkdir(dir, { recursive: true, mode: 0o700 })
  let pair = await readPair(certPath, keyPath)
  if (pair === undefined) pair = await createPair(certPath, keyPath)
  if (!keyMatchesCertificate(pair.certificatePem, pair.privateKeyPem)) {
    throw new RelayIdentityError(`${certPath} and ${keyPath} do not belong together; move both away to create a new relay identity`)
  }
  // Private key material: readable by us alone.
  if (((await fs.stat(keyPath)).mode & 0o077) !== 0) await fs.chmod(keyPath, 0o600)
  return { ...pair, fingerprint: certificateFingerprint(pair.certificatePem) }
}

async function readPair (certPath: string, keyPath: string): Promise<{ certificatePem: string, privateKeyPem: string } | undefined> {
  // Another process may be between writing the key and the certificate: give it a moment.
  for (let attempt = 0; attempt < 20; attempt++) {
    const [cert, key] = await Promise.all([readOptional(certPath), readOptional(keyPath)])
    if (cert !== undefined && key !== undefined) return { certificatePem: cert, privateKeyPem: key }
    if (cert === undefined && key === undefined) return undefined
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  throw new RelayIdentityError(`only one of ${certPath} and ${keyPath} exists; restore the other or move both away`)
}

async function readOptional (file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}

async function createPair (certPath: string, keyPath: string): Promise<{ certificatePem: string, privateKeyPem: string }> {
  const keys = await crypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])
  const now = Date.now()
  const serial = randomBytes(16)
  serial[0] = (serial[0] & 0x7f) | 0x01 // RFC 5280 4.1.2.2: positive, at most 20 octets
  const certificate = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial.toString('hex'),
    name: `CN=Erugo Cloud Connect relay ${randomBytes(4).toString('hex')}`,
    notBefore: new Date(now - 3_600_000),
    notAfter: new Date(now + LIFETIME_MS),
    signingAlgorithm: SIGNING,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
    ],
  }, crypto)
  const certificatePem = certificate.toString('pem') + '\n'
  const privateKeyPem = x509.PemConverter.encode(Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey)), 'PRIVATE KEY') + '\n'
  const suffix = randomBytes(6).toString('hex')
  const tmpKey = `${keyPath}.${suffix}.tmp`
  const tmpCert = `${certPath}.${suffix}.tmp`
  await fs.writeFile(tmpKey, privateKeyPem, { mode: 0o600, flag: 'wx' })
  await fs.chmod(tmpKey, 0o600)
  await fs.writeFile(tmpCert, certificatePem, { mode: 0o644, flag: 'wx' })
  try {
    // link() fails if the key exists: two processes starting at once agree on the first identity.
    await fs.link(tmpKey, keyPath)
  } catch (err) {
    await Promise.all([fs.rm(tmpKey, { force: true }), fs.rm(tmpCert, { force: true })])
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    const theirs = await readPair(certPath, keyPath)
    if (theirs === undefined) throw new RelayIdentityError(`${keyPath} vanished while creating the relay identity`)
    return theirs
  }
  await fs.rm(tmpKey, { force: true })
  await fs.rename(tmpCert, certPath)
  return { certificatePem, privateKeyPem }
}
