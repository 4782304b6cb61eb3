import t from 'tap'
import { Reassembly } from '../../../../gateway/netstack/tcp/reassembly.ts'

const bytes = (from: number, to: number): Buffer => {
  const b = Buffer.alloc(to - from)
  for (let i = 0; i < b.length; i++) b[i] = (from + i) & 0xff
  return b
}

t.test('holes fill in any order and come out contiguous and trimmed', async t => {
  const r = new Reassembly(100)
  const base = 0xfffffff0 // wraps during the test
  const at = (off: number) => (base + off) >>> 0
  t.equal(r.insert(at(200), bytes(200, 300)), 100)
  t.equal(r.insert(at(400), bytes(400, 500)), 100)
  t.equal(r.insert(at(250), bytes(250, 450)), 100, 'only the uncovered middle is new')
  t.equal(r.insert(at(210), bytes(210, 220)), 0, 'a duplicate adds nothing')
  t.equal(r.blockCount, 1)
  t.equal(r.bytes, 300)
  t.equal(r.takeInOrder(at(100)), null, 'nothing is in order while a gap remains')
  const chunks = r.takeInOrder(at(220))!
  t.ok(Buffer.concat(chunks).equals(bytes(220, 500)), 'delivered from rcvNxt, overlap trimmed')
  t.equal(r.bytes, 0)
  t.ok(r.empty)
})

t.test('SACK blocks: most recently changed first (RFC 2018 4)', async t => {
  const r = new Reassembly(100)
  r.insert(1000, bytes(0, 100))
  r.insert(3000, bytes(0, 100))
  r.insert(2000, bytes(0, 100))
  const out: number[] = []
  t.equal(r.sackBlocks(out, 3), 3)
  t.same(out, [2000, 2100, 3000, 3100, 1000, 1100])
  r.insert(3100, bytes(0, 50))
  r.sackBlocks(out, 2)
  t.same(out, [3000, 3150, 2000, 2100])
})

t.test('the segment limit refuses new segments instead of growing', async t => {
  const r = new Reassembly(2)
  t.equal(r.insert(100, bytes(0, 10)), 10)
  t.equal(r.insert(200, bytes(0, 10)), 10)
  t.equal(r.insert(300, bytes(0, 10)), -1)
  t.equal(r.segments, 2)
  r.clear()
  t.equal(r.bytes, 0)
})
