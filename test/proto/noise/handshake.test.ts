import t from 'tap'
import {
  createInitiation, consumeInitiation, createResponse, consumeResponse, type StaticIdentity,
} from '../../../proto/noise/handshake.ts'
import { generatePrivateKey, publicKeyFromPrivate, nodeX25519, sodiumX25519, setX25519Backend } from '../../../proto/noise/keys.ts'
import { tai64n } from '../../../proto/noise/tai64n.ts'
import { defaultAead, openTransport, sealTransport } from '../../../proto/noise/transport.ts'

function identity (): StaticIdentity {
  const privateKey = generatePrivateKey()
  return { privateKey, publicKey: publicKeyFromPrivate(privateKey) }
}

const WALL = 1_756_500_000_123

function roundTrip (psk: Buffer | null) {
  const initiator = identity()
  const responder = identity()
  const { message: initiation, handshake } = createInitiation(initiator, responder.publicKey, psk, 0x11223344, WALL)
  const consumed = consumeInitiation(responder, initiation)
  if (consumed === null) throw new Error('initiation refused')
  const { message: response, keys: responderKeys } = createResponse(consumed.handshake, psk, 0xaabbccdd)
  const initiatorKeys = consumeResponse(handshake, initiator, response)
  return { initiator, responder, initiation, handshake, consumed, response, responderKeys, initiatorKeys }
}

t.test('initiator and responder derive matching keys (paper 5.4.5)', async t => {
  for (const psk of [null, Buffer.alloc(32, 0x5a)]) {
    const r = roundTrip(psk)
    t.equal(r.initiation.length, 148)
    t.equal(r.response.length, 92)
    t.equal(r.initiation.readUInt32LE(0), 1, 'type 1 and zero reserved bytes')
    t.equal(r.response.readUInt32LE(0), 2)
    t.equal(r.initiation.readUInt32LE(4), 0x11223344, 'sender index')
    t.equal(r.response.readUInt32LE(4), 0xaabbccdd, 'response sender')
    t.equal(r.response.readUInt32LE(8), 0x11223344, 'response receiver')
    t.same(r.initiation.subarray(116), Buffer.alloc(32), 'macs left zero')
    t.same(r.consumed.remoteStatic, r.initiator.publicKey)
    t.same(r.consumed.timestamp, tai64n(WALL))
    t.equal(r.consumed.remoteIndex, 0x11223344)
    const k = r.initiatorKeys!
    t.ok(k, 'response accepted')
    t.same(k.sendKey, r.responderKeys.receiveKey)
    t.same(k.receiveKey, r.responderKeys.sendKey)
    t.notSame(k.sendKey, k.receiveKey)
    t.equal(k.localIndex, 0x11223344)
    t.equal(k.remoteIndex, 0xaabbccdd)
    t.equal(r.responderKeys.localIndex, 0xaabbccdd)
    t.equal(r.responderKeys.remoteIndex, 0x11223344)
    t.equal(k.isInitiator, true)
    t.equal(r.responderKeys.isInitiator, false)

    const there = sealTransport(defaultAead, k.sendKey, k.remoteIndex, 0n, Buffer.from('ping'))
    t.same(openTransport(defaultAead, r.responderKeys.receiveKey, 0n, there.subarray(16))!.subarray(0, 4), Buffer.from('ping'))
    const back = sealTransport(defaultAead, r.responderKeys.sendKey, r.responderKeys.remoteIndex, 0n, Buffer.from('pong'))
    t.same(openTransport(defaultAead, k.receiveKey, 0n, back.subarray(16))!.subarray(0, 4), Buffer.from('pong'))
  }
})

t.test('two handshakes between the same peers give different keys (fresh ephemerals)', async t => {
  const a = roundTrip(null); const b = roundTrip(null)
  t.notSame(a.responderKeys.sendKey, b.responderKeys.sendKey)
  t.notSame(a.initiation.subarray(8, 40), b.initiation.subarray(8, 40))
})

t.test('mixed X25519 backends interoperate', async t => {
  const initiator = identity(); const responder = identity()
  const previous = setX25519Backend(nodeX25519)
  t.teardown(() => { setX25519Backend(previous) })
  const { message, handshake } = createInitiation(initiator, responder.publicKey, null, 1, WALL)
  setX25519Backend(sodiumX25519)
  const consumed = consumeInitiation(responder, message)!
  t.ok(consumed)
  const { message: response, keys } = createResponse(consumed.handshake, null, 2)
  setX25519Backend(nodeX25519)
  const mine = consumeResponse(handshake, initiator, response)!
  t.same(mine.sendKey, keys.receiveKey)
})

