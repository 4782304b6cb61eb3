/**
 * The gateway secret: what gateways present (`Authorization: Bearer <secret>`) on the internal
 * RPC. From CC_GATEWAY_SECRET, else generated once into `<dataDir>/gateway-secret` (mode 0600) so
 * an embedded set-up needs no configuration and keeps its secret across restarts.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { ensurePrivateDirectory } from '../db/private-files.ts'
import { join } from 'node:path'
import type { Logger } from 'pino'

export const GATEWAY_SECRET_FILE = 'gateway-secret'
/** base64url of at least 32 bytes. */
export const GATEWAY_SECRET_PATTERN = /^[A-Za-z0-9_-]{43,512}$/

/** The configured secret, or the one stored in dataDir (created on first use). */
export function loadGatewaySecret (configured: string | undefined, dataDir: string, logger?: Logger): string {
  if (configured !== undefined) return configured
  const path = join(dataDir, GATEWAY_SECRET_FILE)
  try {
    const stored = readFileSync(path, 'utf8').trim()
    if (!GATEWAY_SECRET_PATTERN.test(stored)) throw new Error(`${path} does not hold a gateway secret (base64url, at least 43 characters)`)
    return stored
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  ensurePrivateDirectory(dataDir)
  const secret = randomBytes(32).toString('base64url')
  try {
    // 'wx': if another process created it first, use theirs.
    writeFileSync(path, secret + '\n', { mode: 0o600, flag: 'wx' })
    logger?.info({ path }, 'generated the gateway secret')
    return secret
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return loadGatewaySecret(undefined, dataDir, logger)
    throw err
  }
}

/**
 * Compares a presented secret with the expected one in time independent of where they differ
 * and of the presented length: both are hashed to 32 bytes first, then compared with
 * timingSafeEqual.
 */
export function secretMatches (presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest()
  const b = createHash('sha256').update(expected).digest()
  return timingSafeEqual(a, b)
}

/** The secret from an `Authorization: Bearer <secret>` header, or null. */
export function bearerSecret (header: string | undefined): string | null {
  if (header === undefined) return null
  const m = /^Bearer ([\x21-\x7e]{1,1024})$/.exec(header)
  return m === null ? null : m[1]
}
