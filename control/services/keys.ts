/**
 * Token signing keys: one HMAC-SHA256 secret per token kind (RFC 8725 3.9: a token of one kind can
 * never verify as another). From configuration, or, for the embedded single-node default,
 * generated once into `<dataDir>/token-keys.json` (mode 0600) and reused on every start.
 */
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { ensurePrivateDirectory } from '../db/private-files.ts'
import { join } from 'node:path'
import type { Logger } from 'pino'

export interface TokenKeys {
  access: Uint8Array
  refresh: Uint8Array
  instance: Uint8Array
}

type KeyKind = keyof TokenKeys
const KINDS: KeyKind[] = ['access', 'refresh', 'instance']
const KEY_FILE = 'token-keys.json'

function decode (value: string): Uint8Array {
  return new Uint8Array(Buffer.from(value, 'base64url'))
}

export interface KeySources {
  access?: string
  refresh?: string
  instance?: string
}

export function loadTokenKeys (configured: KeySources, dataDir: string, logger?: Logger): TokenKeys {
  if (KINDS.every(k => configured[k] !== undefined)) {
    return { access: decode(configured.access!), refresh: decode(configured.refresh!), instance: decode(configured.instance!) }
  }
  const path = join(dataDir, KEY_FILE)
  let stored: Partial<Record<KeyKind, string>> = {}
  try {
    stored = JSON.parse(readFileSync(path, 'utf8')) as typeof stored
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new Error(`cannot read ${path}: ${(err as Error).message}`)
  }
  let changed = false
  for (const kind of KINDS) {
    if (typeof stored[kind] !== 'string' || decode(stored[kind]).length < 32) {
      stored[kind] = randomBytes(32).toString('base64url')
      changed = true
    }
  }
  if (changed) {
    ensurePrivateDirectory(dataDir)
    writeFileSync(path, JSON.stringify(stored, null, 2) + '\n', { mode: 0o600 })
    logger?.info({ path }, 'generated token signing keys')
  }
  return {
    access: decode(configured.access ?? stored.access!),
    refresh: decode(configured.refresh ?? stored.refresh!),
    instance: decode(configured.instance ?? stored.instance!),
  }
}
