/**
 * The WireGuard endpoint's UDP socket (gateway/wireguard/socket.ts), both implementations over real
 * loopback sockets: byte-exact delivery in order (runs of equal sizes, a shorter tail, empty and
 * 60,000-byte datagrams), buffers the receiver may keep, addresses as node:dgram gives them, counted
 * rather than thrown send failures, bind errors, and the batched module's own argument checks, GSO
 * and teardown in a worker thread.
 */
import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import { batchedUdpUnavailable, createDatagramSocket, type DatagramSocket, type UdpIo } from '../../../gateway/wireguard/socket.ts'
import { until } from '../../helpers/until.ts'

interface Received { data: Buffer, address: string, port: number }

async function open (t: Test, io: UdpIo, address = '127.0.0.1'): Promise<{ socket: DatagramSocket, got: Received[], port: number }> {
  const got: Received[] = []
  const socket = createDatagramSocket(io, (data, from, port) => { got.push({ data, address: from, port }) }, () => {})
  const bound = await socket.bind(address, 0, 1 << 20)
  t.teardown(() => socket.close())
  return { socket, got, port: bound.port }
}

const kinds: UdpIo[] = ['dgram']
if (batchedUdpUnavailable === null) kinds.push('batched')
else if (process.env.CC_REQUIRE_INTEROP === '1') t.fail(`batched UDP socket ${batchedUdpUnavailable} (CC_REQUIRE_INTEROP=1)`)
else t.comment(`batched UDP socket ${batchedUdpUnavailable}: only node:dgram is tested`)

