import t from 'tap'
import {
  anyPrefixesOverlap,
  parseIPv4, emitIPv4, formatIPv4, parseIPv4Address, parseIPv4Prefix, prefixContains, IPPROTO_ICMP,
} from '../../../proto/wire/ipv4.ts'
import { WireError } from '../../../proto/wire/errors.ts'

// An ICMP echo request header as Linux ping emits it (10.100.0.2 -> 10.100.0.1, 84 bytes, DF); checksum computed independently.
const golden = Buffer.from('4500005443a740004001e2370a6400020a640001', 'hex')

t.test('parse golden header', async t => {
  const buf = Buffer.concat([golden, Buffer.alloc(64)])
  const ip = parseIPv4(buf)
  t.equal(formatIPv4(ip.src), '10.100.0.2')
  t.equal(formatIPv4(ip.dst), '10.100.0.1')
  t.equal(ip.protocol, IPPROTO_ICMP)
  t.equal(ip.payloadLen, 64)
  t.equal(ip.ttl, 64)
  t.equal(ip.dontFragment, true)
  t.equal(ip.isFragment, false)
})

t.test('emit reproduces the golden bytes', async t => {
  const buf = Buffer.alloc(20)
  emitIPv4({ src: parseIPv4Address('10.100.0.2'), dst: parseIPv4Address('10.100.0.1'), protocol: 1, ttl: 64, payloadLen: 64, ident: 0x43a7, dontFragment: true }, buf)
  t.equal(buf.toString('hex'), golden.toString('hex'))
})

t.test('every truncation and corruption is a WireError', async t => {
  const full = Buffer.concat([golden, Buffer.alloc(64)])
  for (let len = 0; len < full.length; len++) {
    t.throws(() => parseIPv4(full.subarray(0, len)), WireError, `length ${len}`)
  }
  const bad = Buffer.from(full); bad[10] ^= 1
  t.throws(() => parseIPv4(bad), { code: 'ipv4_checksum' })
  const v6 = Buffer.from(full); v6[0] = 0x65
  t.throws(() => parseIPv4(v6), { code: 'ipv4_version' })
})

t.test('addresses and prefixes', async t => {
  t.equal(parseIPv4Address('255.255.255.255'), 0xffffffff)
  for (const bad of ['1.2.3', '1.2.3.256', '01.2.3.4', 'a.b.c.d', '1.2.3.4.5', '']) {
    t.throws(() => parseIPv4Address(bad), WireError, bad)
  }
  const p = parseIPv4Prefix('10.100.0.7/16')
  t.equal(formatIPv4(p.network), '10.100.0.0')
  t.ok(prefixContains(p, parseIPv4Address('10.100.255.1')))
  t.notOk(prefixContains(p, parseIPv4Address('10.101.0.1')))
  t.ok(prefixContains(parseIPv4Prefix('0.0.0.0/0'), 12345))
  t.throws(() => parseIPv4Prefix('10.0.0.0/33'))
  t.throws(() => parseIPv4Prefix('10.0.0.0/x'))
})

t.test('anyPrefixesOverlap: containment in either order, adjacency, duplicates, whole space', async t => {
  const of = (...texts: string[]): boolean => anyPrefixesOverlap(texts.map(x => parseIPv4Prefix(x)))
  t.notOk(of(), 'none')
  t.notOk(of('10.0.0.1/32', '10.0.0.2/32', '10.0.0.0/32', '10.0.0.3/32'), 'distinct /32s')
  t.notOk(of('10.0.0.0/25', '10.0.0.128/25'), 'adjacent halves')
  t.ok(of('10.0.0.128/25', '10.0.0.0/24'), 'a wider prefix after the narrower one it contains')
  t.ok(of('10.0.0.0/24', '10.0.0.77/32'), 'a /32 inside an earlier /24')
  t.ok(of('10.0.0.5/32', '10.0.0.5/32'), 'the same prefix twice')
  t.ok(of('10.0.0.0/16', '10.0.9.0/24', '10.1.0.0/16', '10.0.200.1/32'), 'a later one inside the first of several')
  t.ok(of('0.0.0.0/0', '255.255.255.255/32'), 'the whole space and its last address')
  t.notOk(of('255.255.255.254/32', '255.255.255.255/32'), 'the top of the space')
})
