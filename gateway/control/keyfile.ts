/**
 * The gateway's WireGuard private key kept in its data dir (`wg genkey` format, mode 0600),
 * generated on first start: a gateway run against a control plane keeps its identity, so the key
 * containers were told stays valid across restarts.
 */
import { chmodSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { dirname } from 'node:path'
import type { Logger } from 'pino'
import { decodeKey, encodeKey, generatePrivateKey } from '../../proto/noise/keys.ts'

export const GATEWAY_KEY_FILE = 'gateway.key'

export class KeyFileError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'KeyFileError'
  }
}

/** Reads the key at `path`, creating it when absent. Returns the base64 private key. */
export function loadOrCreateKey (path: string, logger?: Logger): string {
  try {
    const text = readFileSync(path, 'utf8').trim()
    try {
      decodeKey(text)
    } catch {
      throw new KeyFileError(`${path} does not hold a WireGuard private key (44 characters of base64, as 'cloud-connect keygen' prints)`)
    }
    // Private key material: readable by us alone.
    if ((statSync(path).mode & 0o077) !== 0) {
      chmodSync(path, 0o600)
      logger?.warn({ path }, 'the gateway key was readable by others: mode set to 0600')
    }
    return text
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  mkdirSync(dirname(path), { recursive: true })
  const key = encodeKey(generatePrivateKey())
  try {
    writeFileSync(path, key + '\n', { mode: 0o600, flag: 'wx' })
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return loadOrCreateKey(path, logger)
    throw err
  }
  logger?.info({ path }, 'generated the gateway key')
  return key
}
