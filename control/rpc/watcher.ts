/**
 * Waits for the gateway configuration version to change. Every change of the peer set bumps
 * `gateway_config.version` in its own transaction (services/tunnel.ts bumpConfigVersion), in this
 * process or another control replica, so the watcher reads that one row: at once when told of a
 * change (`poke()`: a Postgres notification from any replica, db/notify.ts), and otherwise every
 * `pollMs` while at least one long-poll is waiting, never when none is. While a notification
 * listener is up (`listening`), the poll slows to `listeningPollMs`, a safety net only.
 */
import type { Logger } from 'pino'

export class VersionWatcher {
  readonly #read: () => Promise<number>
  readonly #pollMs: number
  readonly #listeningPollMs: number
  #listening = false
  readonly #logger: Logger | undefined
  readonly #waiters = new Set<{ since: number, done: (changed: boolean) => void }>()
  #timer: NodeJS.Timeout | null = null
  #reading = false
  /** A poke came while a read was in flight (it may have started before the change committed). */
  #readAgain = false
  /** The highest version read so far (versions only grow). */
  #latest = -Infinity
  #closed = false

  constructor (read: () => Promise<number>, options: { pollMs?: number, listeningPollMs?: number, logger?: Logger } = {}) {
    this.#read = read
    this.#pollMs = options.pollMs ?? 250
    this.#listeningPollMs = options.listeningPollMs ?? 5_000
    this.#logger = options.logger
  }

  get waiting (): number { return this.#waiters.size }

  /**
   * Resolves true once the version differs from `since`, false after `timeoutMs`, on abort or on
   * close. Never rejects (a failing read is logged and retried at the next poll).
   */
  async wait (since: number, timeoutMs: number, signal?: AbortSignal): Promise<boolean> {
    if (this.#closed || signal?.aborted === true) return false
    // A read (e.g. for a notification) between the caller's own read and this wait already saw it.
    if (this.#latest > since) return true
    return await new Promise<boolean>(resolve => {
      const waiter = {
        since,
        done: (changed: boolean): void => {
          if (!this.#waiters.delete(waiter)) return
          clearTimeout(timer)
          signal?.removeEventListener('abort', onAbort)
          resolve(changed)
        },
      }
      const onAbort = (): void => { waiter.done(false) }
      const timer = setTimeout(() => { waiter.done(false) }, timeoutMs)
      signal?.addEventListener('abort', onAbort, { once: true })
      this.#waiters.add(waiter)
      this.#schedule()
    })
  }

  get listening (): boolean { return this.#listening }

  /**
   * Whether changes are notified (then polling slows down). Either way the version is read now:
   * a listener that just came up may have missed notifications while it was down.
   */
  set listening (listening: boolean) {
    this.#listening = listening
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    this.poke()
    this.#schedule()
  }

  /** Reads the version now and wakes every waiter it concerns. */
  poke (): void {
    void this.#poll()
  }

  /** Ends every wait (false) and stops polling. */
  close (): void {
    this.#closed = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    for (const w of [...this.#waiters]) w.done(false)
  }

  #schedule (): void {
    if (this.#timer !== null || this.#closed || this.#waiters.size === 0) return
    this.#timer = setTimeout(() => {
      this.#timer = null
      void this.#poll()
    }, this.#listening ? this.#listeningPollMs : this.#pollMs)
  }

  async #poll (): Promise<void> {
    if (this.#closed) return
    if (this.#reading) {
      this.#readAgain = true
      return
    }
    this.#reading = true
    try {
      const version = await this.#read()
      this.#latest = Math.max(this.#latest, version)
      for (const w of [...this.#waiters]) if (w.since !== version) w.done(true)
    } catch (err) {
      this.#logger?.warn({ err: (err as Error).message }, 'reading the configuration version failed')
    } finally {
      this.#reading = false
      if (this.#readAgain) {
        this.#readAgain = false
        void this.#poll()
      }
      this.#schedule()
    }
  }
}
