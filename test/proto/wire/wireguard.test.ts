import t from 'tap'
import {
  messageType, parseInitiation, emitInitiation, parseResponse, emitResponse, parseCookieReply, emitCookieReply,
  parseTransportHeader, emitTransportHeader, receiverIndexOf,
  MESSAGE_INITIATION, MESSAGE_RESPONSE, MESSAGE_COOKIE_REPLY, MESSAGE_TRANSPORT,
  MESSAGE_INITIATION_SIZE, MESSAGE_RESPONSE_SIZE, MESSAGE_COOKIE_REPLY_SIZE, MESSAGE_TRANSPORT_MIN_SIZE,
} from '../../../proto/wire/wireguard.ts'
import { WireError } from '../../../proto/wire/errors.ts'

// Golden messages written by hand from the layouts of the WireGuard paper (5.4.2, 5.4.3, 5.4.7,
// 5.4.6) and wireguard-go's MessageInitiation/MessageResponse/MessageCookieReply/MessageTransport:
// little-endian integers, each field filled with a distinct byte so a shifted offset shows.
const fill = (byte: number, n: number): string => byte.toString(16).padStart(2, '0').repeat(n)
const INITIATION = '01000000' + '44332211' + fill(0xe1, 32) + fill(0x51, 48) + fill(0x71, 28) + fill(0xa1, 16) + fill(0xa2, 16)
const RESPONSE = '02000000' + 'ddccbbaa' + '44332211' + fill(0xe2, 32) + fill(0x00, 16) + fill(0xb1, 16) + fill(0xb2, 16)
const COOKIE = '03000000' + '04030201' + fill(0xc0, 24) + fill(0xc1, 32)
const TRANSPORT = '04000000' + 'efbeadde' + '0807060504030201' + fill(0xd0, 32)

const hex = (s: string): Buffer => Buffer.from(s, 'hex')

t.test('golden sizes match the spec', async t => {
  t.equal(hex(INITIATION).length, MESSAGE_INITIATION_SIZE)
  t.equal(hex(RESPONSE).length, MESSAGE_RESPONSE_SIZE)
  t.equal(hex(COOKIE).length, MESSAGE_COOKIE_REPLY_SIZE)
  t.equal(messageType(hex(INITIATION)), MESSAGE_INITIATION)
  t.equal(messageType(hex(RESPONSE)), MESSAGE_RESPONSE)
  t.equal(messageType(hex(COOKIE)), MESSAGE_COOKIE_REPLY)
  t.equal(messageType(hex(TRANSPORT)), MESSAGE_TRANSPORT)
})

t.test('initiation: parse golden, emit reproduces it', async t => {
  const repr = parseInitiation(hex(INITIATION))
  t.equal(repr.senderIndex, 0x11223344)
  t.same(repr.ephemeral, Buffer.alloc(32, 0xe1))
  t.same(repr.encryptedStatic, Buffer.alloc(48, 0x51))
  t.same(repr.encryptedTimestamp, Buffer.alloc(28, 0x71))
  t.same(repr.mac1, Buffer.alloc(16, 0xa1))
  t.same(repr.mac2, Buffer.alloc(16, 0xa2))
  const out = Buffer.alloc(150, 0xff)
  t.equal(emitInitiation(repr, out, 1), 148)
  t.equal(out.subarray(1, 149).toString('hex'), INITIATION)
  t.equal(out[0], 0xff); t.equal(out[149], 0xff)
})

t.test('response: parse golden, emit reproduces it', async t => {
  const repr = parseResponse(hex(RESPONSE))
  t.equal(repr.senderIndex, 0xaabbccdd)
  t.equal(repr.receiverIndex, 0x11223344)
  t.same(repr.ephemeral, Buffer.alloc(32, 0xe2))
  t.same(repr.encryptedNothing, Buffer.alloc(16))
  t.same(repr.mac1, Buffer.alloc(16, 0xb1))
  t.same(repr.mac2, Buffer.alloc(16, 0xb2))
  const out = Buffer.alloc(92)
  t.equal(emitResponse(repr, out), 92)
  t.equal(out.toString('hex'), RESPONSE)
  t.equal(receiverIndexOf(hex(RESPONSE)), 0x11223344)
})

t.test('cookie reply: parse golden, emit reproduces it', async t => {
  const repr = parseCookieReply(hex(COOKIE))
  t.equal(repr.receiverIndex, 0x01020304)
  t.same(repr.nonce, Buffer.alloc(24, 0xc0))
  t.same(repr.encryptedCookie, Buffer.alloc(32, 0xc1))
  const out = Buffer.alloc(64)
  t.equal(emitCookieReply(repr, out), 64)
  t.equal(out.toString('hex'), COOKIE)
  t.equal(receiverIndexOf(hex(COOKIE)), 0x01020304)
})

