/** The shell: one timer per stack whatever the number of connections, and the clock it owns. */
import t from 'tap'
import { once } from 'node:events'
import { StackPair, parseSegment } from './harness.ts'
import { TcpStack } from '../../../../gateway/netstack/tcp/stack.ts'
import { Metrics } from '../../../../gateway/metrics.ts'
import type { TcpSocket } from '../../../../gateway/netstack/tcp/socket.ts'

function timeouts (): number {
  return process.getActiveResourcesInfo().filter(r => r === 'Timeout').length
}

t.test('one timer per stack, not one per connection', async t => {
  const pair = new StackPair({ keepAlive: true, keepAliveIdle: 60_000, timeWait: 50 })
  const servers: TcpSocket[] = []
  pair.b.listen(80, s => {
    s.on('error', () => {}) // the clients reset their connections at the end
    servers.push(s)
  })
  const baseline = timeouts()
  const sockets: TcpSocket[] = []
  for (let i = 0; i < 100; i++) {
    const s = pair.a.connect({ host: '10.100.0.2', port: 80 })
    sockets.push(s)
  }
  await Promise.all(sockets.map(s => once(s, 'connect')))
  // Every connection has a keepalive deadline pending on both sides.
  t.ok(pair.a.core.nextDeadline() < Infinity)
  const during = timeouts()
  t.ok(during - baseline <= 4, `at most a timer and an event-loop hold per stack (${during - baseline} new)`)
  for (const s of sockets) s.destroy()
  await new Promise(resolve => setTimeout(resolve, 100))
  t.equal(pair.a.core.size, 0)
  pair.close()
  t.equal(timeouts(), baseline, 'nothing left once the stacks are closed')
})

t.test('the stack clock drives segment times; the IpLayer now argument is ignored', async t => {
  let fake = 1000
  const sent: Buffer[] = []
  const stack = new TcpStack({ localAddress: '10.100.0.1', ip: { send: d => sent.push(d) }, metrics: new Metrics(), clock: () => fake })
  const s = stack.connect({ host: '10.100.0.2', port: 80 })
  s.on('error', () => {})
  const syn = parseSegment(sent[0])
  fake = 1250
  const rto = stack.core.connections()[0].timers.rtoAt
  t.equal(rto, 1000 + 1000, 'the SYN timer is on the injected clock')
  t.ok(syn.timestamp)
  stack.close()
})