t.test('a tampered initiation is refused', async t => {
  const initiator = identity(); const responder = identity()
  const { message } = createInitiation(initiator, responder.publicKey, null, 1, WALL)
  for (let i = 8; i < 116; i++) {
    const bad = Buffer.from(message); bad[i] ^= 0x01
    if (consumeInitiation(responder, bad) !== null) t.fail(`byte ${i} flipped but accepted`)
  }
  t.equal(consumeInitiation(responder, message.subarray(0, 147)), null, 'short')
  const wrongType = Buffer.from(message); wrongType[0] = 2
  t.equal(consumeInitiation(responder, wrongType), null, 'wrong type')
  t.equal(consumeInitiation(identity(), message), null, 'addressed to someone else')
  t.ok(consumeInitiation(responder, message), 'the original still works')
})

t.test('a tampered or misaddressed response is refused', async t => {
  const r = roundTrip(null)
  for (let i = 12; i < 60; i++) {
    const bad = Buffer.from(r.response); bad[i] ^= 0x80
    if (consumeResponse(r.handshake, r.initiator, bad) !== null) t.fail(`byte ${i} flipped but accepted`)
  }
  const wrongReceiver = Buffer.from(r.response); wrongReceiver.writeUInt32LE(0x11223345, 8)
  t.equal(consumeResponse(r.handshake, r.initiator, wrongReceiver), null, 'receiver index is not ours')
  t.equal(consumeResponse(r.handshake, identity(), r.response), null, 'another initiator identity')
  t.equal(consumeResponse(r.handshake, r.initiator, r.response.subarray(0, 91)), null, 'short')
})

t.test('preshared keys must match (paper 5.4.3 psk token)', async t => {
  const initiator = identity(); const responder = identity()
  const { message, handshake } = createInitiation(initiator, responder.publicKey, Buffer.alloc(32, 1), 1, WALL)
  const consumed = consumeInitiation(responder, message)!
  const { message: response } = createResponse(consumed.handshake, Buffer.alloc(32, 2), 2)
  t.equal(consumeResponse(handshake, initiator, response), null)
  const { message: noPsk } = createResponse(consumed.handshake, null, 3)
  t.equal(consumeResponse(handshake, initiator, noPsk), null, 'psk on one side only')
})

t.test('low-order keys are refused', async t => {
  const initiator = identity(); const responder = identity()
  t.throws(() => createInitiation(initiator, Buffer.alloc(32), null, 1, WALL), { name: 'KeyError', code: 'key_low_order' })
  const { message } = createInitiation(initiator, responder.publicKey, null, 1, WALL)
  const zeroEphemeral = Buffer.from(message); zeroEphemeral.fill(0, 8, 40)
  t.equal(consumeInitiation(responder, zeroEphemeral), null, 'low-order initiator ephemeral')
})

t.test('a responder identity whose key is replaced in place keeps working (static DH cache follows the key)', async t => {
  const initiator = identity()
  const responder = identity()
  const first = createInitiation(initiator, responder.publicKey, null, 1, WALL)
  t.ok(consumeInitiation(responder, first.message))
  const next = identity()
  responder.privateKey = next.privateKey
  responder.publicKey = next.publicKey
  const second = createInitiation(initiator, responder.publicKey, null, 2, WALL + 1000)
  const consumed = consumeInitiation(responder, second.message)
  t.ok(consumed, 'initiation to the new key accepted')
  const { message, keys } = createResponse(consumed!.handshake, null, 3)
  t.same(consumeResponse(second.handshake, initiator, message)!.sendKey, keys.receiveKey)
  // Overwriting the bytes of the same buffer is noticed too.
  const third = identity()
  responder.privateKey.set(third.privateKey)
  responder.publicKey.set(third.publicKey)
  const again = createInitiation(initiator, third.publicKey, null, 4, WALL + 2000)
  const c3 = consumeInitiation(responder, again.message)
  t.ok(c3, 'initiation after overwriting the key bytes')
  t.same(consumeResponse(again.handshake, initiator, createResponse(c3!.handshake, null, 5).message)?.remoteIndex, 5)
})