t.test('transport header: parse golden, emit reproduces it', async t => {
  const datagram = hex(TRANSPORT)
  const header = parseTransportHeader(datagram)
  t.equal(header.receiverIndex, 0xdeadbeef)
  t.equal(header.counter, 0x0102030405060708n)
  t.equal(receiverIndexOf(datagram), 0xdeadbeef)
  const out = Buffer.alloc(16)
  t.equal(emitTransportHeader(header, out), 16)
  t.equal(out.toString('hex'), TRANSPORT.slice(0, 32))
  t.equal(parseTransportHeader(hex('04000000' + '01000000' + '2a00000000000000' + fill(0, 16))).counter, 42n)
  t.equal(parseTransportHeader(hex('04000000' + '01000000' + 'ffffffffffffffff' + fill(0, 16))).counter, 2n ** 64n - 1n)
})

t.test('every wrong length 0..200 is a WireError', async t => {
  const goldens: [string, (b: Uint8Array) => unknown, number][] = [
    [INITIATION, parseInitiation, MESSAGE_INITIATION_SIZE],
    [RESPONSE, parseResponse, MESSAGE_RESPONSE_SIZE],
    [COOKIE, parseCookieReply, MESSAGE_COOKIE_REPLY_SIZE],
  ]
  for (const [golden, parse, size] of goldens) {
    const base = Buffer.concat([hex(golden), Buffer.alloc(200)])
    for (let len = 0; len <= 200; len++) {
      const buf = base.subarray(0, len)
      if (len === size) {
        t.doesNotThrow(() => parse(buf))
        continue
      }
      try { messageType(buf); t.fail(`type ${golden.slice(0, 2)} length ${len} accepted`) } catch (e) { if (!(e instanceof WireError)) t.fail(`length ${len}: ${String(e)}`) }
      try { parse(buf); t.fail(`parse length ${len} accepted`) } catch (e) { if (!(e instanceof WireError)) t.fail(`length ${len}: ${String(e)}`) }
    }
  }
  const transport = Buffer.concat([hex(TRANSPORT), Buffer.alloc(200)])
  for (let len = 0; len <= 200; len++) {
    const buf = transport.subarray(0, len)
    if (len >= MESSAGE_TRANSPORT_MIN_SIZE) {
      t.equal(messageType(buf), MESSAGE_TRANSPORT)
    } else {
      t.throws(() => messageType(buf), WireError, `transport length ${len}`)
      t.throws(() => parseTransportHeader(buf), WireError)
    }
  }
  t.throws(() => messageType(Buffer.alloc(2)), { code: 'wg_short' })
  t.throws(() => messageType(hex(INITIATION).subarray(0, 147)), { code: 'wg_size' })
})

t.test('non-zero reserved bytes and unknown types are refused', async t => {
  for (const golden of [INITIATION, RESPONSE, COOKIE, TRANSPORT]) {
    for (let i = 1; i <= 3; i++) {
      const bad = hex(golden); bad[i] = 1
      t.throws(() => messageType(bad), { code: 'wg_reserved' })
    }
  }
  for (const type of [0, 5, 255]) {
    const bad = hex(TRANSPORT); bad[0] = type
    t.throws(() => messageType(bad), { code: 'wg_type' })
  }
  t.throws(() => parseResponse(hex(INITIATION)), { code: 'wg_type' })
  t.throws(() => parseInitiation(hex(TRANSPORT).subarray(0, 32)), WireError)
  t.throws(() => receiverIndexOf(hex(INITIATION)), { code: 'wg_type' })
})

t.test('emit checks field sizes and room', async t => {
  const repr = parseInitiation(hex(INITIATION))
  t.throws(() => emitInitiation(repr, Buffer.alloc(147)), { code: 'wg_buffer' })
  t.throws(() => emitInitiation({ ...repr, ephemeral: Buffer.alloc(31) }, Buffer.alloc(148)), { code: 'wg_field' })
  t.throws(() => emitCookieReply({ ...parseCookieReply(hex(COOKIE)), nonce: Buffer.alloc(12) }, Buffer.alloc(64)), { code: 'wg_field' })
})

t.test('parse -> emit round trips of random messages', async t => {
  for (let i = 0; i < 50; i++) {
    const init = Buffer.from(require_random(148)); init.writeUInt32LE(1, 0)
    const out = Buffer.alloc(148)
    emitInitiation(parseInitiation(init), out)
    if (!out.equals(init)) t.fail('initiation round trip')
    const resp = Buffer.from(require_random(92)); resp.writeUInt32LE(2, 0)
    const out2 = Buffer.alloc(92)
    emitResponse(parseResponse(resp), out2)
    if (!out2.equals(resp)) t.fail('response round trip')
  }
  t.pass('round trips done')
})

function require_random (n: number): Uint8Array {
  const b = new Uint8Array(n)
  for (let i = 0; i < n; i++) b[i] = (Math.random() * 256) | 0
  return b
}
