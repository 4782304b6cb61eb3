/**
 * The connections curve's small version (bench/scale-connections.ts): a real `cloud-connect gateway
 * --config` process with 10 userspace tunnels to bench/scale-origin.ts, 300 HTTPS keep-alive
 * connections held (3 of them WebSockets, RFC 6455 upgrades answered 101) while small requests on
 * other connections keep succeeding. Loopback only; no timing assertions.
 */
import t from 'tap'
import { measureConnections } from '../../bench/scale-connections.ts'

const HELD = 300

t.test('300 idle keep-alive connections and 3 WebSockets held: small requests keep succeeding and none is dropped', async t => {
  const run = await measureConnections(HELD, 10, 240, 300)
  t.equal(run.websockets, 3, 'one connection in a hundred upgraded to a WebSocket')
  t.equal(run.baseline.requests, 300, 'every small request answered 200 with none held')
  t.equal(run.held.requests, 300, 'every small request answered 200 while the others are held')
  t.equal(run.heldAtEnd, HELD, 'every held connection (WebSockets included) still open after the requests')
})
