/**
 * The agent's decisions (agent/decisions.ts) from values alone: each failure of the API or the
 * tunnel maps to fatal (with its exit status), retry (with its wait) or suspended; heartbeat
 * intervals stay within their bounds.
 */
import t from 'tap'
import { ApiError } from '../../agent/api.ts'
import { FatalError, HEARTBEAT_MAX_MS, HEARTBEAT_MIN_MS, heartbeatAnswered, heartbeatFailure, heartbeatInterval, registrationFailure, type RetryInput } from '../../agent/decisions.ts'
import { EXIT_KERNEL_UNAVAILABLE, EXIT_REFUSED, EXIT_TOKEN_REJECTED, EXIT_UDP_BLOCKED } from '../../agent/exit-codes.ts'
import { TunnelUnavailableError } from '../../agent/tunnel.ts'

const LIMITS = { initialMs: 1_000, maxMs: 8_000 }
const at = (attempt: number, jitter = 0): RetryInput => ({ attempt, jitter, limits: LIMITS })
const unavailable = (retryAfterMs: number | null): ApiError => new ApiError('unavailable', 'the API cannot answer now (busy)', 503, 'SERVICE_UNAVAILABLE', retryAfterMs)

t.test('exit statuses are the documented ones', async t => {
  t.same([EXIT_TOKEN_REJECTED, EXIT_REFUSED, EXIT_KERNEL_UNAVAILABLE, EXIT_UDP_BLOCKED], [3, 4, 5, 6])
})

t.test('registration: 401 and a refusal are fatal with their exit statuses; so are a kernel without WireGuard and a FatalError', async t => {
  t.same(registrationFailure(new ApiError('token_rejected', 'token rejected', 401, 'UNAUTHORIZED'), at(0)), { kind: 'fatal', code: EXIT_TOKEN_REJECTED, message: 'token rejected' })
  t.same(registrationFailure(new ApiError('refused', 'not the API', 404), at(3)), { kind: 'fatal', code: EXIT_REFUSED, message: 'not the API' })
  t.same(registrationFailure(new TunnelUnavailableError('no NET_ADMIN'), at(0)), { kind: 'fatal', code: EXIT_KERNEL_UNAVAILABLE, message: 'no NET_ADMIN' })
  t.same(registrationFailure(new FatalError('UDP blocked', EXIT_UDP_BLOCKED), at(0)), { kind: 'fatal', code: EXIT_UDP_BLOCKED, message: 'UDP blocked' })
})

t.test('registration: KEY_IN_USE retries at once without a backoff step; 402 is suspended for the longest backoff', async t => {
  t.same(registrationFailure(new ApiError('key_in_use', 'KEY_IN_USE', 409, 'KEY_IN_USE'), at(4)), { kind: 'retry', ms: 0, message: null, grows: false })
  t.same(registrationFailure(new ApiError('subscription_required', 'suspended', 402, 'SUBSCRIPTION_REQUIRED'), at(0)), { kind: 'suspended', ms: LIMITS.maxMs, message: 'suspended' })
})

t.test('registration: network trouble and 429/503 back off, growing to the cap; Retry-After wins when longer', async t => {
  const unreachable = new ApiError('unreachable', 'cannot reach the API')
  t.same([0, 1, 2, 3, 4, 10].map(n => (registrationFailure(unreachable, at(n, 0.999999)) as { ms: number }).ms), [1_000, 2_000, 4_000, 8_000, 8_000, 8_000], 'ceilings double up to the cap')
  t.same(registrationFailure(unreachable, at(0, 0)), { kind: 'retry', ms: 500, message: 'cannot reach the API', grows: true }, 'no less than half the ceiling')
  t.same(registrationFailure(unavailable(30_000), at(0)), { kind: 'retry', ms: 30_000, message: 'the API cannot answer now (busy)', grows: true }, '503 Retry-After: 30')
  t.same(registrationFailure(new ApiError('unavailable', 'busy', 429, 'RATE_LIMITED', 100), at(3, 0)).kind, 'retry')
  t.equal((registrationFailure(new ApiError('unavailable', 'busy', 429, 'RATE_LIMITED', 100), at(3, 0)) as { ms: number }).ms, 4_000, 'a Retry-After shorter than the backoff: the backoff')
  t.same(registrationFailure(unavailable(null), at(1, 0)), { kind: 'retry', ms: 1_000, message: 'the API cannot answer now (busy)', grows: true })
})

t.test('registration: any other failure brings the tunnel up again with backoff', async t => {
  t.same(registrationFailure(new Error('EADDRINUSE'), at(2, 0.5)), { kind: 'retry', ms: 3_000, message: 'cannot bring the tunnel up: EADDRINUSE', grows: true })
})

t.test('heartbeat: 401 and a refusal are fatal; 402, 503 and network trouble back off, Retry-After when longer', async t => {
  t.same(heartbeatFailure(new ApiError('token_rejected', 'token rejected', 401), at(0)), { kind: 'fatal', code: EXIT_TOKEN_REJECTED, message: 'token rejected' })
  t.same(heartbeatFailure(new ApiError('refused', 'HTML answer', 200), at(0)), { kind: 'fatal', code: EXIT_REFUSED, message: 'HTML answer' })
  t.same(heartbeatFailure(unavailable(60_000), at(0)), { kind: 'retry', ms: 60_000, message: 'heartbeat failed: the API cannot answer now (busy)', grows: true })
  t.same(heartbeatFailure(new ApiError('subscription_required', 'suspended', 402), at(1, 0)), { kind: 'retry', ms: 1_000, message: 'heartbeat failed: suspended', grows: true })
  t.same([0, 1, 2, 3, 9].map(n => (heartbeatFailure(new Error('ECONNRESET'), at(n, 0.999999)) as { ms: number }).ms), [1_000, 2_000, 4_000, 8_000, 8_000])
})

t.test('heartbeat interval: next_heartbeat_in within 5 s and an hour; nonsense is the minimum', async t => {
  t.same([HEARTBEAT_MIN_MS, HEARTBEAT_MAX_MS], [5_000, 3_600_000])
  t.equal(heartbeatInterval(30), 30_000)
  t.equal(heartbeatInterval(7.5), 7_500)
  t.equal(heartbeatInterval(0), HEARTBEAT_MIN_MS, 'not a busy loop')
  t.equal(heartbeatInterval(-10), HEARTBEAT_MIN_MS)
  t.equal(heartbeatInterval(86_400), HEARTBEAT_MAX_MS, 'not silence')
  t.equal(heartbeatInterval(Number.NaN), HEARTBEAT_MIN_MS)
  t.equal(heartbeatInterval(Number.POSITIVE_INFINITY), HEARTBEAT_MIN_MS)
  t.equal(heartbeatInterval('60' as unknown as number), 60_000, 'a numeric string, as before')
  t.same(heartbeatAnswered(60), { kind: 'ok', ms: 60_000 })
})
