import t from 'tap'
import { randomBytes } from 'node:crypto'
import {
  defaultAead, nodeAead, openTransport, openTransportMessage, paddedLength, sealTransport, sealTransportInto, sodiumAead, transportMessageLength,
} from '../../../proto/noise/transport.ts'
import { nativeAead } from '../../../proto/noise/native-aead.ts'

const key = randomBytes(32)
/** Every backend on this machine: the OpenSSL one when its module is built (test/proto/noise/native-aead.test.ts says why not). */
const backends = [sodiumAead, nodeAead, ...(nativeAead !== null ? [nativeAead] : [])]

t.test('node and sodium backends produce identical bytes and open each other', async t => {
  for (const size of [0, 1, 15, 16, 17, 100, 1420, 1500, 9000]) {
    for (const counter of [0n, 1n, 0xfffffffen, 2n ** 53n + 5n, 2n ** 64n - 2n ** 13n - 2n]) {
      const plaintext = randomBytes(size)
      const a = Buffer.alloc(size + 16); const b = Buffer.alloc(size + 16)
      t.equal(sodiumAead.seal(key, counter, plaintext, a, 0), size + 16)
      t.equal(nodeAead.seal(key, counter, plaintext, b, 0), size + 16)
      if (!a.equals(b)) t.fail(`size ${size} counter ${counter}: backends differ`)
      const viaNode = Buffer.alloc(size); const viaSodium = Buffer.alloc(size)
      t.equal(nodeAead.open(key, counter, a, viaNode, 0), size)
      t.equal(sodiumAead.open(key, counter, b, viaSodium, 0), size)
      if (!viaNode.equals(plaintext) || !viaSodium.equals(plaintext)) t.fail(`size ${size}: round trip differs`)
      if (nativeAead !== null) {
        const c = Buffer.alloc(size + 16)
        t.equal(nativeAead.seal(key, counter, plaintext, c, 0), size + 16)
        if (!c.equals(a)) t.fail(`size ${size} counter ${counter}: OpenSSL backend differs`)
        const viaNative = Buffer.alloc(size)
        t.equal(nativeAead.open(key, counter, a, viaNative, 0), size)
        if (!viaNative.equals(plaintext)) t.fail(`size ${size}: OpenSSL round trip differs`)
      }
    }
  }
})

for (const aead of backends) {
  t.test(`${aead.name}: offsets, in place, and refusals leave output untouched`, async t => {
    const plaintext = randomBytes(64)
    const out = Buffer.alloc(10 + 80 + 5, 0xaa)
    t.equal(aead.seal(key, 7n, plaintext, out, 10), 80)
    t.same(out.subarray(0, 10), Buffer.alloc(10, 0xaa))
    t.same(out.subarray(90), Buffer.alloc(5, 0xaa))
    const sealed = Buffer.from(out.subarray(10, 90))
    const opened = Buffer.alloc(70, 0xbb)
    t.equal(aead.open(key, 7n, sealed, opened, 3), 64)
    t.same(opened.subarray(3, 67), plaintext)
    t.equal(aead.open(key, 8n, sealed, opened, 0), -1, 'wrong counter')
    t.equal(aead.open(randomBytes(32), 7n, sealed, opened, 0), -1, 'wrong key')
    const target = Buffer.alloc(64, 0xcc)
    const bad = Buffer.from(sealed); bad[5] ^= 1
    t.equal(aead.open(key, 7n, bad, target, 0), -1)
    t.ok(target.equals(Buffer.alloc(64, 0xcc)) || target.equals(Buffer.alloc(64)), 'output untouched or zeroed, never plaintext')
    t.equal(aead.open(key, 7n, sealed.subarray(0, 15), opened, 0), -1, 'shorter than a tag')
    t.equal(aead.open(key, 7n, sealed, Buffer.alloc(10), 0), -1, 'output too small')
    const inPlace = Buffer.from(sealed)
    t.equal(aead.open(key, 7n, inPlace, inPlace, 0), 64)
    t.same(inPlace.subarray(0, 64), plaintext)
  })
}

t.test('sealTransport / openTransport: header, padding to 16 (paper 5.4.6)', async t => {
  t.equal(paddedLength(0), 0)
  t.equal(paddedLength(1), 16)
  t.equal(paddedLength(16), 16)
  t.equal(paddedLength(1420), 1424)
  for (const size of [0, 1, 16, 17, 1420]) {
    const packet = randomBytes(size)
    const message = sealTransport(defaultAead, key, 0x0badcafe, 42n, packet)
    t.equal(message.length, 16 + paddedLength(size) + 16, `size ${size}`)
    t.equal(message.readUInt32LE(0), 4, 'type 4 and zero reserved bytes')
    t.equal(message.readUInt32LE(4), 0x0badcafe)
    t.equal(message.readBigUInt64LE(8), 42n)
    const payload = Buffer.from(message.subarray(16))
    const opened = openTransport(nodeAead, key, 42n, payload)!
    t.equal(opened.length, paddedLength(size))
    t.same(opened.subarray(0, size), packet)
    t.same(opened.subarray(size), Buffer.alloc(paddedLength(size) - size), 'zero padding')
    t.equal(opened.buffer, payload.buffer, 'decrypted in place')
  }
})

