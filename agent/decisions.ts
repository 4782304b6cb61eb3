/**
 * What the agent does after an answer or a failure of the API or the tunnel, decided from values
 * alone: the error, how many backoff steps were taken, a jitter draw. No I/O and no clock here;
 * the loops in agent.ts perform the decision (wait on their clock, record the state, exit).
 */
import { ApiError } from './api.ts'
import { backoffWait, type BackoffLimits } from './backoff.ts'
import { EXIT_KERNEL_UNAVAILABLE, EXIT_REFUSED, EXIT_TOKEN_REJECTED } from './exit-codes.ts'
import { TunnelUnavailableError } from './tunnel.ts'

/** Raised inside the agent for failures a restart cannot fix. */
export class FatalError extends Error {
  constructor (message: string, readonly exitCode: number) {
    super(message)
    this.name = 'FatalError'
  }
}

/** Heartbeat interval bounds whatever the API says: not a busy loop, not silence. */
export const HEARTBEAT_MIN_MS = 5_000
export const HEARTBEAT_MAX_MS = 3_600_000

/** Where a retry series stands. */
export interface RetryInput {
  /** Backoff steps taken since the last success. */
  attempt: number
  /** Uniform [0, 1) draw for the backoff's jitter. */
  jitter: number
  limits: BackoffLimits
}

/** Retrying cannot help: stop with `code` (exit-codes.ts). */
export interface Fatal { kind: 'fatal', code: number, message: string }
/**
 * Wait `ms`, then try again. `message`: what to record as the last error (null: nothing);
 * `grows`: this wait was a backoff step, so the next one is longer.
 */
export interface Retry { kind: 'retry', ms: number, message: string | null, grows: boolean }
/** 402: state `error` with `message`, tried again after the longest backoff (an upgrade fixes it). */
export interface Suspended { kind: 'suspended', ms: number, message: string }
/** A heartbeat went through: the next one after `ms`. */
export interface Beat { kind: 'ok', ms: number }

export const fatal = (code: number, message: string): Fatal => ({ kind: 'fatal', code, message })
export const retry = <M extends string | null>(ms: number, message: M, grows = true): Retry & { message: M } => ({ kind: 'retry', ms, message, grows })

/** The API's verdicts that no retry changes: a rejected token, or an answer that is not the API's. */
function fatalAnswer (err: ApiError): Fatal | null {
  if (err.failure === 'token_rejected') return fatal(EXIT_TOKEN_REJECTED, err.message)
  if (err.failure === 'refused') return fatal(EXIT_REFUSED, err.message)
  return null
}

/** A failed registration or tunnel set-up. */
export function registrationFailure (err: unknown, at: RetryInput): Fatal | Retry | Suspended {
  if (err instanceof FatalError) return fatal(err.exitCode, err.message)
  if (err instanceof ApiError) {
    const answer = fatalAnswer(err)
    if (answer !== null) return answer
    // The key pair was replaced already: register the new one at once.
    if (err.failure === 'key_in_use') return retry(0, null, false)
    if (err.failure === 'subscription_required') return { kind: 'suspended', ms: at.limits.maxMs, message: err.message }
    return retry(Math.max(err.retryAfterMs ?? 0, backoffWait(at.attempt, at.limits, at.jitter)), err.message)
  }
  if (err instanceof TunnelUnavailableError) return fatal(EXIT_KERNEL_UNAVAILABLE, err.message)
  return retry(backoffWait(at.attempt, at.limits, at.jitter), `cannot bring the tunnel up: ${(err as Error).message}`)
}

/** The wait the API asks for between heartbeats (`next_heartbeat_in`, seconds), within the bounds. */
export function heartbeatInterval (nextHeartbeatInSeconds: number): number {
  const ms = nextHeartbeatInSeconds * 1000
  return Number.isFinite(ms) ? Math.min(HEARTBEAT_MAX_MS, Math.max(HEARTBEAT_MIN_MS, ms)) : HEARTBEAT_MIN_MS
}

export function heartbeatAnswered (nextHeartbeatInSeconds: number): Beat {
  return { kind: 'ok', ms: heartbeatInterval(nextHeartbeatInSeconds) }
}

/** A failed heartbeat: 401 and answers that are not the API's are fatal, the rest backs off. */
export function heartbeatFailure (err: unknown, at: RetryInput): Fatal | Retry & { message: string } {
  const answer = err instanceof ApiError ? fatalAnswer(err) : null
  if (answer !== null) return answer
  const retryAfterMs = err instanceof ApiError ? err.retryAfterMs : null
  return retry(Math.max(retryAfterMs ?? 0, backoffWait(at.attempt, at.limits, at.jitter)), `heartbeat failed: ${(err as Error).message}`)
}
