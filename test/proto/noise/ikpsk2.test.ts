import t from 'tap'
import { readFileSync } from 'node:fs'
import { initializeSymmetric, split, type SymmetricState } from '../../../proto/noise/symmetric.ts'
import {
  messageALength, messageBLength, readMessageA, readMessageB, writeMessageA, writeMessageB,
} from '../../../proto/noise/ikpsk2.ts'
import { nodeX25519, sodiumX25519, setX25519Backend, type KeyPair } from '../../../proto/noise/keys.ts'
import { nodeAead, sodiumAead } from '../../../proto/noise/transport.ts'
import { CONSTRUCTION, IDENTIFIER } from '../../../proto/noise/constants.ts'
import { INITIAL_CHAINING_KEY, INITIAL_HASH, hash } from '../../../proto/noise/kdf.ts'

// Cacophony's Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s vector, as published in mcginty/snow
// tests/vectors/cacophony.txt (commit 8ac60f5). It uses its own prologue and payloads; the message
// functions below are the ones handshake.ts frames into WireGuard messages.
const fixture = JSON.parse(readFileSync(new URL('../../fixtures/noise/cacophony-ikpsk2.json', import.meta.url), 'utf8'))
const v = fixture.vector
const hex = (s: string): Buffer => Buffer.from(s, 'hex')

for (const backend of [sodiumX25519, nodeX25519]) {
  t.test(`cacophony IKpsk2 vector, X25519 ${backend.name}`, async t => {
    const previous = setX25519Backend(backend)
    t.teardown(() => { setX25519Backend(previous) })
    const pair = (priv: string): KeyPair => ({ privateKey: hex(priv), publicKey: backend.publicKey(hex(priv)) })
    const initStatic = pair(v.init_static)
    const initEphemeral = pair(v.init_ephemeral)
    const respStatic = pair(v.resp_static)
    const respEphemeral = pair(v.resp_ephemeral)
    t.equal(respStatic.publicKey.toString('hex'), v.init_remote_static, 'responder static public key')
    const psk = hex(v.init_psks[0])

    // Both sides: InitializeSymmetric(name), MixHash(prologue), then the pre-message MixHash(rs).
    const start = (): SymmetricState => {
      const s = initializeSymmetric(v.protocol_name, hex(v.init_prologue))
      s.hash = hash(s.hash, respStatic.publicKey)
      return s
    }
    const initiator = start()
    const responder = start()

    const [m1, m2, ...transport] = v.messages as { payload: string; ciphertext: string }[]
    const a = Buffer.alloc(messageALength(hex(m1.payload).length))
    t.ok(writeMessageA(initiator, initEphemeral, initStatic, respStatic.publicKey, hex(m1.payload), a, 0))
    t.equal(a.toString('hex'), m1.ciphertext, 'message 1 (-> e, es, s, ss) byte for byte')
    const readA = readMessageA(responder, respStatic, a)
    t.ok(readA)
    t.equal(readA!.payload.toString('hex'), m1.payload)
    t.same(readA!.remoteStatic, initStatic.publicKey)

    const b = Buffer.alloc(messageBLength(hex(m2.payload).length))
    t.ok(writeMessageB(responder, respEphemeral, readA!.remoteEphemeral, readA!.remoteStatic, psk, hex(m2.payload), b, 0))
    t.equal(b.toString('hex'), m2.ciphertext, 'message 2 (<- e, ee, se, psk) byte for byte')
    const readB = readMessageB(initiator, initEphemeral, initStatic, psk, b)
    t.ok(readB)
    t.equal(readB!.payload.toString('hex'), m2.payload)
    t.equal(initiator.hash.toString('hex'), v.handshake_hash, 'handshake hash (initiator)')
    t.equal(responder.hash.toString('hex'), v.handshake_hash, 'handshake hash (responder)')

    // Transport: Split() keys, nonces 0, 1, ... per direction, messages alternate starting with the initiator.
    const [i2r, r2i] = split(initiator)
    t.same(split(responder), [i2r, r2i])
    for (const aead of [sodiumAead, nodeAead]) {
      const counters = [0n, 0n]
      transport.forEach((m, i) => {
        const dir = i % 2
        const key = dir === 0 ? i2r : r2i
        const plaintext = hex(m.payload)
        const out = Buffer.alloc(plaintext.length + 16)
        const counter = counters[dir]++
        aead.seal(key, counter, plaintext, out, 0)
        t.equal(out.toString('hex'), m.ciphertext, `${aead.name} transport message ${i + 3}`)
        const back = Buffer.alloc(plaintext.length)
        t.equal(aead.open(key, counter, out, back, 0), plaintext.length)
        t.same(back, plaintext)
      })
    }
  })
}

t.test('a tampered message 1 or 2 is refused', async t => {
  const pair = (): KeyPair => sodiumX25519.generateKeyPair()
  const is = pair(); const rs = pair(); const psk = Buffer.alloc(32, 7)
  const a = Buffer.alloc(messageALength(4))
  const sa = initializeSymmetric(v.protocol_name, Buffer.alloc(0))
  writeMessageA({ ...sa }, pair(), is, rs.publicKey, Buffer.from('ping'), a, 0)
  for (let i = 0; i < a.length; i += 7) {
    const bad = Buffer.from(a); bad[i] ^= 0x40
    t.equal(readMessageA({ ...sa }, rs, bad), null, `byte ${i} flipped`)
  }
  const responder = { ...sa }
  const ok = readMessageA(responder, rs, a)
  t.ok(ok)
  const b = Buffer.alloc(messageBLength(0))
  const ie = pair()
  // Rebuild the initiator side to read message 2.
  const initiator = { ...sa }
  const a2 = Buffer.alloc(messageALength(4))
  writeMessageA(initiator, ie, is, rs.publicKey, Buffer.from('ping'), a2, 0)
  const responder2 = { ...sa }
  const got = readMessageA(responder2, rs, a2)!
  writeMessageB(responder2, pair(), got.remoteEphemeral, got.remoteStatic, psk, Buffer.alloc(0), b, 0)
  for (let i = 0; i < b.length; i += 3) {
    const bad = Buffer.from(b); bad[i] ^= 0x01
    t.equal(readMessageB({ ...initiator }, ie, is, psk, bad), null, `message 2 byte ${i} flipped`)
  }
  t.equal(readMessageB({ ...initiator }, ie, is, Buffer.alloc(32), b), null, 'a different psk is refused')
  t.ok(readMessageB({ ...initiator }, ie, is, psk, b), 'the untouched message 2 reads')
})

t.test('WireGuard instance: the symmetric state starts at C0 / H0 when the prologue is the identifier', async t => {
  const s = initializeSymmetric(CONSTRUCTION, Buffer.from(IDENTIFIER))
  t.same(s.chainingKey, INITIAL_CHAINING_KEY)
  t.same(s.hash, INITIAL_HASH)
})
