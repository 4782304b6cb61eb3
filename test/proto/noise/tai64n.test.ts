import t from 'tap'
import { tai64n, compareTai64n, TAI64N_LEN } from '../../../proto/noise/tai64n.ts'

t.test('layout: 2^62 + 10 + seconds, then whitened nanoseconds, big-endian', async t => {
  // TAI64 label per cr.yp.to/libtai/tai64.html with the 10 s TAI-UTC offset wireguard-go uses (tai64n.go base).
  const ts = tai64n(1_000_123.456)
  t.equal(ts.length, TAI64N_LEN)
  t.equal(ts.subarray(0, 8).toString('hex'), (0x400000000000000an + 1000n).toString(16).padStart(16, '0'))
  // 123.456 ms = 123456000 ns = 0x075bca00; whitening clears the low 24 bits.
  t.equal(ts.readUInt32BE(8), 0x07000000)
})

t.test('ordering follows time, with ~16 ms granularity like wireguard-go TestMonotonic', async t => {
  const start = 123.456789 // ms: the same non-trivial pattern as wireguard-go's test (123456789 ns)
  const stamp = (ms: number): Buffer => tai64n(start + ms)
  t.equal(compareTai64n(stamp(0.00001), stamp(0)), 0, '+10 ns')
  t.equal(compareTai64n(stamp(0.01), stamp(0)), 0, '+10 us')
  t.equal(compareTai64n(stamp(1), stamp(0)), 0, '+1 ms')
  t.equal(compareTai64n(stamp(10), stamp(0)), 0, '+10 ms')
  t.ok(compareTai64n(stamp(20), stamp(0)) > 0, '+20 ms is later')
  t.ok(compareTai64n(stamp(0), stamp(20)) < 0)
  t.ok(compareTai64n(tai64n(1_700_000_001_000), tai64n(1_700_000_000_999)) > 0, 'second boundary')
  t.ok(compareTai64n(tai64n(2 ** 40), tai64n(2 ** 39)) > 0)
})

t.test('writes into a caller buffer', async t => {
  const out = Buffer.alloc(12, 0xff)
  t.equal(tai64n(0, out), out)
  t.equal(out.toString('hex'), '400000000000000a00000000')
})
