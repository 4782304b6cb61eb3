/**
 * A certificate and its private key kept as two PEM files next to each other (the local CA, the
 * relay identity): read them when both exist, or publish a new pair so that processes starting at
 * once on the same directory agree on one (the first link() of the key wins; the others read it).
 */
import fs from 'node:fs/promises'
import { randomBytes } from 'node:crypto'

export interface PemPair { certificatePem: string, privateKeyPem: string }

/** `what` names the pair in errors ("the CA", "the relay identity"); `makeError` builds them. */
export interface PemPairFiles {
  certPath: string
  keyPath: string
  what: string
  makeError: (message: string) => Error
}

/** Both files, or undefined when neither exists; one without the other is an error (after a grace for a writer). */
export async function readPemPair (files: PemPairFiles): Promise<PemPair | undefined> {
  const { certPath, keyPath } = files
  // Another process may be between writing the key and the certificate: give it a moment.
  for (let attempt = 0; attempt < 20; attempt++) {
    const [cert, key] = await Promise.all([readOptional(certPath), readOptional(keyPath)])
    if (cert !== undefined && key !== undefined) return { certificatePem: cert, privateKeyPem: key }
    if (cert === undefined && key === undefined) return undefined
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  throw files.makeError(`only one of ${certPath} and ${keyPath} exists; restore the other or move both away`)
}

/**
 * Writes `pair` (key mode 0600, certificate 0644) unless another process got there first; returns
 * the pair now on disk.
 */
export async function publishPemPair (files: PemPairFiles, pair: PemPair): Promise<PemPair> {
  const { certPath, keyPath } = files
  const suffix = randomBytes(6).toString('hex')
  const tmpKey = `${keyPath}.${suffix}.tmp`
  const tmpCert = `${certPath}.${suffix}.tmp`
  await fs.writeFile(tmpKey, pair.privateKeyPem, { mode: 0o600, flag: 'wx' })
  await fs.chmod(tmpKey, 0o600)
  await fs.writeFile(tmpCert, pair.certificatePem, { mode: 0o644, flag: 'wx' })
  await fs.chmod(tmpCert, 0o644)
  try {
    // link() fails if the key exists: two processes starting at once agree on the first pair.
    await fs.link(tmpKey, keyPath)
  } catch (err) {
    await Promise.all([fs.rm(tmpKey, { force: true }), fs.rm(tmpCert, { force: true })])
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    const theirs = await readPemPair(files)
    if (theirs === undefined) throw files.makeError(`${keyPath} vanished while creating ${files.what}`)
    return theirs
  }
  await fs.rm(tmpKey, { force: true })
  await fs.rename(tmpCert, certPath)
  return pair
}

async function readOptional (file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
}
