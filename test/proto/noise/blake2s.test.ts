/**
 * BLAKE2s against published answers (RFC 7693 appendix B; the BLAKE2 reference package's keyed
 * known-answer file, blake2s-kat.txt) and, for every length and split, against two independent
 * implementations: node:crypto (BLAKE2s-256, HMAC) and @noble/hashes (keyed, short digests).
 */
import t from 'tap'
import { createHash, createHmac } from 'node:crypto'
import { blake2s } from '@noble/hashes/blake2.js'
import { Blake2s, HmacBlake2s, blake2s256 } from '../../../proto/noise/blake2s.ts'

// Deterministic inputs (a seeded xorshift), so a failure names the same case every run.
function bytes (n: number, seed: number): Buffer {
  const b = Buffer.alloc(n)
  let x = seed | 1
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5
    b[i] = x & 0xff
  }
  return b
}

t.test('RFC 7693 appendix B: BLAKE2s-256("abc")', async t => {
  t.equal(blake2s256(Buffer.from('abc')).toString('hex'), '508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982')
})

t.test('blake2s-kat.txt: key 00..1f, empty input and input 00 (first two entries)', async t => {
  const key = Buffer.from(Array.from({ length: 32 }, (_, i) => i))
  t.equal(new Blake2s(32, key).digest().toString('hex'), '48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49')
  t.equal(new Blake2s(32, key).update(Buffer.from([0])).digest().toString('hex'), '40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1')
})

t.test('BLAKE2s-256 and HMAC-BLAKE2s equal node:crypto for lengths 0..300 split anywhere', async t => {
  let mismatches = 0
  for (let n = 0; n <= 300; n++) {
    const data = bytes(n, n + 1)
    const cut = (n * 7) % (n + 1)
    const want = createHash('blake2s256').update(data).digest()
    if (!want.equals(new Blake2s(32).update(data.subarray(0, cut)).update(data.subarray(cut)).digest())) mismatches++
    const key = bytes(1 + (n % 100), n + 1000) // keys both below and above the 64-byte block
    const wantMac = createHmac('blake2s256', key).update(data).digest()
    const h = new HmacBlake2s(key)
    if (!wantMac.equals(h.mac(data.subarray(0, cut), data.subarray(cut)))) mismatches++
    if (!wantMac.equals(h.mac(data))) mismatches++ // the absorbed key is reusable
  }
  t.equal(mismatches, 0)
})

t.test('keyed BLAKE2s with 1..32-byte digests equals @noble/hashes', async t => {
  let mismatches = 0
  for (let n = 0; n <= 200; n++) {
    const data = bytes(n, n + 7)
    const key = bytes(1 + (n % 32), n + 99)
    const outLen = 1 + (n % 32)
    const want = Buffer.from(blake2s(data, { key, dkLen: outLen }))
    if (!want.equals(new Blake2s(outLen, key).update(data).digest())) mismatches++
  }
  t.equal(mismatches, 0)
})

t.test('copyFrom continues from a saved prefix', async t => {
  const prefix = new Blake2s(32).update(bytes(100, 3))
  const a = new Blake2s(32).copyFrom(prefix).update(bytes(10, 4)).digest()
  const b = new Blake2s(32).copyFrom(prefix).update(bytes(10, 5)).digest()
  t.ok(a.equals(createHash('blake2s256').update(bytes(100, 3)).update(bytes(10, 4)).digest()))
  t.ok(b.equals(createHash('blake2s256').update(bytes(100, 3)).update(bytes(10, 5)).digest()))
})

t.test('out-of-range digest and key lengths are refused', async t => {
  t.throws(() => new Blake2s(0), RangeError)
  t.throws(() => new Blake2s(33), RangeError)
  t.throws(() => new Blake2s(32, Buffer.alloc(33)), RangeError)
})
