/**
 * Reading the server name from a ClientHello (gateway/edge/passthrough.ts), on real ClientHellos
 * that node's TLS client writes: whole, cut at every length, re-framed into several records,
 * without SNI, and on bytes that are not TLS. And the relay preamble both ways.
 */
import t from 'tap'
import net from 'node:net'
import tls from 'node:tls'
import { once } from 'node:events'
import { PassThrough } from 'node:stream'
import { MAX_CLIENT_HELLO, PreambleMissing, encodePreamble, readPreamble, readServerName, type Preamble } from '../../../gateway/edge/passthrough.ts'

/** The first flight a TLS client sends for `options`, captured by a loopback listener. */
async function clientHello (options: tls.ConnectionOptions): Promise<Buffer> {
  const server = net.createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  try {
    const got = once(server, 'connection') as Promise<[net.Socket]>
    const client = tls.connect({ host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, ...options })
    client.on('error', () => {})
    const [socket] = await got
    const [data] = await once(socket, 'data') as [Buffer]
    client.destroy()
    socket.destroy()
    return data
  } finally {
    server.close()
  }
}

/** The same handshake bytes in records of at most `size` bytes each. */
function reframe (hello: Buffer, size: number): Buffer {
  const body = hello.subarray(5, 5 + hello.readUInt16BE(3))
  const records: Buffer[] = []
  for (let i = 0; i < body.length; i += size) {
    const part = body.subarray(i, i + size)
    const head = Buffer.from([22, 3, 1, 0, 0])
    head.writeUInt16BE(part.length, 3)
    records.push(head, part)
  }
  return Buffer.concat(records)
}

t.test('a whole ClientHello names its server, lower-cased', async t => {
  const hello = await clientHello({ servername: 'Files.Example.TEST' })
  t.same(readServerName(hello), { done: true, servername: 'files.example.test' })
})

t.test('every cut short of the whole asks for more; the whole answers', async t => {
  const hello = await clientHello({ servername: 'files.example.test' })
  const length = 5 + hello.readUInt16BE(3)
  let early = 0
  for (let n = 0; n < length; n++) if (readServerName(hello.subarray(0, n)).done) early++
  t.equal(early, 0, 'no answer from a partial ClientHello')
  t.same(readServerName(hello.subarray(0, length)), { done: true, servername: 'files.example.test' })
})

t.test('a ClientHello split over several records (RFC 8446 5.1) is reassembled', async t => {
  const hello = await clientHello({ servername: 'split.example.test' })
  for (const size of [1, 7, 64, 200]) {
    t.same(readServerName(reframe(hello, size)), { done: true, servername: 'split.example.test' }, `records of ${size} bytes`)
  }
})

t.test('no SNI (a client dialling an address), and bytes that are not TLS: no name', async t => {
  const hello = await clientHello({ rejectUnauthorized: false })
  t.same(readServerName(hello), { done: true, servername: null }, 'no server_name extension')
  t.same(readServerName(Buffer.from('GET / HTTP/1.1\r\nhost: x\r\n\r\n')), { done: true, servername: null }, 'plain HTTP')
  t.same(readServerName(Buffer.from([22, 3, 1, 0, 0])), { done: true, servername: null }, 'an empty record')
  const alert = Buffer.from([21, 3, 3, 0, 2, 2, 40])
  t.same(readServerName(alert), { done: true, servername: null }, 'an alert record')
})

t.test('a ClientHello that claims more than the limit is not waited for', async t => {
  const huge = Buffer.from([22, 3, 1, 0x40, 0x00, 1, 0xff, 0xff, 0xff])
  t.same(readServerName(huge), { done: true, servername: null })
  // Endless small handshake records that never complete a ClientHello: no name once the limit is read.
  const record = Buffer.from([22, 3, 1, 0, 4, 1, 0, 0x80, 0])
  const filler = Buffer.concat([record, Buffer.alloc(MAX_CLIENT_HELLO, 0)])
  t.equal(readServerName(filler).done, true)
})