for (const io of kinds) {
  t.test(`${io}: datagrams of every shape arrive byte-exact and in order, from the sender's address`, async t => {
    const a = await open(t, io)
    const b = await open(t, io)
    // Runs of equal sizes with shorter tails (what GSO takes), sizes that grow (what it must not
    // join), an empty datagram and a large one.
    const sizes = [...Array(50).fill(1456), 700, ...Array(20).fill(1456), 1, 2, 3, 0, 60_000, ...Array(40).fill(148), 92]
    const sent = sizes.map(n => randomBytes(n))
    for (const d of sent) a.socket.send(d, '127.0.0.1', b.port)
    await until(`${sent.length} datagrams`, () => b.got.length === sent.length)
    let same = 0
    for (let i = 0; i < sent.length; i++) if (b.got[i]!.data.equals(sent[i]!)) same++
    t.equal(same, sent.length, 'every datagram byte-exact, in order')
    t.same(new Set(b.got.map(g => `${g.address}:${g.port}`)), new Set([`127.0.0.1:${a.port}`]), 'sender address and port')
    t.equal(a.socket.sendErrors, 0)
    if (io === 'batched') {
      const sender = a.socket.stats()!
      const receiver = b.socket.stats()!
      t.equal(sender.sendDatagrams, sent.length, 'all counted as sent')
      t.equal(sender.gso, true, 'this kernel has UDP GSO')
      t.ok(sender.gsoSends >= 2, `runs of equal sizes went out as GSO sends (${sender.gsoSends})`)
      t.ok(sender.sendCalls < sent.length / 4, `far fewer send calls than datagrams (${sender.sendCalls})`)
      t.equal(receiver.recvDatagrams, sent.length)
      t.ok(receiver.recvCalls < sent.length, `fewer receive calls than datagrams (${receiver.recvCalls})`)
    }
  })

  t.test(`${io}: a received buffer stays the receiver's after later datagrams arrive`, async t => {
    const a = await open(t, io)
    const b = await open(t, io)
    const first = Array.from({ length: 64 }, (_, i) => Buffer.alloc(1000, i))
    for (const d of first) a.socket.send(d, '127.0.0.1', b.port)
    await until('first batch', () => b.got.length === 64)
    const kept = b.got.map(g => g.data)
    kept[0]!.fill(0xee) // the data path decrypts in place: writing must not touch its neighbours
    for (let i = 0; i < 128; i++) a.socket.send(Buffer.alloc(1000, 0xff), '127.0.0.1', b.port)
    await until('second batch', () => b.got.length === 192)
    t.ok(kept[0]!.every(x => x === 0xee), 'the written buffer kept its bytes')
    let intact = 0
    for (let i = 1; i < 64; i++) if (kept[i]!.every(x => x === i)) intact++
    t.equal(intact, 63, 'the others are unchanged')
  })

  t.test(`${io}: bad destinations are counted, never thrown`, async t => {
    const a = await open(t, io)
    const b = await open(t, io)
    if (io === 'batched') {
      a.socket.send(Buffer.from('x'), 'not-an-address', b.port)
      a.socket.send(Buffer.from('x'), '127.0.0.1', 0)
      a.socket.send(Buffer.from('x'), '::1', b.port) // IPv6 on an IPv4 socket
      t.equal(a.socket.sendErrors, 2, 'bad address and port 0 refused at once')
      a.socket.send(Buffer.from('ok'), '127.0.0.1', b.port)
      await until('the good datagram', () => b.got.length === 1)
      await until('the IPv6 one counted', () => a.socket.sendErrors === 3)
      t.equal(b.got[0]!.data.toString(), 'ok', 'a good datagram after bad ones still goes')
    } else {
      a.socket.send(Buffer.from('x'), '::1', b.port)
      await until('the failure counted', () => a.socket.sendErrors === 1)
      t.pass('counted')
    }
  })

  t.test(`${io}: binding a port in use fails with EADDRINUSE`, async t => {
    const a = await open(t, io)
    const second = createDatagramSocket(io, () => {}, () => {})
    await t.rejects(second.bind('127.0.0.1', a.port, 0), { code: 'EADDRINUSE' })
    await second.close()
  })

  t.test(`${io}: a socket whose bind failed binds again (the IPv4 fallback of a host without IPv6)`, async t => {
    const a = await open(t, io)
    const got: string[] = []
    const second = createDatagramSocket(io, data => { got.push(data.toString()) }, () => {})
    t.teardown(() => second.close())
    await t.rejects(second.bind('127.0.0.1', a.port, 0), { code: 'EADDRINUSE' })
    const bound = await second.bind('127.0.0.1', 0, 0)
    a.socket.send(Buffer.from('after'), '127.0.0.1', bound.port)
    await until('a datagram on the second bind', () => got.length === 1)
    t.same(got, ['after'])
  })

  t.test(`${io}: a dual-stack IPv6 socket talks to IPv4 senders with IPv4 addresses`, async t => {
    const v6 = await open(t, io, '::')
    const v4 = await open(t, io)
    v4.socket.send(Buffer.from('ping'), '127.0.0.1', v6.port)
    await until('ping', () => v6.got.length === 1)
    const from = v6.got[0]!
    t.equal(from.address, '127.0.0.1', 'the sender as plain IPv4, never ::ffff:127.0.0.1')
    v6.socket.send(Buffer.from('pong'), from.address, from.port)
    v6.socket.send(Buffer.from('mapped'), `::ffff:${from.address}`, from.port)
    await until('pong', () => v4.got.length === 2)
    t.same(v4.got.map(g => g.data.toString()), ['pong', 'mapped'], 'replies reach it by either form of its address')
    const six = await open(t, io, '::1')
    six.socket.send(Buffer.from('v6'), '::1', v6.port)
    await until('v6 datagram', () => v6.got.length === 2)
    t.equal(v6.got[1]!.address, '::1', 'an IPv6 sender keeps its IPv6 address')
  })
}

