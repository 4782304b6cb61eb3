/**
 * Jittered exponential backoff for reconnect loops: attempt n waits between half and all of
 * min(max, initial * 2^n) ("equal jitter"), so a fleet of agents that lost the API at the same
 * moment does not come back in lockstep, and no wait collapses to zero.
 */
export interface BackoffOptions {
  /** First ceiling, ms. */
  initialMs: number
  /** Largest ceiling, ms. */
  maxMs: number
  /** Uniform [0, 1) source (tests inject a fixed one). */
  random?: () => number
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
    const ceiling = Math.min(this.options.maxMs, this.options.initialMs * 2 ** Math.min(this.attempt, 30))
    this.attempt++
    return Math.round(ceiling / 2 + this.random() * ceiling / 2)
  }

  /** After a success: the next failure starts again from initialMs. */
  reset (): void {
    this.attempt = 0
  }

  get attempts (): number {
    return this.attempt
  }
}
