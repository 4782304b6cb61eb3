/**
 * forward() (gateway/edge/relay-connections.ts): the pipe between a relayed client's socket and
 * its relay connection. It keeps reading while the writer holds less than its limit (pipe() stops
 * at 16 KiB, one TLS record), stops there, and resumes when the writer drains.
 */
import t from 'tap'
import net from 'node:net'
import { createHash, randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { PassThrough, Writable } from 'node:stream'
import { forward } from '../../../gateway/edge/relay-connections.ts'

const RECORD = 16 * 1024

/** A writer whose writes complete only when released (a peer that reads slowly). */
function heldWriter (): { to: Writable, held: Array<() => void>, written: () => number } {
  const held: Array<() => void> = []
  let written = 0
  const to = new Writable({
    write (chunk: Buffer, _encoding, callback) {
      written += chunk.length
      held.push(() => callback())
    },
  })
  return { to, held, written: () => written }
}

t.test('forward: a slow writer below the limit: the reader keeps flowing past 16 KiB', async t => {
  const from = new PassThrough()
  const { to } = heldWriter()
  forward(from, to, 256 * 1024)
  for (let i = 0; i < 8; i++) from.write(Buffer.alloc(RECORD))
  await new Promise(resolve => setImmediate(resolve))
  t.equal(from.isPaused(), false, 'not paused at 128 KiB unsent (pipe() would pause at 16 KiB)')
  t.equal(to.writableLength, 8 * RECORD, 'every record handed to the writer')
})

t.test('forward: a slow writer at the limit: the reader is paused, and resumes when the writer drains', async t => {
  const from = new PassThrough()
  const { to, held, written } = heldWriter()
  const limit = 64 * 1024
  forward(from, to, limit)
  for (let i = 0; i < 12; i++) from.write(Buffer.alloc(RECORD))
  await new Promise(resolve => setImmediate(resolve))
  t.equal(from.isPaused(), true, 'paused once the writer holds the limit')
  t.equal(to.writableLength, limit, 'the writer holds no more than the limit')
  t.ok(from.readableLength > 0, 'the rest waits in the reader')
  // Release every write as it comes until the reader is empty.
  const deadline = Date.now() + 5_000
  while ((from.readableLength > 0 || held.length > 0) && Date.now() < deadline) {
    held.splice(0).forEach(release => release())
    await new Promise(resolve => setImmediate(resolve))
  }
  t.equal(from.isPaused(), false, 'resumed after the drain')
  t.equal(written(), 12 * RECORD, 'every byte reached the writer')
})

t.test('forward: the end of the reader ends the writer', async t => {
  const from = new PassThrough()
  const chunks: Buffer[] = []
  const to = new Writable({ write (chunk: Buffer, _encoding, callback) { chunks.push(chunk); callback() } })
  forward(from, to, 256 * 1024)
  from.end(Buffer.from('last words'))
  await once(to, 'finish')
  t.equal(Buffer.concat(chunks).toString(), 'last words')
})

t.test('forward: 32 MiB between two loopback TCP connections arrive byte-exact', async t => {
  const payload = randomBytes(32 << 20)
  // sink <- relayed side <- forward <- source side <- sender
  let received = createHash('sha256')
  let bytes = 0
  const sink = net.createServer(socket => {
    socket.on('data', (c: Buffer) => { received.update(c); bytes += c.length })
    socket.on('end', () => { socket.end() })
  })
  await new Promise<void>(resolve => sink.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { sink.close() })
  const entry = net.createServer(client => {
    const upstream = net.connect((sink.address() as net.AddressInfo).port, '127.0.0.1')
    forward(client, upstream, 256 * 1024)
    forward(upstream, client, 256 * 1024)
  })
  await new Promise<void>(resolve => entry.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { entry.close() })
  received = createHash('sha256')
  const sender = net.connect((entry.address() as net.AddressInfo).port, '127.0.0.1')
  sender.resume()
  const closed = once(sender, 'end')
  sender.end(payload)
  const timer = setTimeout(() => sender.destroy(new Error('timed out')), 30_000)
  await closed
  clearTimeout(timer)
  t.equal(bytes, payload.length, 'every byte')
  t.equal(received.digest('hex'), createHash('sha256').update(payload).digest('hex'), 'in order')
})
