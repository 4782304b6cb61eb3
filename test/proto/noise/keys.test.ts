import t from 'tap'
import { spawnSync } from 'node:child_process'
import {
  KeyError, KEY_LEN, decodeKey, encodeKey, generatePrivateKey, nodeX25519, publicKeyFromPrivate, sodiumX25519,
} from '../../../proto/noise/keys.ts'
import { requireWg } from '../../helpers/require.ts'

const hex = (s: string): Buffer => Buffer.from(s, 'hex')

t.test('generated private keys are clamped like wg genkey (RFC 7748 section 5)', async t => {
  for (let i = 0; i < 50; i++) {
    const k = generatePrivateKey()
    t.equal(k.length, KEY_LEN)
    t.equal(k[0] & 7, 0)
    t.equal(k[31] & 0x80, 0)
    t.equal(k[31] & 0x40, 0x40)
  }
  t.notSame(generatePrivateKey(), generatePrivateKey())
})

t.test('base64 encoding as wg prints it', async t => {
  const key = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a')
  const text = encodeKey(key)
  t.equal(text.length, 44)
  t.equal(text, 'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=')
  t.same(decodeKey(text), key)
  const bad = ['', 'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo', 'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo==',
    'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCp=', // non-canonical: stray low bits
    'dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LC-=', ' dwdtCnMYpX08FsFyUbJmRd9ML4frwJkqsXf7pR25LCo=',
    'AAAA', 'A'.repeat(88)]
  for (const b of bad) t.throws(() => decodeKey(b), { name: 'KeyError', code: 'key_format' }, JSON.stringify(b))
  t.throws(() => decodeKey(42 as unknown as string), KeyError)
  t.throws(() => encodeKey(Buffer.alloc(31)), KeyError)
})

// RFC 7748 section 6.1 (Curve25519 Diffie-Hellman test vector).
const ALICE_PRIV = '77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a'
const ALICE_PUB = '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a'
const BOB_PRIV = '5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb'
const BOB_PUB = 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f'
const SHARED = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742'

// Points of small order (and their non-canonical encodings) from libsodium's blocklist in
// crypto_scalarmult/curve25519/ref10/x25519_ref10.c (has_small_order); any of them gives a zero DH.
const LOW_ORDER = [
  '0000000000000000000000000000000000000000000000000000000000000000',
  '0100000000000000000000000000000000000000000000000000000000000000',
  'e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800',
  '5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157',
  'ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
  'eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f',
]

for (const backend of [sodiumX25519, nodeX25519]) {
  t.test(`X25519 ${backend.name}: RFC 7748 6.1 vector`, async t => {
    t.equal(backend.publicKey(hex(ALICE_PRIV)).toString('hex'), ALICE_PUB)
    t.equal(backend.publicKey(hex(BOB_PRIV)).toString('hex'), BOB_PUB)
    t.equal(backend.sharedSecret(hex(ALICE_PRIV), hex(BOB_PUB))!.toString('hex'), SHARED)
    t.equal(backend.sharedSecret(hex(BOB_PRIV), hex(ALICE_PUB))!.toString('hex'), SHARED)
  })

  t.test(`X25519 ${backend.name}: an all-zero shared secret is refused`, async t => {
    for (const point of LOW_ORDER) {
      t.equal(backend.sharedSecret(generatePrivateKey(), hex(point)), null, point)
    }
  })

  t.test(`X25519 ${backend.name}: generated pairs agree with the other backend`, async t => {
    const other = backend === sodiumX25519 ? nodeX25519 : sodiumX25519
    const a = backend.generateKeyPair()
    const b = other.generateKeyPair()
    t.same(other.publicKey(a.privateKey), a.publicKey)
    t.same(backend.sharedSecret(a.privateKey, b.publicKey), other.sharedSecret(b.privateKey, a.publicKey))
  })
}

t.test('interop with wg genkey / wg pubkey', async t => {
  if (!requireWg(t)) return
  for (let i = 0; i < 5; i++) {
    const ours = generatePrivateKey()
    const pub = spawnSync('wg', ['pubkey'], { input: encodeKey(ours) + '\n', encoding: 'utf8' })
    t.equal(pub.status, 0)
    t.equal(pub.stdout.trim(), encodeKey(publicKeyFromPrivate(ours)), 'wg pubkey of our private key')
  }
  const theirs = spawnSync('wg', ['genkey'], { encoding: 'utf8' }).stdout.trim()
  const priv = decodeKey(theirs)
  t.equal(priv[0] & 7, 0, 'wg genkey clamps too')
  const pub = spawnSync('wg', ['pubkey'], { input: theirs + '\n', encoding: 'utf8' }).stdout.trim()
  t.equal(encodeKey(publicKeyFromPrivate(priv)), pub, 'our public key of a wg genkey key')
})
