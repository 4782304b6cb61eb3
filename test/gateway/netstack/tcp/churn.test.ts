/**
 * Bounded churn: 10,000 connections opened, used and closed through the socket API; afterwards
 * the connection tables are empty, no buffer bytes are accounted, no timer is armed, and the
 * heap is back near where it started.
 */
import t from 'tap'
import v8 from 'node:v8'
import vm from 'node:vm'
import { once } from 'node:events'
import { StackPair } from './harness.ts'
import type { TcpSocket } from '../../../../gateway/netstack/tcp/socket.ts'

v8.setFlagsFromString('--expose-gc')
const gc = vm.runInNewContext('gc') as () => void

async function settle (): Promise<number> {
  for (let i = 0; i < 3; i++) {
    await new Promise(resolve => setImmediate(resolve))
    gc()
  }
  return process.memoryUsage().heapUsed
}

async function churn (pair: StackPair, count: number, concurrency: number): Promise<number> {
  let next = 0
  let ok = 0
  async function worker (): Promise<void> {
    while (next < count) {
      next++
      const socket = pair.a.connect({ host: '10.100.0.2', port: 80 })
      const chunks: Buffer[] = []
      socket.on('data', d => chunks.push(d))
      const ended = once(socket, 'end')
      const closed = once(socket, 'close')
      await once(socket, 'connect')
      socket.end('ping')
      await ended
      if (Buffer.concat(chunks).toString() === 'pong:ping') ok++
      await closed
    }
  }
  await Promise.all(Array.from({ length: concurrency }, worker))
  return ok
}

t.test('10,000 connections opened and closed leave nothing behind', async t => {
  const pair = new StackPair({ timeWait: 20 })
  t.teardown(() => pair.close())
  pair.b.listen(80, (s: TcpSocket) => {
    const chunks: Buffer[] = []
    s.on('data', d => chunks.push(d))
    s.on('end', () => s.end(`pong:${Buffer.concat(chunks).toString()}`))
  })
  // Warm up code paths and pools before the baseline.
  t.equal(await churn(pair, 500, 50), 500)
  await new Promise(resolve => setTimeout(resolve, 100))
  const before = await settle()

  t.equal(await churn(pair, 10_000, 100), 10_000, 'every exchange completed')
  // TIME-WAIT (20 ms here) ends on the stack timer.
  await new Promise(resolve => setTimeout(resolve, 200))
  t.equal(pair.a.core.size, 0, 'client table empty')
  t.equal(pair.b.core.size, 0, 'server table empty')
  t.same(pair.a.core.connectionsByState(), {})
  t.equal(pair.a.core.memoryUsed, 0)
  t.equal(pair.b.core.memoryUsed, 0)
  t.equal(pair.a.core.nextDeadline(), Infinity, 'no timer left armed')
  const gauge = pair.metricsA.snapshot().tcp_connections
  t.ok(Object.values(gauge).every(v => v === 0), 'state gauges back to zero')
  t.equal(pair.metricsA.snapshot().tcp_connections_opened.active, 10_500)
  const after = await settle()
  const growth = after - before
  t.comment(`heapUsed before ${(before / 1e6).toFixed(1)} MB, after ${(after / 1e6).toFixed(1)} MB`)
  t.ok(growth < 8 * 1024 * 1024, `heap growth ${(growth / 1e6).toFixed(2)} MB stays small`)
})
