/**
 * The restart curve's small version (bench/scale-restart.ts): a real `cloud-connect gateway
 * --config` process with a few hundred peers driven by bench/wg-peers.ts over loopback UDP, killed
 * with SIGKILL and started again from the same config and data directory. No timing assertions:
 * the numbers belong to the benchmark.
 */
import t from 'tap'
import { measureRestart } from '../../bench/scale-restart.ts'

const PEERS = 200

t.test('gateway restarted with 200 peers: every peer handshakes again and its echo comes back through the tunnel', async t => {
  const run = await measureRestart(PEERS, 240)
  t.not(run.firstUpMs, null, 'before the restart every peer passed')
  t.equal(run.passed, PEERS, 'after the restart every peer passed an ICMP echo through the gateway again')
  t.not(run.restartAllS, null)
  t.ok(run.initiations >= PEERS, 'each peer made a new handshake (the old sessions died with the process)')
  t.ok(run.restartListeningS !== null, 'the restarted gateway opened its HTTPS listener')
})
