/**
 * The storm curve's small version (bench/scale-storm.ts): a real `cloud-connect gateway --config`
 * process with 100 peers carrying ICMP echoes through their tunnels (bench/wg-peers.ts) while
 * another process sends initiations from unknown keys and from known keys with a wrong MAC1 over
 * loopback UDP. No timing assertions: the numbers belong to the benchmark.
 */
import t from 'tap'
import { measureStorm } from '../../bench/scale-storm.ts'

const PEERS = 100

t.test('gateway with 100 peers carrying echoes, storm of unknown and bad-MAC1 initiations: cookies answer it, the peers keep passing and handshake again', async t => {
  const [run] = await measureStorm(PEERS, { rates: [1_000], phaseS: 2, carryRate: 500, payload: 256, timeoutS: 240 })
  t.ok(run.before.replies > 0, 'echoes came back through the tunnels before the storm')
  t.ok(run.during.replies > 0, 'echoes came back through the tunnels during the storm')
  t.ok(run.badMac1PerS > 0, 'the known keys\' initiations with a wrong MAC1 were rejected as such')
  t.ok(run.cookieRepliesPerS > 0 && run.cookieRepliesReceived > 0, 'under load, unknown keys got cookie replies (paper 5.3) and the sources received them')
  t.ok(run.unknownPeerPerS < run.cookieRepliesPerS, 'most unknown-key initiations were answered with a cookie instead of a Diffie-Hellman')
  t.equal(run.rehandshake?.quiet.passed, PEERS, 'every peer handshook again without a storm')
  t.equal(run.rehandshake?.storm.passed, PEERS, 'every peer handshook again during the storm and passed an echo on its new session')
  t.ok((run.rehandshake?.storm.cookieReplies ?? 0) > 0, 'during the storm the peers were asked for a cookie and came back with it (paper 5.4.7)')
})
