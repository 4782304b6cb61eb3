/**
 * Time as the control loops see it (the agent's, the gateway's ControlClient): what time it is and
 * a wait that a stop cuts short. Injected so tests drive the loops on a fake clock instead of real
 * seconds; the data plane's cores take `now` as an argument for the same reason.
 */
import { setTimeout as delay } from 'node:timers/promises'

export interface Clock {
  /** Wall-clock milliseconds (Date.now's scale: reports and the state file print them). */
  now (): number
  /** Resolves after `ms`, or at once when `signal` aborts; never rejects. */
  sleep (ms: number, signal?: AbortSignal): Promise<void>
}

export const systemClock: Clock = {
  now: () => Date.now(),
  sleep: async (ms, signal) => {
    if (ms <= 0 || signal?.aborted === true) return
    await delay(ms, undefined, { signal }).catch(() => {})
  },
}
