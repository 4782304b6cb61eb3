/**
 * The one rule for tests that need something this machine may lack (root and the network-namespace
 * lab, wireguard-tools, Chromium): without it the test is skipped with the reason printed, and under
 * CC_REQUIRE_INTEROP=1 (`.ci/run`) it fails instead, so CI can never pass without having run it.
 * (Postgres has its own guard, helpers/postgres.ts, which runs the same rule as a subtest.)
 */
import { spawnSync } from 'node:child_process'

interface Guarded { fail (message: string): void, comment (message: string): void, plan (n: number, comment?: string): void }

/** Skips (or, under CC_REQUIRE_INTEROP=1, fails) `t` because `what` is unavailable for `reason`; returns false. */
export function unavailable (t: Guarded, what: string, reason: string): false {
  if (process.env.CC_REQUIRE_INTEROP === '1') {
    t.fail(`${what} required (CC_REQUIRE_INTEROP=1) but unavailable: ${reason}`)
  } else {
    t.comment(`${what} unavailable: ${reason}`)
    t.plan(0, `${what} unavailable: ${reason}`)
  }
  return false
}

/** True when `wg` (wireguard-tools) runs; else `unavailable`. */
export function requireWg (t: Guarded): boolean {
  const probe = spawnSync('wg', ['--version'], { encoding: 'utf8' })
  if (probe.error === undefined && probe.status === 0) return true
  return unavailable(t, 'wg (wireguard-tools)', probe.error?.message ?? (probe.stderr.trim() || `exit ${String(probe.status)}`))
}
