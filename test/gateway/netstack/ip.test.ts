import t from 'tap'
import { IpLayer } from '../../../gateway/netstack/ip.ts'
import { Metrics } from '../../../gateway/metrics.ts'
import { parseIPv4, parseIPv4Address, emitIPv4, IPPROTO_ICMP, IPPROTO_TCP, type IPv4Parsed } from '../../../proto/wire/ipv4.ts'

// A Linux `ping -c1 -s 16` echo request 10.100.0.2 -> 10.100.0.1 (id 0x1c2b, seq 1). The IPv4 header
// is rebuilt by emitIPv4; the ICMP checksum (0xa393) was computed with a separate RFC 1071 sum (Python).
const ICMP_REQUEST = Buffer.from('0800a3931c2b0001' + '000102030405060708090a0b0c0d0e0f', 'hex')

const GW = parseIPv4Address('10.100.0.1')
const PEER = parseIPv4Address('10.100.0.2')

function datagram (payload: Buffer, opts: { src?: number, dst?: number, protocol?: number, fragment?: boolean } = {}): Buffer {
  const buf = Buffer.alloc(20 + payload.length)
  emitIPv4({ src: opts.src ?? PEER, dst: opts.dst ?? GW, protocol: opts.protocol ?? IPPROTO_ICMP, ttl: 64, payloadLen: payload.length, ident: 7, dontFragment: !opts.fragment }, buf)
  if (opts.fragment === true) {
    buf[6] = 0x20 // MF
    buf.writeUInt16BE(0, 10)
    let sum = 0
    for (let i = 0; i < 20; i += 2) sum += buf.readUInt16BE(i)
    while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
    buf.writeUInt16BE(~sum & 0xffff, 10)
  }
  payload.copy(buf, 20)
  return buf
}

/** RFC 1071 checksum written independently of proto/wire/checksum.ts. */
function onesComplementSum (buf: Buffer): number {
  let sum = 0
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i)
  if (buf.length % 2 === 1) sum += buf[buf.length - 1] << 8
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return sum
}

function setup (): { ip: IpLayer, sent: Buffer[], metrics: Metrics } {
  const metrics = new Metrics()
  const sent: Buffer[] = []
  const ip = new IpLayer({ address: GW, metrics, send: d => { sent.push(Buffer.from(d)) } })
  return { ip, sent, metrics }
}

t.test('echo request to the gateway: a correct echo reply', async t => {
  const { ip, sent, metrics } = setup()
  ip.input(datagram(ICMP_REQUEST), 0)
  t.equal(sent.length, 1)
  const reply = sent[0]
  const header = parseIPv4(reply)
  t.equal(header.src, GW, 'from the gateway')
  t.equal(header.dst, PEER, 'to the requester')
  t.equal(header.protocol, IPPROTO_ICMP)
  t.equal(header.payloadLen, ICMP_REQUEST.length)
  t.equal(onesComplementSum(reply.subarray(0, 20)), 0xffff, 'IP header checksum verifies')
  const icmp = reply.subarray(20)
  t.equal(onesComplementSum(icmp), 0xffff, 'ICMP checksum verifies')
  t.equal(icmp[0], 0, 'type echo reply')
  t.equal(icmp.readUInt16BE(2), 0xa393 + 0x0800, 'checksum = request checksum + 0x0800 (RFC 1624)')
  t.same(icmp.subarray(4), ICMP_REQUEST.subarray(4), 'identifier, sequence and data echoed')
  t.equal(metrics.snapshot().ip_packets.icmp_echo_reply, 1)
})

t.test('not for us: dropped and counted, never forwarded', async t => {
  const { ip, sent, metrics } = setup()
  ip.input(datagram(ICMP_REQUEST, { dst: parseIPv4Address('10.100.0.3') }), 0)
  ip.input(datagram(ICMP_REQUEST, { dst: 0xffffffff }), 0)
  t.equal(sent.length, 0)
  t.equal(metrics.snapshot().ip_dropped.not_for_us, 2)
})

t.test('fragments are dropped and counted', async t => {
  const { ip, sent, metrics } = setup()
  ip.input(datagram(ICMP_REQUEST, { fragment: true }), 0)
  t.equal(sent.length, 0)
  t.equal(metrics.snapshot().ip_dropped.fragment, 1)
})

t.test('malformed datagrams are counted by codec reason', async t => {
  const { ip, metrics } = setup()
  const bad = datagram(ICMP_REQUEST)
  bad[10] ^= 1
  ip.input(bad, 0)
  ip.input(Buffer.alloc(5), 0)
  const badIcmp = datagram(ICMP_REQUEST)
  badIcmp[30] ^= 1
  ip.input(badIcmp, 0)
  const d = metrics.snapshot().ip_dropped
  t.equal(d.ipv4_checksum, 1)
  t.equal(d.ipv4_truncated, 1)
  t.equal(d.icmp_checksum, 1)
})

t.test('registered protocol handlers get exact datagrams; others are counted', async t => {
  const { ip, metrics } = setup()
  const seen: Array<{ ip: IPv4Parsed, len: number, now: number }> = []
  ip.register(IPPROTO_TCP, { input (h, d, now) { seen.push({ ip: h, len: d.length, now }) } })
  t.throws(() => { ip.register(IPPROTO_TCP, { input () {} }) }, 'one handler per protocol')
  const tcp = datagram(Buffer.alloc(20), { protocol: IPPROTO_TCP })
  ip.input(Buffer.concat([tcp, Buffer.alloc(12)]), 42) // trailing padding as WireGuard leaves it
  t.equal(seen.length, 1)
  t.equal(seen[0].len, 40, 'padding removed')
  t.equal(seen[0].now, 42)
  t.equal(seen[0].ip.src, PEER)
  ip.input(datagram(Buffer.alloc(8), { protocol: 17 }), 0)
  t.equal(metrics.snapshot().ip_dropped.no_handler, 1)
  const reply = Buffer.from('0000ffff00000000', 'hex') // echo reply: not ours to answer
  ip.input(datagram(reply), 0)
  t.equal(metrics.snapshot().ip_dropped.icmp_unhandled, 1)
})

t.test('a throwing handler is counted, not propagated', async t => {
  const { ip, metrics } = setup()
  ip.register(IPPROTO_TCP, { input () { throw new Error('bug') } })
  t.doesNotThrow(() => { ip.input(datagram(Buffer.alloc(20), { protocol: IPPROTO_TCP }), 0) })
  t.equal(metrics.snapshot().ip_dropped.internal_error, 1)
})

t.test('send passes datagrams to the device and counts them', async t => {
  const { ip, sent, metrics } = setup()
  const d = datagram(Buffer.alloc(4), { src: GW, dst: PEER })
  ip.send(d)
  t.same(sent, [d])
  t.equal(metrics.snapshot().ip_packets.out, 1)
})
