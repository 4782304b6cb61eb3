/**
 * Jittered exponential backoff for reconnect loops: attempt n waits between half and all of
 * min(max, initial * 2^n) ("equal jitter", proto/backoff.ts), so a fleet of agents that lost the
 * API at the same moment does not come back in lockstep, and no wait collapses to zero.
 */
import { backoffDelay, type BackoffLimits } from '../proto/backoff.ts'

export type { BackoffLimits }

export interface BackoffOptions extends BackoffLimits {
  /** Uniform [0, 1) source (tests inject a fixed one). */
  random?: () => number
}

/** The wait after `attempt` earlier steps (0: the first), `jitter` a uniform [0, 1) draw. */
export function backoffWait (attempt: number, limits: BackoffLimits, jitter: number): number {
  return backoffDelay(attempt, limits, jitter, 'equal')
}

export class Backoff {
  private attempt = 0
  private readonly random: () => number

  constructor (private readonly options: BackoffOptions) {
    if (!(options.initialMs > 0) || !(options.maxMs >= options.initialMs)) throw new RangeError('backoff needs 0 < initialMs <= maxMs')
    this.random = options.random ?? Math.random
  }

  /** The wait before the next attempt; each call grows the ceiling until maxMs. */
  next (): number {
    return backoffWait(this.attempt++, this.options, this.random())
  }

  /** After a success: the next failure starts again from initialMs. */
  reset (): void {
    this.attempt = 0
  }

  get attempts (): number {
    return this.attempt
  }
}
