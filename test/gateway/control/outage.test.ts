/**
 * The gateway's retry decision against control (gateway/control/outage.ts): the wait grows and
 * caps, the jitter stays within 25 %, and an outage is logged at its start and every 10th failure,
 * as an error when retrying cannot help.
 */
import t from 'tap'
import { controlFailure } from '../../../gateway/control/outage.ts'
import { RpcError } from '../../../proto/rpc/index.ts'

const LIMITS = { initialMs: 100, maxMs: 1_000 }
const busy = new RpcError('SERVICE_UNAVAILABLE', 'down')

t.test('the wait doubles from initialMs to maxMs; jitter within 25 %', async t => {
  t.same([1, 2, 3, 4, 5, 40].map(n => controlFailure(n, busy, LIMITS, 0.5).ms), [100, 200, 400, 800, 1_000, 1_000])
  t.equal(controlFailure(1, busy, LIMITS, 0).ms, 75)
  t.equal(controlFailure(1, busy, LIMITS, 0.999999).ms, 125)
  t.equal(controlFailure(1, busy, {}, 0.5).ms, 500, 'defaults: 0.5 s')
  t.equal(controlFailure(20, busy, {}, 0.5).ms, 30_000, 'capped at 30 s')
})

t.test('logged at the first failure and every 10th, quietly between; an error when retrying cannot help', async t => {
  t.same([1, 2, 9, 10, 11, 20].map(n => controlFailure(n, busy, LIMITS, 0.5).log), ['warn', 'debug', 'debug', 'warn', 'debug', 'warn'])
  t.equal(controlFailure(1, new Error('ECONNREFUSED'), LIMITS, 0.5).log, 'warn')
  t.equal(controlFailure(1, new RpcError('UNAUTHORIZED', 'bad secret'), LIMITS, 0.5).log, 'error')
  t.equal(controlFailure(10, new RpcError('PROTOCOL_MISMATCH', 'v2'), LIMITS, 0.5).log, 'error')
  t.same(controlFailure(3, new RpcError('UNAUTHORIZED', 'bad secret'), LIMITS, 0.5), { kind: 'retry', ms: 400, log: 'debug' })
})
