import t from 'tap'
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { startListening } from '../../../proto/net/listen.ts'

t.test('a free port: bound, and no error listener left behind', async t => {
  const server = net.createServer()
  t.teardown(() => { server.close() })
  await startListening(server, 0, '127.0.0.1')
  t.ok((server.address() as AddressInfo).port > 0)
  t.equal(server.listenerCount('error'), 0)
})

t.test('a port in use: rejects with EADDRINUSE instead of an unhandled error event', async t => {
  const first = net.createServer()
  t.teardown(() => { first.close() })
  await startListening(first, 0, '127.0.0.1')
  const second = net.createServer()
  await t.rejects(startListening(second, (first.address() as AddressInfo).port, '127.0.0.1'), { code: 'EADDRINUSE' })
  t.equal(second.listening, false)
})
