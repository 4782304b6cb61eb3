import t from 'tap'
import {
  parseTcp, emitTcpHeader, tcpHeaderLength, writeTcpChecksum, tcpChecksum, emptyTcpRepr, type TcpRepr,
  TCP_SYN, TCP_ACK, TCP_HEADER_LEN,
} from '../../../proto/wire/tcp.ts'
import { parseIPv4, parseIPv4Address } from '../../../proto/wire/ipv4.ts'
import { WireError } from '../../../proto/wire/errors.ts'

// A Linux 5.10 three-way handshake as printed by `tcpdump -s0 -X -nn` (10.0.0.4:33408 -> 10.0.0.3:9527),
// published in the article "TCP 连接的建立和关闭" (TCP connection setup and teardown) with its
// decoded lines: "Flags [S], seq 2741304532, win 64240, options [mss 1460,sackOK,TS val 3003747107
// ecr 0,nop,wscale 7]". The option bytes match the layouts of RFC 9293 3.2 (MSS: kind 2 len 4),
// RFC 2018 2 (SACK-permitted: kind 4 len 2), RFC 7323 3.2 (TS: kind 8 len 10) and 2.2 (WS: kind 3
// len 3). The SYN and ACK were captured on the receiving host, so their checksums were written by
// the sending Linux stack and check ours independently. The SYN-ACK was captured on its sender
// before checksum offload: its field holds the pseudo-header partial sum the NIC completes.
const linuxSyn = hex('4500003cd3a4400040065311 0a000004 0a000003' +
  '82802537 a364fcd4 00000000 a002faf0 b2ea0000 020405b4 0402080a b3098b23 00000000 01030307')
const linuxSynAck = hex('4500003c000040004006 26b6 0a000003 0a000004' +
  '25378280 46c1a121 a364fcd5 a012fe88 14350000 020405b4 0402080a 945d9653 b3098b23 01030307')
const linuxAck = hex('45000034d3a5400040065318 0a000004 0a000003' +
  '82802537 a364fcd5 46c1a122 801001f6 c80b0000 0101080a b3098b24 945d9653')

const client = parseIPv4Address('10.0.0.4')
const server = parseIPv4Address('10.0.0.3')

function hex (s: string): Buffer {
  return Buffer.from(s.replace(/\s+/g, ''), 'hex')
}

function segmentOf (datagram: Buffer): Buffer {
  const ip = parseIPv4(datagram)
  return datagram.subarray(ip.headerLen, ip.headerLen + ip.payloadLen)
}

function emitWithChecksum (repr: TcpRepr, payload: Buffer, src: number, dst: number): Buffer {
  const headerLen = tcpHeaderLength(repr)
  const out = Buffer.alloc(headerLen + payload.length)
  if (emitTcpHeader(repr, out, 0) !== headerLen) throw new Error('emitTcpHeader wrote an unexpected length')
  payload.copy(out, headerLen)
  writeTcpChecksum(out, 0, out.length, src, dst)
  return out
}

t.test('parse the Linux SYN', async t => {
  const seg = segmentOf(linuxSyn)
  const syn = parseTcp(seg, 0, seg.length, { src: client, dst: server })
  t.equal(syn.srcPort, 33408)
  t.equal(syn.dstPort, 9527)
  t.equal(syn.seq, 2741304532)
  t.equal(syn.ack, 0)
  t.equal(syn.flags, TCP_SYN)
  t.equal(syn.window, 64240)
  t.equal(syn.mss, 1460)
  t.equal(syn.sackPermitted, true)
  t.equal(syn.timestamp, true)
  t.equal(syn.tsVal, 3003747107)
  t.equal(syn.tsEcr, 0)
  t.equal(syn.windowScale, 7)
  t.equal(syn.sackBlocks, null)
  t.equal(syn.headerLen, 40)
  t.equal(syn.payloadLen, 0)
})

