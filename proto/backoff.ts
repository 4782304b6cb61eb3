/**
 * Exponential backoff for retry loops, one formula for the gateway's and the agent's: the ceiling
 * doubles per step from `initialMs` up to `maxMs`, and a uniform [0, 1) `jitter` draw spreads the
 * wait so a fleet that lost its peer at the same moment does not come back in lockstep.
 *
 *   'spread25'  the ceiling +-25 % (the gateway against control)
 *   'equal'     between half and all of the ceiling ("equal jitter": no wait collapses to zero; the agent)
 */
export type JitterKind = 'spread25' | 'equal'

export interface BackoffLimits {
  /** First ceiling, ms. */
  initialMs: number
  /** Largest ceiling, ms. */
  maxMs: number
}

/** The wait after `step` earlier doublings (0: the first ceiling, initialMs), in whole ms. */
export function backoffDelay (step: number, limits: BackoffLimits, jitter: number, kind: JitterKind): number {
  const ceiling = Math.min(limits.maxMs, limits.initialMs * 2 ** Math.min(30, step))
  return Math.round(kind === 'equal' ? ceiling / 2 + jitter * ceiling / 2 : ceiling * (0.75 + jitter * 0.5))
}
