/** The shell: one timer per stack whatever the number of connections, the clock it owns, and its turns (the burst cap). */
import t from 'tap'
import dgram from 'node:dgram'
import { createHash } from 'node:crypto'
import { once } from 'node:events'
import { Worker } from 'node:worker_threads'
import { StackPair, parseSegment, randomData, ADDR_B } from './harness.ts'
import { parseIPv4 } from '../../../../proto/wire/ipv4.ts'
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

/**
 * Sends `datagrams` to 127.0.0.1:`port` from another thread, whatever the main thread is doing; sets
 * `done[0]` to 1 once they left.
 */
function sendFromAnotherThread (datagrams: Buffer[], port: number, done: Int32Array): Worker {
  return new Worker(`
    const { workerData } = require('node:worker_threads')
    const socket = require('node:dgram').createSocket('udp4')
    let left = workerData.datagrams.length
    for (const d of workerData.datagrams) {
      socket.send(Buffer.from(d), workerData.port, '127.0.0.1', () => {
        if (--left === 0) { Atomics.store(workerData.done, 0, 1); socket.close() }
      })
    }
  `, { eval: true, workerData: { datagrams: datagrams.map(d => new Uint8Array(d)), port, done } })
}

t.test('data in flight, the event loop held past the RTO while the ACK waits in the socket: the ACK is read first, no timeout', async t => {
  // A reads its datagrams from a real UDP socket; B's go there only once captured. The ACK reaches
  // A's socket from another thread while A's event loop is held (a long task, a descheduled
  // process), so when the loop comes back the retransmission timer is due and the ACK unread.
  const metrics = new Metrics()
  const socketA = dgram.createSocket('udp4')
  socketA.bind(0, '127.0.0.1')
  await once(socketA, 'listening')
  t.teardown(() => { socketA.close() })
  let capture: Buffer[] | null = null
  let b: TcpStack | null = null
  const a = new TcpStack({ localAddress: '10.100.0.1', ip: { send: d => { setImmediate(() => b!.input(parseIPv4(d), d)) } }, metrics })
  b = new TcpStack({
    localAddress: ADDR_B,
    ip: { send: d => { if (capture !== null) capture.push(d); else setImmediate(() => a.input(parseIPv4(d), d)) } },
    metrics: new Metrics(),
  })
  t.teardown(() => { a.close(); b!.close() })
  socketA.on('message', d => { a.input(parseIPv4(d), d) })
  b.listen(80, s => {
    s.on('error', () => {}) // the stacks close at the end
    s.on('data', d => s.write(d))
  })
  const client = a.connect({ host: '10.100.0.2', port: 80 })
  client.on('error', () => {})
  await once(client, 'connect')
  client.write(Buffer.alloc(100, 1))
  await once(client, 'data') // one exchange: an RTT sample, the RTO at its 200 ms floor

  const captured: Buffer[] = []
  capture = captured
  client.write(Buffer.alloc(100, 2))
  const conn = a.core.connections()[0]
  for (let i = 0; i < 1000 && captured.length === 0; i++) await new Promise(resolve => setImmediate(resolve))
  t.ok(captured.length > 0, 'B answered (echo carrying the ACK)')
  t.not(conn.snd.una, conn.snd.max, 'the data is unacknowledged at A')
  const rtoAt = conn.timers.rtoAt
  t.ok(rtoAt < Infinity, 'the retransmission timer runs')

  const echoed = once(client, 'data')
  const done = new Int32Array(new SharedArrayBuffer(4))
  const worker = sendFromAnotherThread(captured, socketA.address().port, done)
  // Hold the event loop past the deadline and until the ACK is in A's socket (at most 5 s).
  const limit = a.now() + 5000
  while ((a.now() < rtoAt + 50 || Atomics.load(done, 0) === 0) && a.now() < limit) { /* held */ }
  t.equal(Atomics.load(done, 0), 1, 'the ACK reached the socket while the loop was held')
  await echoed
  await worker.terminate()

  const counters = a.core.counters
  t.equal(counters.events.get('rto'), 0, 'no retransmission timeout')
  t.equal(counters.retransmits.get('rto'), 0, 'nothing retransmitted')
  t.equal(conn.snd.una, conn.snd.max, 'the data is acknowledged')
  client.destroy()
})