t.test('parse the Linux SYN-ACK and ACK', async t => {
  const sa = segmentOf(linuxSynAck)
  const synAck = parseTcp(sa, 0, sa.length)
  // CHECKSUM_PARTIAL: the captured field is the folded pseudo-header sum, not the final checksum.
  let partial = (server >>> 16) + (server & 0xffff) + (client >>> 16) + (client & 0xffff) + 6 + sa.length
  while (partial > 0xffff) partial = (partial & 0xffff) + (partial >>> 16)
  t.equal(sa.readUInt16BE(16), partial)
  t.equal(synAck.flags, TCP_SYN | TCP_ACK)
  t.equal(synAck.seq, 1187094817)
  t.equal(synAck.ack, 2741304533)
  t.equal(synAck.window, 65160)
  t.equal(synAck.tsVal, 2489161299)
  t.equal(synAck.tsEcr, 3003747107)
  const a = segmentOf(linuxAck)
  const ack = parseTcp(a, 0, a.length, { src: client, dst: server })
  t.equal(ack.flags, TCP_ACK)
  t.equal(ack.window, 502)
  t.equal(ack.mss, 0)
  t.equal(ack.windowScale, -1)
  t.equal(ack.sackPermitted, false)
  t.equal(ack.tsVal, 3003747108)
  t.equal(ack.tsEcr, 2489161299)
})

t.test('emit reproduces the Linux handshake byte for byte, checksum included', async t => {
  for (const [name, datagram, src, dst] of [
    ['SYN', linuxSyn, client, server], ['SYN-ACK', linuxSynAck, server, client], ['ACK', linuxAck, client, server],
  ] as const) {
    const seg = segmentOf(datagram)
    const offloaded = datagram === linuxSynAck
    const parsed = parseTcp(seg, 0, seg.length, offloaded ? undefined : { src, dst })
    const repr: TcpRepr = { ...emptyTcpRepr() }
    for (const key of Object.keys(repr) as (keyof TcpRepr)[]) (repr as unknown as Record<string, unknown>)[key] = parsed[key]
    const out = emitWithChecksum(repr, Buffer.alloc(0), src, dst)
    if (offloaded) {
      out.writeUInt16BE(seg.readUInt16BE(16), 16)
      t.equal(tcpChecksum(out, 0, out.length, src, dst) !== 0, true, 'the captured SYN-ACK field is not a final checksum')
    }
    t.equal(out.toString('hex'), seg.toString('hex'), name)
  }
})

t.test('round trip with SACK blocks and payload', async t => {
  const repr: TcpRepr = {
    ...emptyTcpRepr(),
    srcPort: 80,
    dstPort: 50000,
    seq: 0xfffffff0,
    ack: 12345,
    flags: TCP_ACK,
    window: 1024,
    timestamp: true,
    tsVal: 7,
    tsEcr: 9,
    sackBlocks: [100, 200, 300, 400, 0xfffffff0, 5],
  }
  const payload = Buffer.from('hello, tunnel')
  const out = emitWithChecksum(repr, payload, server, client)
  // 20 + NOP NOP TS(10) + NOP NOP SACK(2 + 3 * 8) = 60 bytes of header.
  t.equal(tcpHeaderLength(repr), 60)
  // RFC 2018 3: kind 5, length 2 + 8n, after two NOPs.
  t.equal(out.subarray(32, 36).toString('hex'), '0101051a')
  const back = parseTcp(out, 0, out.length, { src: server, dst: client })
  t.same(back.sackBlocks, repr.sackBlocks)
  t.equal(back.tsVal, 7)
  t.equal(back.tsEcr, 9)
  t.equal(back.seq, 0xfffffff0)
  t.equal(out.subarray(back.payloadOffset, back.payloadOffset + back.payloadLen).toString(), 'hello, tunnel')
})

