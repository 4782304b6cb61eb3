import t from 'tap'
import { hash, hmac, kdf1, kdf2, kdf3, INITIAL_CHAINING_KEY, INITIAL_HASH } from '../../../proto/noise/kdf.ts'

const hex = (s: string): Buffer => Buffer.from(s, 'hex')

// wireguard-go device/kdf_test.go (TestKDF): key, input and the three outputs of KDF3; KDF2 and KDF1
// are prefixes of it.
const vectors = [
  {
    key: '746573742d6b6579',
    input: '746573742d696e707574',
    t0: '6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633',
    t1: 'df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a',
    t2: 'fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24',
  },
  {
    key: '776972656775617264',
    input: '776972656775617264',
    t0: '491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8',
    t1: '1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f',
    t2: '31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160',
  },
  {
    key: '',
    input: '',
    t0: '8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0',
    t1: '58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e',
    t2: '0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e',
  },
]

t.test('wireguard-go KDF vectors', async t => {
  for (const v of vectors) {
    const [a, b, c] = kdf3(hex(v.key), hex(v.input))
    t.equal(a.toString('hex'), v.t0)
    t.equal(b.toString('hex'), v.t1)
    t.equal(c.toString('hex'), v.t2)
    const [d, e] = kdf2(hex(v.key), hex(v.input))
    t.equal(d.toString('hex'), v.t0)
    t.equal(e.toString('hex'), v.t1)
    t.equal(kdf1(hex(v.key), hex(v.input)).toString('hex'), v.t0)
  }
})

t.test('C0 and H0', async t => {
  // boringtun src/noise/handshake.rs INITIAL_CK ("C := Hash(Construction)") and INITIAL_HS
  // ("H := Hash(C || Identifier)"); wireguard-go derives the same in device/noise-protocol.go init().
  t.equal(INITIAL_CHAINING_KEY.toString('hex'), '60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36')
  t.equal(INITIAL_HASH.toString('hex'), '2211b361081ac566691243db458ad5322d9c6c662293e8b70ee19c65ba079ef3')
})

t.test('hash and hmac treat their parts as one concatenated input', async t => {
  // RFC 7693 Appendix B: BLAKE2s-256("abc").
  t.equal(hash(Buffer.from('abc')).toString('hex'), '508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982')
  t.same(hash(Buffer.from('a'), Buffer.from('bc')), hash(Buffer.from('abc')))
  t.same(hmac(Buffer.from('k'), Buffer.from('a'), Buffer.from('bc')), hmac(Buffer.from('k'), Buffer.from('abc')))
  t.notSame(hmac(Buffer.from('k'), Buffer.from('abc')), hmac(Buffer.from('j'), Buffer.from('abc')))
})