t.test('the preamble round-trips, leaving what follows it; a bad one is an error', async t => {
  const stream = new PassThrough()
  const result = new Promise<{ err: Error | null, preamble?: Preamble, rest?: Buffer }>(resolve => {
    readPreamble(stream, 1_000, (err, preamble, rest) => resolve({ err, preamble, rest }))
  })
  const preamble = encodePreamble({ client: '2001:db8::7', port: 443 })
  stream.write(preamble.subarray(0, 3))
  stream.write(Buffer.concat([preamble.subarray(3), Buffer.from('tls bytes')]))
  const ok = await result
  t.equal(ok.err, null)
  t.same(ok.preamble, { client: '2001:db8::7', port: 443 })
  t.equal(ok.rest?.toString(), 'tls bytes')

  const json = (value: unknown): Buffer => {
    const body = Buffer.from(JSON.stringify(value))
    return Buffer.concat([Buffer.from([body.length >> 8, body.length & 0xff]), body])
  }
  const bad = [
    ['zero length', Buffer.from([0, 0])],
    ['too long', Buffer.from([0x7f, 0xff])],
    ['longer than 512 bytes', json({ client: '192.0.2.1', servername: `${'a'.repeat(250)}.${'b'.repeat(250)}.example` })],
    ['not JSON', Buffer.from([0, 3, 0x41, 0x42, 0x43])],
    ['no client', Buffer.from([0, 2, 0x7b, 0x7d])],
    ['not an object', json('192.0.2.1')],
    ['a port out of range', json({ client: '192.0.2.1', port: 70000 })],
    ['an unknown ALPN protocol', json({ client: '192.0.2.1', port: 1, alpn: 'spdy/3', servername: 'a.example' })],
    ['a server name with a space', json({ client: '192.0.2.1', port: 1, alpn: 'h2', servername: 'a b.example' })],
  ] as const
  for (const [name, bytes] of bad) {
    const s = new PassThrough()
    const got = new Promise<Error | null>(resolve => { readPreamble(s, 1_000, err => resolve(err)) })
    s.write(bytes)
    t.match((await got)?.message, /malformed/, name)
  }
  const silent = new PassThrough()
  const timedOut = await new Promise<Error | null>(resolve => { readPreamble(silent, 50, err => resolve(err)) })
  t.match(timedOut?.message, /timed out/)
})

t.test('a relay connection closed before its preamble: empty when no byte came', async t => {
  const ended = new PassThrough()
  const endedErr = new Promise<Error | null>(resolve => { readPreamble(ended, 1_000, err => resolve(err)) })
  ended.end()
  ended.resume()
  const e1 = await endedErr
  t.ok(e1 instanceof PreambleMissing && e1.empty, 'ended with no byte')
  const destroyed = new PassThrough()
  const destroyedErr = new Promise<Error | null>(resolve => { readPreamble(destroyed, 1_000, err => resolve(err)) })
  destroyed.destroy()
  const e2 = await destroyedErr
  t.ok(e2 instanceof PreambleMissing && e2.empty, 'destroyed with no byte')
  const partial = new PassThrough()
  const partialErr = new Promise<Error | null>(resolve => { readPreamble(partial, 1_000, err => resolve(err)) })
  partial.end(encodePreamble({ client: '192.0.2.1', port: 1 }).subarray(0, 4))
  const e3 = await partialErr
  t.ok(e3 instanceof PreambleMissing && !e3.empty, 'part of a preamble, then closed')
})

t.test('a stream preamble carries the ALPN protocol and the server name', async t => {
  const stream = new PassThrough()
  const result = new Promise<Preamble | undefined>(resolve => { readPreamble(stream, 1_000, (_err, preamble) => resolve(preamble)) })
  stream.write(encodePreamble({ client: '198.51.100.9', port: 50123, alpn: 'h2', servername: 'files.example.test' }))
  t.same(await result, { client: '198.51.100.9', port: 50123, alpn: 'h2', servername: 'files.example.test' })
})
