import t from 'tap'
import { ReplayWindow, REPLAY_WINDOW_SIZE } from '../../../proto/noise/replay.ts'
import { REJECT_AFTER_MESSAGES } from '../../../proto/noise/constants.ts'

// The sequence of wireguard-go replay/replay_test.go (TestReplay), itself ported from the Linux
// kernel's WireGuard selftest (counter.c). T_LIM = window + 1.
const WINDOW = BigInt(REPLAY_WINDOW_SIZE)
const T_LIM = WINDOW + 1n
const LIMIT = REJECT_AFTER_MESSAGES

t.equal(REPLAY_WINDOW_SIZE, 8128, 'window as wireguard-go: (128 - 1) * 64')

t.test('wireguard-go TestReplay sequence', async t => {
  const w = new ReplayWindow()
  const steps: [bigint, boolean][] = [
    [0n, true], [1n, true], [1n, false], [9n, true], [8n, true], [7n, true], [7n, false],
    [T_LIM, true], [T_LIM - 1n, true], [T_LIM - 1n, false], [T_LIM - 2n, true], [2n, true], [2n, false],
    [T_LIM + 16n, true], [3n, false], [T_LIM + 16n, false], [T_LIM * 4n, true],
    [T_LIM * 4n - (T_LIM - 1n), true], [10n, false], [T_LIM * 4n - T_LIM, false],
    [T_LIM * 4n - (T_LIM + 1n), false], [T_LIM * 4n - (T_LIM - 2n), true], [T_LIM * 4n + 1n - T_LIM, false],
    [0n, false], [LIMIT, false], [LIMIT - 1n, true], [LIMIT, false], [LIMIT - 1n, false], [LIMIT - 2n, true],
    [LIMIT + 1n, false], [LIMIT + 2n, false], [LIMIT - 2n, false], [LIMIT - 3n, true], [0n, false],
  ]
  steps.forEach(([counter, expected], i) => {
    t.equal(w.checkAndUpdate(counter, LIMIT), expected, `step ${i + 1}: ${counter}`)
  })
})

t.test('wireguard-go bulk tests', async t => {
  const w = new ReplayWindow()
  const run = (name: string, body: (check: (n: bigint, expected: boolean) => void) => void): void => {
    w.reset()
    let failures = 0
    body((n, expected) => { if (w.checkAndUpdate(n, LIMIT) !== expected) failures++ })
    t.equal(failures, 0, name)
  }
  run('bulk 1', c => { for (let i = 1n; i <= WINDOW; i++) c(i, true); c(0n, true); c(0n, false) })
  run('bulk 2', c => { for (let i = 2n; i <= WINDOW + 1n; i++) c(i, true); c(1n, true); c(0n, false) })
  run('bulk 3', c => { for (let i = WINDOW + 1n; i > 0n; i--) c(i, true) })
  run('bulk 4', c => { for (let i = WINDOW + 2n; i > 1n; i--) c(i, true); c(0n, false) })
  run('bulk 5', c => { for (let i = WINDOW; i > 0n; i--) c(i, true); c(WINDOW + 1n, true); c(0n, false) })
  run('bulk 6', c => { for (let i = WINDOW; i > 0n; i--) c(i, true); c(0n, true); c(WINDOW + 1n, true) })
})

t.test('counters across 2^53 and 2^64 keep working (bigint path)', async t => {
  const w = new ReplayWindow()
  const base = 2n ** 53n - 2n
  t.ok(w.checkAndUpdate(base, LIMIT))
  t.ok(w.checkAndUpdate(base + 3n, LIMIT), 'crosses 2^53')
  t.ok(w.checkAndUpdate(base + 1n, LIMIT), 'inside the window behind')
  t.notOk(w.checkAndUpdate(base + 1n, LIMIT), 'replay')
  t.notOk(w.checkAndUpdate(base - WINDOW, LIMIT), 'older than the window')
  t.ok(w.checkAndUpdate(base + 3n - WINDOW, LIMIT), 'oldest counter still inside')
  t.notOk(w.checkAndUpdate(-1n, LIMIT))
  t.notOk(w.checkAndUpdate(5n, 5n), 'at the limit')
})

t.test('a jump of more than the ring clears every old bit', async t => {
  const w = new ReplayWindow()
  for (let i = 0n; i < 200n; i++) w.checkAndUpdate(i, LIMIT)
  const far = 200n + 128n * 64n * 3n + 5n
  t.ok(w.checkAndUpdate(far, LIMIT))
  for (let back = 1n; back <= WINDOW; back += 61n) {
    t.ok(w.checkAndUpdate(far - back, LIMIT), `fresh ${far - back}`)
  }
})