t.test('SACK-permitted without timestamps, and no options at all', async t => {
  const repr: TcpRepr = { ...emptyTcpRepr(), flags: TCP_SYN, mss: 1380, sackPermitted: true, windowScale: 7 }
  const out = emitWithChecksum(repr, Buffer.alloc(0), client, server)
  t.equal(out.subarray(20).toString('hex'), '02040564' + '01010402' + '01030307')
  const back = parseTcp(out, 0, out.length, { src: client, dst: server })
  t.equal(back.mss, 1380)
  t.equal(back.sackPermitted, true)
  t.equal(back.timestamp, false)
  const bare = emitWithChecksum({ ...emptyTcpRepr(), flags: TCP_ACK }, Buffer.alloc(0), client, server)
  t.equal(bare.length, TCP_HEADER_LEN)
})

t.test('checksum: every flipped bit in header or payload is caught', async t => {
  const payload = Buffer.from('0123456789abcdefg') // odd length exercises the trailing byte
  const out = emitWithChecksum({ ...emptyTcpRepr(), flags: TCP_ACK, seq: 1, ack: 2, timestamp: true, tsVal: 3 }, payload, client, server)
  t.equal(tcpChecksum(out, 0, out.length, client, server), 0)
  for (let i = 0; i < out.length; i++) {
    const bad = Buffer.from(out)
    bad[i] ^= 0x10
    t.throws(() => parseTcp(bad, 0, bad.length, { src: client, dst: server }), { code: 'tcp_checksum' }, `byte ${i}`)
  }
  // The pseudo-header is covered too (RFC 9293 3.1).
  t.throws(() => parseTcp(out, 0, out.length, { src: client, dst: server + 1 }), { code: 'tcp_checksum' })
  // Without a pseudo-header context the checksum is not checked.
  const bad = Buffer.from(out); bad[out.length - 1] ^= 1
  t.equal(parseTcp(bad, 0, bad.length).payloadLen, payload.length)
})

t.test('checksum of a large segment matches the 16-bit reference sum', async t => {
  const payload = Buffer.alloc(9001)
  for (let i = 0; i < payload.length; i++) payload[i] = (i * 131 + 7) & 0xff
  const out = emitWithChecksum({ ...emptyTcpRepr(), flags: TCP_ACK }, payload, client, server)
  // Reference: RFC 1071 word-by-word sum with end-around carry.
  let sum = (client >>> 16) + (client & 0xffff) + (server >>> 16) + (server & 0xffff) + 6 + out.length
  for (let i = 0; i < out.length; i += 2) sum += (out[i] << 8) | (i + 1 < out.length ? out[i + 1] : 0)
  while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000)
  t.equal(sum, 0xffff)
})

t.test('every wrong length is rejected', async t => {
  const seg = segmentOf(linuxSyn)
  for (let len = 0; len < seg.length; len++) {
    t.throws(() => parseTcp(seg, 0, len), WireError, `length ${len}`)
  }
  for (let doff = 0; doff < 5; doff++) {
    const bad = Buffer.from(seg); bad[12] = doff << 4
    t.throws(() => parseTcp(bad, 0, bad.length), { code: 'tcp_data_offset' }, `data offset ${doff}`)
  }
  const tooLong = Buffer.from(seg); tooLong[12] = 11 << 4
  t.throws(() => parseTcp(tooLong, 0, tooLong.length), { code: 'tcp_data_offset' })
  t.throws(() => parseTcp(seg, 4, seg.length), { code: 'tcp_length' })
  t.throws(() => parseTcp(seg, -1, 20), { code: 'tcp_length' })
})

