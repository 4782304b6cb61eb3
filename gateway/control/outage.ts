/**
 * The gateway's retries against control: the wait after the n-th consecutive failure and how
 * loudly to say so, decided from values alone (controlFailure); Outage keeps the count and logs.
 */
import type { Logger } from 'pino'
import { backoffDelay } from '../../proto/backoff.ts'
import { RpcError } from '../../proto/rpc/index.ts'

export interface BackoffOptions {
  initialMs?: number
  maxMs?: number
}

/** Backoff for the n-th consecutive failure (n >= 1): initial * 2^(n-1), capped, +-25 % by `jitter` in [0, 1). */
export function backoffMs (failures: number, options: BackoffOptions, jitter: number): number {
  return backoffDelay(failures - 1, { initialMs: options.initialMs ?? 500, maxMs: options.maxMs ?? 30_000 }, jitter, 'spread25')
}

/** Wait `ms` and try again; `log`: the level of this failure's line. */
export interface ControlRetry { kind: 'retry', ms: number, log: 'error' | 'warn' | 'debug' }

/**
 * The n-th consecutive failure: logged at its start and every 10th, quietly in between; a refused
 * secret or protocol will not fix itself, so it is an error, the rest warnings.
 */
export function controlFailure (failures: number, err: unknown, backoff: BackoffOptions, jitter: number): ControlRetry {
  const loud = failures === 1 || failures % 10 === 0
  const log = !loud ? 'debug' : err instanceof RpcError && !err.retryable ? 'error' : 'warn'
  return { kind: 'retry', ms: backoffMs(failures, backoff, jitter), log }
}

/** Counts an outage's failures and logs its start, every 10th failure and its end. */
export class Outage {
  #failures = 0
  readonly #logger: Logger
  readonly #message: string
  readonly #backoff: BackoffOptions
  readonly #random: () => number

  constructor (logger: Logger, message: string, backoff: BackoffOptions = {}, random: () => number = Math.random) {
    this.#logger = logger
    this.#message = message
    this.#backoff = backoff
    this.#random = random
  }

  /** Records a failure; answers the wait before the next attempt. */
  fail (err: unknown): number {
    this.#failures++
    const decision = controlFailure(this.#failures, err, this.#backoff, this.#random())
    const code = err instanceof RpcError ? err.code : undefined
    this.#logger[decision.log]({ err: (err as Error).message, code, failures: this.#failures, retryInMs: decision.ms }, this.#message)
    return decision.ms
  }

  over (): void {
    if (this.#failures > 0) this.#logger.info({ failures: this.#failures }, 'control plane reachable again')
    this.#failures = 0
  }
}
