/**
 * A Clock (proto/clock.ts) whose time moves only when the test moves it: sleepers wake in deadline
 * order as it advances, so a control loop's waits of seconds take no real time. `until` advances
 * it in steps and lets real I/O (loopback sockets) run between them.
 */
import type { Clock } from '../../proto/clock.ts'

interface Sleeper { at: number, wake: () => void }

export class FakeClock implements Clock {
  #now: number
  readonly #sleepers = new Set<Sleeper>()
  /** Every wait asked for, in order, ms (0 and negative ones too). */
  readonly requested: number[] = []

  constructor (start = Date.UTC(2026, 0, 1)) {
    this.#now = start
  }

  readonly now = (): number => this.#now

  readonly sleep = async (ms: number, signal?: AbortSignal): Promise<void> => {
    this.requested.push(ms)
    if (ms <= 0 || signal?.aborted === true) return
    await new Promise<void>(resolve => {
      const sleeper: Sleeper = {
        at: this.#now + ms,
        wake: () => {
          this.#sleepers.delete(sleeper)
          signal?.removeEventListener('abort', sleeper.wake)
          resolve()
        },
      }
      this.#sleepers.add(sleeper)
      signal?.addEventListener('abort', sleeper.wake, { once: true })
    })
  }

  /** Deadlines of the pending sleeps, earliest first. */
  get pending (): number[] {
    return [...this.#sleepers].map(s => s.at).sort((a, b) => a - b)
  }

  /**
   * Moves time `ms` forward, waking each sleeper whose deadline passes at its deadline, earliest
   * first; a woken loop that sleeps again within the span wakes again in it.
   */
  async advance (ms: number): Promise<void> {
    const end = this.#now + ms
    // Bounded: each wake needs a new sleep of at least 1 ms to come back.
    for (let i = 0; i <= ms + this.#sleepers.size; i++) {
      // Settled first: a loop about to sleep registers its deadline from the time it started.
      await new Promise(resolve => setImmediate(resolve))
      const next = [...this.#sleepers].filter(s => s.at <= end).sort((a, b) => a.at - b.at)[0]
      if (next === undefined) break
      this.#now = Math.max(this.#now, next.at)
      next.wake()
    }
    this.#now = end
  }

  /**
   * Advances `stepMs` at a time, with a real pause between steps for I/O, until `check` holds;
   * throws naming `what` after `maxMs` of fake time or `realTimeoutMs` of real time. Answers the
   * fake milliseconds it took.
   */
  async until (what: string, check: () => boolean | Promise<boolean>, { stepMs = 50, maxMs = 60_000, realTimeoutMs = 20_000 } = {}): Promise<number> {
    const start = this.#now
    const realStart = Date.now()
    while (!await check()) {
      if (this.#now - start > maxMs) throw new Error(`waited ${maxMs} ms on the fake clock for ${what}`)
      if (Date.now() - realStart > realTimeoutMs) throw new Error(`timed out after ${realTimeoutMs} ms (real) waiting for ${what}`)
      await this.advance(stepMs)
      await new Promise(resolve => setTimeout(resolve, 1))
    }
    return this.#now - start
  }
}
