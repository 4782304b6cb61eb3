/**
 * The agent's state file: its WireGuard key pair (generated here; the private key never leaves the
 * container), the last registration the API returned, and the connection state that
 * `cloud-connect agent status` reports. Written atomically (temporary file + rename) with mode
 * 0600 in a directory created 0700; reused on restart so the same key stays registered.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs'
import { dirname, join, basename } from 'node:path'
import { decodeKey, encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../proto/noise/keys.ts'
import type { RegisterTunnelResponse } from '../proto/api/tunnel.ts'

/** The spec's `cloud_connect_status` values. */
export const CONNECTION_STATUSES = ['disconnected', 'connecting', 'connected', 'error'] as const
export type ConnectionStatus = typeof CONNECTION_STATUSES[number]

export interface AgentState {
  version: 1
  /** base64 WireGuard keys (`wg genkey` / `wg pubkey` format). */
  private_key: string
  public_key: string
  /** The API the registration below came from (a new API URL means registering again). */
  api_url: string | null
  registration: Pick<RegisterTunnelResponse, 'tunnel_config' | 'domains'> & { registered_at: string } | null
  status: ConnectionStatus
  last_error: string | null
  /** Loopback address of the running agent's status endpoint, `host:port`. */
  status_listen: string | null
  mode: 'userspace' | 'kernel' | null
  pid: number | null
  /** When `status` last changed. */
  since: string
  updated_at: string
}

export class StateFileError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'StateFileError'
  }
}

export function freshState (now = new Date()): AgentState {
  const privateKey = generatePrivateKey()
  return {
    version: 1,
    private_key: encodeKey(privateKey),
    public_key: encodeKey(publicKeyFromPrivate(privateKey)),
    api_url: null,
    registration: null,
    status: 'disconnected',
    last_error: null,
    status_listen: null,
    mode: null,
    pid: null,
    since: now.toISOString(),
    updated_at: now.toISOString(),
  }
}

/** Reads the state file; null when there is none. Throws StateFileError when it is unusable. */
export function readState (path: string): AgentState | null {
  let text: string
  try {
    text = readFileSync(path, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
    throw new StateFileError(`cannot read the state file ${path}: ${(err as Error).message}`)
  }
  let value: Partial<AgentState>
  try {
    value = JSON.parse(text) as Partial<AgentState>
  } catch {
    throw new StateFileError(`the state file ${path} is not JSON`)
  }
  if (value === null || typeof value !== 'object' || value.version !== 1 || typeof value.private_key !== 'string') {
    throw new StateFileError(`the state file ${path} is not an agent state file`)
  }
  let privateKey: Buffer
  try {
    privateKey = decodeKey(value.private_key)
  } catch {
    throw new StateFileError(`the state file ${path} holds no valid private key`)
  }
  const now = new Date().toISOString()
  return {
    version: 1,
    private_key: value.private_key,
    // Always derived: a hand-edited public key cannot disagree with the private one.
    public_key: encodeKey(publicKeyFromPrivate(privateKey)),
    api_url: typeof value.api_url === 'string' ? value.api_url : null,
    registration: value.registration ?? null,
    status: CONNECTION_STATUSES.includes(value.status as ConnectionStatus) ? value.status as ConnectionStatus : 'disconnected',
    last_error: typeof value.last_error === 'string' ? value.last_error : null,
    status_listen: typeof value.status_listen === 'string' ? value.status_listen : null,
    mode: value.mode === 'kernel' || value.mode === 'userspace' ? value.mode : null,
    pid: typeof value.pid === 'number' ? value.pid : null,
    since: typeof value.since === 'string' ? value.since : now,
    updated_at: typeof value.updated_at === 'string' ? value.updated_at : now,
  }
}

/**
 * Loads the state, or creates one with a new key pair. A file that cannot be parsed is moved
 * aside (`<file>.unusable-<time>`) and replaced: a new key only means registering again.
 */
export function loadOrCreateState (path: string, onReplaced?: (reason: string, movedTo: string) => void): AgentState {
  try {
    const state = readState(path)
    if (state !== null) {
      tightenMode(path)
      return state
    }
  } catch (err) {
    if (!(err instanceof StateFileError) || !existsSync(path)) throw err
    const movedTo = join(dirname(path), `${basename(path)}.unusable-${Date.now()}`)
    renameSync(path, movedTo)
    onReplaced?.(err.message, movedTo)
  }
  const state = freshState()
  writeState(path, state)
  return state
}

/** Atomic write, mode 0600; the directory is created 0700 when missing. */
export function writeState (path: string, state: AgentState): void {
  const dir = dirname(path)
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 })
  const tmp = join(dir, `.${basename(path)}.${process.pid}.tmp`)
  writeFileSync(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 })
  chmodSync(tmp, 0o600)
  renameSync(tmp, path)
}

function tightenMode (path: string): void {
  if ((statSync(path).mode & 0o077) !== 0) chmodSync(path, 0o600)
}
