/**
 * Removes lab namespaces, wireguard-go sockets and owner files left by crashed test runs (those
 * whose owner process is gone). Safe while other labs run.
 *
 *   node bin/run-ts.js test/helpers/lab-sweep.ts
 */
import { sweepStaleLabs } from './lab/netns.ts'

if (process.getuid?.() !== 0) {
  process.stdout.write('lab sweep: not root, nothing to do\n')
} else {
  const removed = await sweepStaleLabs()
  process.stdout.write(`lab sweep: removed ${removed.length} stale namespace(s)${removed.length > 0 ? `: ${removed.join(' ')}` : ''}\n`)
}