if (batchedUdpUnavailable === null) {
  const modulePath = createRequire(import.meta.url).resolve('../../../gateway/wireguard/native/build/udp.node')
  const raw = createRequire(import.meta.url)(modulePath) as Record<string, (...args: unknown[]) => unknown>

  t.test('batched module: bad arguments throw TypeErrors, a closed socket refuses use', async t => {
    const cb = (): void => {}
    const bad: Array<[string, unknown[]]> = [
      ['open', []],
      ['open', [5, '127.0.0.1', 0, 0, cb]],
      ['open', [4, '::1', 0, 0, cb]],
      ['open', [4, 'nonsense', 0, 0, cb]],
      ['open', [4, '127.0.0.1', 70000, 0, cb]],
      ['open', [4, '127.0.0.1', 0, -1, cb]],
      ['open', [4, '127.0.0.1', 0, 0, 'not a function']],
      ['open', [4, '127.0.0.1', 0, 0, cb, 'yes']],
      ['send', [{}, [], new Int32Array(6), 0]],
      ['stats', [42]],
      ['ntop', [4, new Uint8Array(2)]],
      ['pton', ['1.2.3.4', new Uint8Array(4)]],
    ]
    for (const [fn, args] of bad) t.throws(() => raw[fn]!(...args), TypeError, `${fn}(${args.length} args) refused`)
    const s = raw.open!(4, '127.0.0.1', 0, 0, cb)
    t.throws(() => raw.send!(s, [Buffer.alloc(1)], new Int32Array(6), 2), TypeError, 'count beyond the array')
    t.throws(() => raw.send!(s, [Buffer.alloc(1)], new Int32Array(5), 1), TypeError, 'destination table too short')
    t.throws(() => raw.send!(s, ['text'], new Int32Array(6), 1), TypeError, 'not a Buffer')
    t.throws(() => raw.send!(s, [Buffer.alloc(70_000)], new Int32Array(6), 1), TypeError, 'over 64 KiB')
    raw.close!(s)
    raw.close!(s)
    t.throws(() => raw.send!(s, [], new Int32Array(6), 0), TypeError, 'send after close')
    t.throws(() => raw.stats!(s), TypeError, 'stats after close')
    const bytes = new Uint8Array(16)
    t.equal(raw.pton!('::ffff:10.1.2.3', bytes), 4, 'a mapped address is IPv4')
    t.equal(raw.ntop!(4, bytes), '10.1.2.3')
    t.equal(raw.pton!('example.com', bytes), 0, 'a name is not an address')
  })

  t.test('batched module without GSO (a kernel before 4.18): every datagram its own message, still batched', async t => {
    const got: Buffer[] = []
    const meta = (s: object): Int32Array => raw.meta!(s) as Int32Array
    const receiver = raw.open!(4, '127.0.0.1', 0, 1 << 20, (count: number, data: Buffer) => {
      const m = meta(receiver)
      for (let i = 0; i < count; i++) got.push(Buffer.from(data.subarray(m[i * 8]!, m[i * 8]! + m[i * 8 + 1]!)))
    }) as object
    const sender = raw.open!(4, '127.0.0.1', 0, 1 << 20, () => {}, false) as object
    t.teardown(() => { raw.close!(sender); raw.close!(receiver) })
    const sizes = [...Array(30).fill(1456), 300, ...Array(10).fill(1456)]
    const sent = sizes.map(n => randomBytes(n))
    const dest = new Int32Array(sent.length * 6)
    const addr = new Uint8Array(16)
    raw.pton!('127.0.0.1', addr)
    const words = new Int32Array(addr.buffer)
    for (let i = 0; i < sent.length; i++) dest.set([raw.localPort!(receiver) as number, 4, words[0]!, words[1]!, words[2]!, words[3]!], i * 6)
    t.equal(raw.send!(sender, sent, dest, sent.length), 0, 'nothing refused')
    await until('all datagrams', () => got.length === sent.length)
    t.ok(got.every((g, i) => g.equals(sent[i]!)), 'byte-exact, in order')
    const stats = raw.stats!(sender) as number[]
    t.equal(stats[4], 0, 'no GSO send')
    t.equal(stats[7], 0, 'GSO reported off')
    t.equal(stats[2], 1, 'one sendmmsg for all 41')
  })

  t.test('batched module: a socket left open in a worker thread is torn down with the worker', async t => {
    const source = `
      const { parentPort } = require('node:worker_threads')
      const udp = require(${JSON.stringify(modulePath)})
      const s = udp.open(4, '127.0.0.1', 0, 0, (count, data) => { parentPort.postMessage({ count, text: data.toString() }) })
      parentPort.postMessage({ port: udp.localPort(s) })`
    const worker = new Worker(source, { eval: true })
    const messages: Array<{ port?: number, count?: number, text?: string }> = []
    worker.on('message', m => messages.push(m))
    await until('worker bound', () => messages.length === 1)
    const sender = await open(t, 'batched')
    sender.socket.send(Buffer.from('hello worker'), '127.0.0.1', messages[0]!.port!)
    await until('worker received', () => messages.length === 2)
    t.same(messages[1], { count: 1, text: 'hello worker' })
    t.equal(await worker.terminate(), 1, 'terminated with the socket still open')
    // The port is free again: the cleanup hook closed the socket.
    const again = createDatagramSocket('batched', () => {}, () => {})
    const bound = await again.bind('127.0.0.1', messages[0]!.port!, 0)
    t.equal(bound.port, messages[0]!.port, 'the worker\'s port can be bound again')
    await again.close()
  })
}