t.test('openTransport refuses tampering anywhere and never exposes unauthenticated plaintext', async t => {
  const packet = randomBytes(100)
  const message = sealTransport(sodiumAead, key, 1, 9n, packet)
  const payload = message.subarray(16)
  for (const aead of backends) {
    for (let i = 0; i < payload.length; i++) {
      const bad = Buffer.from(payload); bad[i] ^= 0x10
      const copy = Buffer.from(bad)
      if (openTransport(aead, key, 9n, bad) !== null) t.fail(`${aead.name} byte ${i} flipped but opened`)
      const zeroed = bad.subarray(0, bad.length - 16).equals(Buffer.alloc(bad.length - 16))
      if (!bad.equals(copy) && !zeroed) t.fail(`${aead.name} byte ${i}: refused message holds other bytes`)
      if (bad.subarray(0, 100).equals(packet)) t.fail(`${aead.name} byte ${i}: plaintext exposed`)
    }
  }
  t.pass('checked every byte')
  t.equal(openTransport(sodiumAead, key, 10n, Buffer.from(payload)), null, 'other counter')
  t.equal(openTransport(sodiumAead, key, 9n, Buffer.alloc(8)), null, 'shorter than a tag')
  t.ok(openTransport(sodiumAead, key, 9n, new Uint8Array(payload)), 'plain Uint8Array input')
})

t.test('the native binding path (when used) matches the sodium-native wrapper byte for byte', async t => {
  const { aeadPath, aeadEncrypt, aeadDecrypt, sodium } = await import('../../../proto/noise/sodium.ts')
  t.comment(`ChaCha20-Poly1305 path: ${aeadPath}`)
  for (const size of [0, 5, 64, 1420]) {
    const m = randomBytes(size); const ad = size % 2 === 0 ? randomBytes(32) : null
    const nonce = randomBytes(12)
    const fast = Buffer.alloc(size + 16); const wrapped = Buffer.alloc(size + 16)
    t.equal(aeadEncrypt(fast, m, ad, nonce, key), size + 16)
    sodium.crypto_aead_chacha20poly1305_ietf_encrypt(wrapped, m, ad, null, nonce, key)
    t.same(fast, wrapped)
    const back = Buffer.alloc(size)
    t.equal(aeadDecrypt(back, fast, ad, nonce, key), size)
    t.same(back, m)
    fast[0] ^= 1
    t.equal(aeadDecrypt(back, fast, ad, nonce, key), -1)
  }
  t.throws(() => aeadEncrypt(Buffer.alloc(20), Buffer.alloc(4), null, Buffer.alloc(12), Buffer.alloc(31)), RangeError, 'short key')
  t.throws(() => aeadEncrypt(Buffer.alloc(19), Buffer.alloc(4), null, Buffer.alloc(12), key), RangeError, 'output size')
  t.equal(aeadDecrypt(Buffer.alloc(4), Buffer.alloc(20), null, Buffer.alloc(11), key), -1, 'short nonce')
})

t.test('sealTransportInto: same bytes as sealTransport, copied or in place', async t => {
  for (const aead of backends) {
    for (const size of [0, 3, 16, 1420]) {
      const packet = randomBytes(size)
      const expected = sealTransport(sodiumAead, key, 77, 1234n, packet)
      t.equal(transportMessageLength(size), expected.length)
      const out = Buffer.alloc(expected.length + 8, 0xee)
      t.equal(sealTransportInto(aead, key, 77, 1234n, packet, out, 8), expected.length)
      t.same(out.subarray(8), expected, `${aead.name} size ${size} copied`)
      t.same(out.subarray(0, 8), Buffer.alloc(8, 0xee))
      // In place: the packet written at offset 16 of the output, with garbage where padding goes.
      const inPlace = Buffer.alloc(expected.length, 0x99)
      packet.copy(inPlace, 16)
      t.equal(sealTransportInto(aead, key, 77, 1234n, inPlace.subarray(16, 16 + size), inPlace, 0), expected.length)
      t.same(inPlace, expected, `${aead.name} size ${size} in place`)
    }
  }
  t.throws(() => sealTransportInto(sodiumAead, key, 1, 0n, Buffer.alloc(20), Buffer.alloc(63), 0), RangeError)
  t.throws(() => sealTransportInto(sodiumAead, key, 1, 0n, Buffer.alloc(20), Buffer.alloc(64), 1), RangeError)
})

t.test('openTransportMessage: the padded plaintext in place after the header, or -1', async t => {
  for (const aead of backends) {
    for (const size of [0, 1, 16, 100, 1420]) {
      const packet = randomBytes(size)
      const message = sealTransport(sodiumAead, key, 5, 77n, packet)
      const n = openTransportMessage(aead, key, 77n, message)
      t.equal(n, paddedLength(size), `${aead.name} size ${size}`)
      if (!message.subarray(16, 16 + size).equals(packet)) t.fail(`${aead.name} size ${size}: plaintext differs`)
      t.equal(message.readUInt32LE(4), 5, 'header untouched')
    }
    const plain = randomBytes(64)
    const message = sealTransport(sodiumAead, key, 5, 78n, plain)
    const forged = Buffer.from(message); forged[40] ^= 1
    t.equal(openTransportMessage(aead, key, 78n, forged), -1, `${aead.name}: forged`)
    t.notOk(forged.subarray(16, 80).equals(plain), 'no plaintext left behind')
    t.equal(openTransportMessage(aead, key, 79n, Buffer.from(message)), -1, `${aead.name}: other counter`)
    t.equal(openTransportMessage(aead, key, 78n, message.subarray(0, 31)), -1, `${aead.name}: shorter than header + tag`)
  }
})
