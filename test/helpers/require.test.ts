// The skip rule itself: a missing tool skips with the reason, or fails under CC_REQUIRE_INTEROP=1.
import t from 'tap'
import { requireWg, unavailable } from './require.ts'

function recorder (): { calls: string[], fail (m: string): void, comment (m: string): void, plan (n: number, c?: string): void } {
  const calls: string[] = []
  return { calls, fail: m => calls.push(`fail ${m}`), comment: m => calls.push(`comment ${m}`), plan: (n, c) => calls.push(`plan ${n} ${c ?? ''}`) }
}

t.test('unavailable: a skip with the reason, or a failure under CC_REQUIRE_INTEROP=1', async t => {
  const saved = { interop: process.env.CC_REQUIRE_INTEROP, path: process.env.PATH }
  t.teardown(() => {
    for (const [k, v] of [['CC_REQUIRE_INTEROP', saved.interop], ['PATH', saved.path]] as const) {
      if (v === undefined) delete process.env[k]
      else process.env[k] = v
    }
  })
  delete process.env.CC_REQUIRE_INTEROP
  const skipped = recorder()
  t.equal(unavailable(skipped, 'thing', 'not here'), false)
  t.same(skipped.calls, ['comment thing unavailable: not here', 'plan 0 thing unavailable: not here'])

  process.env.CC_REQUIRE_INTEROP = '1'
  const failed = recorder()
  unavailable(failed, 'thing', 'not here')
  t.same(failed.calls, ['fail thing required (CC_REQUIRE_INTEROP=1) but unavailable: not here'])

  // No wg on the PATH: requireWg takes the same rule.
  process.env.PATH = '/nonexistent'
  const noWg = recorder()
  t.equal(requireWg(noWg), false)
  t.match(noWg.calls, [/^fail wg \(wireguard-tools\) required/])
})
