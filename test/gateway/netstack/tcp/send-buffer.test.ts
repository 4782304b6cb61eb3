import t from 'tap'
import { SendBuffer } from '../../../../gateway/netstack/tcp/send-buffer.ts'
import { randomData } from './harness.ts'

t.test('append, copy out across blocks, consume', async t => {
  const data = randomData(100_000, 3)
  const sb = new SendBuffer()
  // Uneven writes straddle the 16 KiB blocks.
  for (let off = 0; off < data.length;) {
    const n = Math.min(7777, data.length - off)
    sb.append(data, off, off + n)
    off += n
  }
  t.equal(sb.length, data.length)
  const out = Buffer.alloc(5000)
  for (const offset of [0, 16383, 16384, 40000, 95000]) {
    sb.copyOut(offset, 5000, out, 0)
    t.ok(out.equals(data.subarray(offset, offset + 5000)), `offset ${offset}`)
  }
  sb.consume(20000)
  t.equal(sb.length, 80_000)
  sb.copyOut(0, 5000, out, 0)
  t.ok(out.equals(data.subarray(20000, 25000)), 'after consume the front is the next unacknowledged byte')
  sb.append(Buffer.from('tail'))
  const tail = Buffer.alloc(4)
  sb.copyOut(sb.length - 4, 4, tail, 0)
  t.equal(tail.toString(), 'tail')
  t.throws(() => sb.copyOut(sb.length - 3, 4, tail, 0), RangeError)
  sb.consume(sb.length)
  t.equal(sb.length, 0)
  sb.append(Buffer.from('again'))
  const again = Buffer.alloc(5)
  sb.copyOut(0, 5, again, 0)
  t.equal(again.toString(), 'again')
})

t.test('the caller may reuse its buffer after append', async t => {
  const sb = new SendBuffer()
  const src = Buffer.from('abcdef')
  sb.append(src)
  src.fill(0)
  const out = Buffer.alloc(6)
  sb.copyOut(0, 6, out, 0)
  t.equal(out.toString(), 'abcdef')
})
