import t from 'tap'
import { randomBytes } from 'node:crypto'
import { createRequire } from 'node:module'
import { Worker } from 'node:worker_threads'
import { nativeAead, nativeAeadUnavailable } from '../../../proto/noise/native-aead.ts'
import { defaultAead, sodiumAead, sealTransport } from '../../../proto/noise/transport.ts'

// The module is built by `npm ci` (postinstall). CI builds it on a fresh machine, so there a missing
// module is a failure; elsewhere (no C compiler) the data path falls back to sodium-native.
if (nativeAead === null) {
  const reason = `OpenSSL transport module ${nativeAeadUnavailable ?? 'unavailable'}`
  if (process.env.CC_REQUIRE_INTEROP === '1') t.fail(`${reason} (CC_REQUIRE_INTEROP=1)`)
  else {
    t.comment(reason)
    t.plan(0, reason)
  }
} else {
  const modulePath = createRequire(import.meta.url).resolve('../../../proto/noise/native/build/transport.node')
  const raw = createRequire(import.meta.url)(modulePath) as Record<'seal' | 'open' | 'sealMessage', (...args: unknown[]) => number>
  const key = randomBytes(32)

  t.test('it is the data path default', async t => {
    t.equal(defaultAead, nativeAead)
  })

  t.test('sealMessage: the same message as sealTransport over libsodium, for every padding', async t => {
    for (let size = 0; size <= 48; size++) {
      const packet = randomBytes(size)
      const expected = sealTransport(sodiumAead, key, 0xdeadbeef, 2n ** 63n + BigInt(size), packet)
      const out = Buffer.alloc(expected.length + 4, 0x77)
      packet.copy(out, 2 + 16)
      t.equal(raw.sealMessage(key, 2n ** 63n + BigInt(size), out, 2, size, 0xdeadbeef), expected.length)
      if (!out.subarray(2, 2 + expected.length).equals(expected)) t.fail(`size ${size}: bytes differ`)
      t.same([out[0], out[1], out[out.length - 2], out[out.length - 1]], [0x77, 0x77, 0x77, 0x77], 'nothing written outside')
    }
  })

  t.test('keys that alternate, and a refused open between good ones, give libsodium\'s bytes', async t => {
    const keys = [randomBytes(32), randomBytes(32), key]
    for (let i = 0; i < 30; i++) {
      const k = keys[(i * 7) % 3]!
      const packet = randomBytes(100 + i)
      const expected = sealTransport(sodiumAead, k, i, BigInt(i), packet)
      const out = Buffer.alloc(expected.length)
      packet.copy(out, 16)
      t.equal(raw.sealMessage(k, BigInt(i), out, 0, packet.length, i), expected.length)
      if (!out.equals(expected)) t.fail(`message ${i}: bytes differ`)
      if (i % 4 === 0) t.equal(raw.open(keys[(i * 7 + 1) % 3]!, BigInt(i), Buffer.from(out), 16, out.length - 16), -1, `message ${i} under another key`)
      t.equal(raw.open(k, BigInt(i), out, 16, out.length - 16), expected.length - 32)
      if (!out.subarray(16, 16 + packet.length).equals(packet)) t.fail(`message ${i}: opened bytes differ`)
    }
  })

  t.test('a refused open zeroes its output range and leaves the rest', async t => {
    const buf = Buffer.alloc(8 + 64 + 16 + 8, 0x55)
    const plain = randomBytes(64)
    plain.copy(buf, 8)
    t.equal(raw.seal(key, 3n, buf, 8, 64), 80)
    buf[8 + 70] ^= 1 // inside the tag
    t.equal(raw.open(key, 3n, buf, 8, 80), -1)
    t.same(buf.subarray(8, 72), Buffer.alloc(64), 'no unauthenticated plaintext left')
    t.same(buf.subarray(0, 8), Buffer.alloc(8, 0x55))
    t.same(buf.subarray(88), Buffer.alloc(8, 0x55))
  })

  t.test('bad arguments are -1, never a throw or an access outside the buffer', async t => {
    const buf = Buffer.alloc(64)
    const cases: Array<[string, () => number]> = [
      ['short key', () => raw.seal(key.subarray(0, 31), 0n, buf, 0, 16)],
      ['key not a buffer', () => raw.seal('k'.repeat(32), 0n, buf, 0, 16)],
      ['counter a number', () => raw.seal(key, 1, buf, 0, 16)],
      ['counter negative', () => raw.seal(key, -1n, buf, 0, 16)],
      ['counter above 2^64', () => raw.seal(key, 2n ** 64n, buf, 0, 16)],
      ['buffer missing', () => raw.seal(key, 0n, null, 0, 16)],
      ['offset past the end', () => raw.seal(key, 0n, buf, 65, 0)],
      ['no room for the tag', () => raw.seal(key, 0n, buf, 0, 49)],
      ['negative length', () => raw.seal(key, 0n, buf, 0, -1)],
      ['huge length', () => raw.seal(key, 0n, buf, 0, 2 ** 31)],
      ['too few arguments', () => raw.seal(key, 0n, buf)],
      ['open shorter than a tag', () => raw.open(key, 0n, buf, 0, 15)],
      ['open past the end', () => raw.open(key, 0n, buf, 10, 60)],
      ['sealMessage without room for padding', () => raw.sealMessage(key, 0n, buf, 0, 33, 1)],
      ['sealMessage offset past the room', () => raw.sealMessage(key, 0n, buf, 1, 32, 1)],
      ['sealMessage receiver not a number', () => raw.sealMessage(key, 0n, buf, 0, 1, 'x')],
    ]
    for (const [what, call] of cases) t.equal(call(), -1, what)
    t.same(buf, Buffer.alloc(64), 'the buffer was never written')
  })

  t.test('loads in a worker thread with its own contexts and gives the same bytes', async t => {
    const packet = randomBytes(1420)
    const expected = sealTransport(sodiumAead, key, 9, 99n, packet)
    const worker = new Worker(`
      const { parentPort, workerData } = require('node:worker_threads')
      const m = require(workerData.modulePath)
      const out = Buffer.alloc(workerData.length)
      Buffer.from(workerData.packet).copy(out, 16)
      m.sealMessage(Buffer.from(workerData.key), 99n, out, 0, workerData.packet.length, 9)
      parentPort.postMessage(out)
    `, { eval: true, workerData: { modulePath, key, packet, length: expected.length } })
    const out = await new Promise<Uint8Array>((resolve, reject) => { worker.once('message', resolve); worker.once('error', reject) })
    await worker.terminate()
    t.ok(Buffer.from(out).equals(expected))
  })
}