t.test('truncated and garbage options', async t => {
  const withOptions = (opts: number[]): Buffer => {
    const padded = [...opts]
    while (padded.length % 4 !== 0) padded.push(0)
    const b = Buffer.alloc(20 + padded.length)
    b[12] = ((20 + padded.length) / 4) << 4
    Buffer.from(padded).copy(b, 20)
    return b
  }
  // A zero or one length cannot be skipped; a length past the header cannot either.
  t.throws(() => parseTcp(...args(withOptions([99, 0, 1, 1]))), { code: 'tcp_option_length' })
  t.throws(() => parseTcp(...args(withOptions([99, 1, 1, 1]))), { code: 'tcp_option_length' })
  t.throws(() => parseTcp(...args(withOptions([2, 8, 5, 0xb4]))), { code: 'tcp_option_length' })
  t.throws(() => parseTcp(...args(withOptions([1, 1, 1, 8]))), { code: 'tcp_option_length' })
  // Unknown kinds are skipped by their length; known kinds with the wrong length are ignored.
  const skipped = parseTcp(...args(withOptions([99, 4, 0xff, 0xff, 2, 4, 5, 0x64])))
  t.equal(skipped.mss, 1380)
  const wrongMss = parseTcp(...args(withOptions([2, 3, 5, 1, 1, 1, 1, 1])))
  t.equal(wrongMss.mss, 0)
  const wrongTs = parseTcp(...args(withOptions([8, 6, 0, 0, 0, 1])))
  t.equal(wrongTs.timestamp, false)
  const wrongSack = parseTcp(...args(withOptions([5, 6, 0, 0, 0, 1])))
  t.equal(wrongSack.sackBlocks, null)
  // RFC 7323 2.3: a shift above 14 is used as 14.
  t.equal(parseTcp(...args(withOptions([3, 3, 30, 0]))).windowScale, 14)
  // EOL ends the list even if garbage follows.
  t.equal(parseTcp(...args(withOptions([0, 99, 0, 0]))).mss, 0)
  // Random garbage never throws anything but a WireError.
  let state = 12345
  for (let n = 0; n < 2000; n++) {
    const len = 1 + (n % 40)
    const opts: number[] = []
    for (let i = 0; i < len; i++) {
      state = (Math.imul(state, 1103515245) + 12345) >>> 0
      opts.push(state >>> 24)
    }
    try {
      parseTcp(...args(withOptions(opts)))
    } catch (err) {
      if (!(err instanceof WireError)) t.fail(`non-WireError for ${Buffer.from(opts).toString('hex')}`)
    }
  }
})

t.test('emit refuses what cannot be encoded', async t => {
  const buf = Buffer.alloc(60)
  t.throws(() => emitTcpHeader({ ...emptyTcpRepr(), timestamp: true, sackBlocks: [1, 2, 3, 4, 5, 6, 7, 8] }, buf, 0), { code: 'tcp_options_too_long' })
  t.throws(() => emitTcpHeader({ ...emptyTcpRepr(), sackBlocks: [1, 2, 3] }, buf, 0), { code: 'tcp_sack_blocks' })
  t.throws(() => emitTcpHeader({ ...emptyTcpRepr(), mss: 1380 }, Buffer.alloc(23), 0), { code: 'tcp_buffer' })
})

function args (b: Buffer): [Buffer, number, number] {
  return [b, 0, b.length]
}

t.test('checksum is the same at every alignment and length (word path vs byte path)', async t => {
  const backing = Buffer.alloc(4096 + 16)
  for (let i = 0; i < backing.length; i++) backing[i] = (i * 197 + 13) & 0xff
  // Reference: RFC 1071 word-by-word sum over the pseudo-header and the bytes.
  const reference = (seg: Uint8Array): number => {
    let sum = (client >>> 16) + (client & 0xffff) + (server >>> 16) + (server & 0xffff) + 6 + seg.length
    for (let i = 0; i < seg.length; i += 2) sum += (seg[i] << 8) | (i + 1 < seg.length ? seg[i + 1] : 0)
    while (sum > 0xffff) sum = (sum & 0xffff) + Math.floor(sum / 0x10000)
    return (~sum) & 0xffff
  }
  let mismatches = 0
  for (let offset = 0; offset < 8; offset++) {
    for (const length of [0, 1, 2, 3, 63, 64, 65, 66, 67, 100, 1399, 1400, 1401, 4000]) {
      const view = new Uint8Array(backing.buffer, backing.byteOffset + offset, length)
      if (tcpChecksum(view, 0, length, client, server) !== reference(view)) mismatches++
      // The same bytes inside a larger buffer, at an odd start within it.
      if (offset + 1 + length <= backing.length && tcpChecksum(backing, offset + 1, length, client, server) !== reference(backing.subarray(offset + 1, offset + 1 + length))) mismatches++
    }
  }
  t.equal(mismatches, 0)
})
