import t from 'tap'
import { randomBytes } from 'node:crypto'
import { mac, mac1Key, cookieKey, writeMac1, verifyMac1, writeMac2, verifyMac2 } from '../../../proto/noise/mac.ts'
import { hash } from '../../../proto/noise/kdf.ts'

t.test('keys are HASH(label || public key) (paper 5.4.4, 5.4.7)', async t => {
  const pub = randomBytes(32)
  t.same(mac1Key(pub), hash(Buffer.concat([Buffer.from('mac1----'), pub])))
  t.same(cookieKey(pub), hash(Buffer.concat([Buffer.from('cookie--'), pub])))
})

t.test('MAC is keyed BLAKE2s with a 16-byte output, not a truncated 32-byte one', async t => {
  const key = randomBytes(32); const input = randomBytes(100)
  const m = mac(key, input)
  t.equal(m.length, 16)
  t.notSame(m, mac(randomBytes(32), input))
  t.notSame(m, mac(key, Buffer.concat([input, Buffer.alloc(1)])))
})

for (const size of [148, 92]) {
  t.test(`mac1 and mac2 of a ${size}-byte message`, async t => {
    const key = mac1Key(randomBytes(32))
    const message = randomBytes(size)
    writeMac1(message, key)
    t.ok(verifyMac1(message, key))
    t.notOk(verifyMac1(message, mac1Key(randomBytes(32))), 'other key')
    for (let i = 0; i < size - 16; i++) {
      const bad = Buffer.from(message); bad[i] ^= 1
      if (verifyMac1(bad, key)) t.fail(`byte ${i} flipped but mac1 verifies`)
    }
    const otherMac2 = Buffer.from(message); otherMac2.fill(0xee, size - 16)
    t.ok(verifyMac1(otherMac2, key), 'mac2 is outside what mac1 covers')

    const cookie = randomBytes(16)
    writeMac2(message, cookie)
    t.ok(verifyMac1(message, key), 'writing mac2 keeps mac1')
    t.ok(verifyMac2(message, cookie))
    t.notOk(verifyMac2(message, randomBytes(16)))
    const badMac1 = Buffer.from(message); badMac1[size - 20] ^= 1
    t.notOk(verifyMac2(badMac1, cookie), 'mac2 covers mac1')
  })
}

t.test('short inputs never verify', async t => {
  t.notOk(verifyMac1(Buffer.alloc(10), randomBytes(32)))
  t.notOk(verifyMac2(Buffer.alloc(20), randomBytes(16)))
})
