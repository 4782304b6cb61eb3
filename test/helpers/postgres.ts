/**
 * The one guard of every test that needs a real Postgres server: CC_TEST_DATABASE_URL (set by
 * `.ci/run`), or else the test is skipped with the reason printed, and under CC_REQUIRE_INTEROP=1
 * it fails instead, so CI can never pass without having run it.
 */
import type { Test } from 'tap'

export const TEST_DATABASE_URL = process.env.CC_TEST_DATABASE_URL
export const REQUIRE_INTEROP = process.env.CC_REQUIRE_INTEROP === '1'

/** The server's URL, or undefined after skipping (or failing) subtest `name`: `why` says what needs it. */
export async function postgresOrSkip (t: Pick<Test, 'fail' | 'test'>, name: string, why: string): Promise<string | undefined> {
  if (TEST_DATABASE_URL !== undefined) return TEST_DATABASE_URL
  const reason = `CC_TEST_DATABASE_URL is not set: ${why} (e.g. postgres://cc:cc@127.0.0.1:5432/cc_test)`
  if (REQUIRE_INTEROP) t.fail(`${name}: ${reason} and CC_REQUIRE_INTEROP=1`)
  else await t.test(name, { skip: reason }, async () => {})
  return undefined
}
