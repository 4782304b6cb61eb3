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
import { publishPemPair, readPemPair, type PemPair, type PemPairFiles } from './pem-pair.ts'

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
  const files: PemPairFiles = { certPath, keyPath, what: 'the relay identity', makeError: message => new RelayIdentityError(message) }
  let pair = await readPemPair(files)
  if (pair === undefined) pair = await createPair(files)
  if (!keyMatchesCertificate(pair.certificatePem, pair.privateKeyPem)) {
    throw new RelayIdentityError(`${certPath} and ${keyPath} do not belong together; move both away to create a new relay identity`)
  }
  // Private key material: readable by us alone.
  if (((await fs.stat(keyPath)).mode & 0o077) !== 0) await fs.chmod(keyPath, 0o600)
  return { ...pair, fingerprint: certificateFingerprint(pair.certificatePem) }
}

async function createPair (files: PemPairFiles): Promise<PemPair> {
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
  return await publishPemPair(files, { certificatePem, privateKeyPem })
}
