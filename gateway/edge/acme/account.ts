/**
 * The ACME account key, kept through the CertStore so every gateway sharing a store uses one
 * account (and one orders budget at the CA). The store holds certificate records only, so the key
 * is stored as the key of a self-signed placeholder certificate under a reserved `.invalid` name
 * (RFC 6761 6.4: never a real hostname, so no route can collide with it).
 */
import { createHash, webcrypto, randomBytes } from 'node:crypto'
import 'reflect-metadata'
import * as x509 from '@peculiar/x509'
import type { CertStore } from '../cert-store.ts'

const crypto = webcrypto as unknown as Crypto
const EC_P256 = { name: 'ECDSA', namedCurve: 'P-256' } as const

/** Store name of the account key for one ACME directory. */
export function accountRecordName (directoryUrl: string): string {
  return `acme-account-${createHash('sha256').update(directoryUrl).digest('hex').slice(0, 16)}.invalid`
}

/** Load the account key for `directoryUrl`, creating it once (under the store's lock). */
export async function loadOrCreateAccountKey (store: CertStore, directoryUrl: string): Promise<string> {
  const name = accountRecordName(directoryUrl)
  const existing = await store.get(name)
  if (existing !== undefined) return existing.privateKeyPem
  await store.lock(name, 60_000)
  try {
    const again = await store.get(name)
    if (again !== undefined) return again.privateKeyPem
    const keys = await crypto.subtle.generateKey(EC_P256, true, ['sign', 'verify'])
    const now = Date.now()
    const placeholder = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: randomBytes(8).toString('hex').replace(/^[89a-f]/, '1'),
      name: `CN=${name}`,
      notBefore: new Date(now),
      notAfter: new Date(now + 100 * 365 * 86_400_000),
      signingAlgorithm: { name: 'ECDSA', hash: 'SHA-256' },
      keys,
    }, crypto)
    const der = Buffer.from(await crypto.subtle.exportKey('pkcs8', keys.privateKey))
    const privateKeyPem = x509.PemConverter.encode(der, 'PRIVATE KEY') + '\n'
    await store.put({ name, certificatePem: placeholder.toString('pem') + '\n', privateKeyPem, issuer: `acme-account:${directoryUrl}` })
    return privateKeyPem
  } finally {
    await store.unlock(name)
  }
}