interface SmallBufferRun { sent: number, received: number, digest: string, largestBurst: number, sackRetransmits: number }

/**
 * A bulk transfer from stack A to stack B whose datagrams go through a real UDP socket on
 * loopback with a small receive buffer (as a WireGuard peer reads the tunnel from a socket with
 * the kernel's default buffer); B's ACKs come back in memory. Drops: datagrams A sent less those
 * B's socket delivered.
 */
async function bulkIntoSmallBuffer (data: Buffer, maxBurst: number): Promise<SmallBufferRun> {
  const receiver = dgram.createSocket({ type: 'udp4', recvBufferSize: 32 * 1024 })
  const sender = dgram.createSocket('udp4')
  receiver.bind(0, '127.0.0.1')
  sender.bind(0, '127.0.0.1')
  await Promise.all([once(receiver, 'listening'), once(sender, 'listening')])
  const port = receiver.address().port
  let sent = 0
  let received = 0
  let b: TcpStack | null = null
  const a = new TcpStack({ localAddress: '10.100.0.1', ip: { send: d => { sent++; sender.send(d, port, '127.0.0.1') } }, metrics: new Metrics(), options: { maxBurst } })
  b = new TcpStack({ localAddress: ADDR_B, ip: { send: d => { setImmediate(() => a.input(parseIPv4(d), d)) } }, metrics: new Metrics() })
  receiver.on('message', d => { received++; b!.input(parseIPv4(d), d) })
  const arrived = new Promise<string>((resolve, reject) => {
    b!.listen(80, s => {
      const hash = createHash('sha256')
      s.on('data', d => hash.update(d))
      s.on('end', () => { resolve(hash.digest('hex')) })
      s.on('error', reject)
    })
  })
  const client = a.connect({ host: '10.100.0.2', port: 80 })
  client.on('error', () => {})
  client.end(data)
  let timer: NodeJS.Timeout | undefined
  const limit = new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(`not done in 60 s (${received} datagrams in)`)) }, 60_000) })
  try {
    const digest = await Promise.race([arrived, limit])
    return { sent, received, digest, largestBurst: a.core.largestBurst, sackRetransmits: a.core.counters.retransmits.get('sack') }
  } finally {
    clearTimeout(timer)
    client.destroy()
    a.close()
    b.close()
    receiver.close()
    sender.close()
  }
}

t.test('a receiver with a small UDP receive buffer: a bulk transfer arrives byte-exact, with fewer datagrams dropped under the per-turn burst cap', async t => {
  const data = randomData(2 * 1024 * 1024, 18)
  const digest = createHash('sha256').update(data).digest('hex')
  const uncapped = await bulkIntoSmallBuffer(data, 0)
  const capped = await bulkIntoSmallBuffer(data, 8)
  t.equal(uncapped.digest, digest, 'without the cap: byte-exact')
  t.equal(capped.digest, digest, 'with the cap: byte-exact')
  const dropsUncapped = uncapped.sent - uncapped.received
  const dropsCapped = capped.sent - capped.received
  t.ok(uncapped.largestBurst > 8, `without the cap a turn sent ${uncapped.largestBurst} segments`)
  t.ok(capped.largestBurst <= 8, `with the cap no turn sent more than 8 (${capped.largestBurst})`)
  t.ok(dropsUncapped > 0, `the small buffer dropped whole windows (${dropsUncapped} datagrams, ${uncapped.sackRetransmits} SACK retransmissions)`)
  t.ok(dropsCapped < dropsUncapped, `fewer drops with the cap (${dropsCapped} against ${dropsUncapped}; ${capped.sackRetransmits} SACK retransmissions)`)
})
