/**
 * Builds one outgoing datagram: IPv4 header + TCP header + payload in a single Buffer, with the
 * payload copied once from the send buffer and the TCP checksum computed once over the result.
 */
import { emitIPv4, IPPROTO_TCP, DEFAULT_TTL } from '../../../proto/wire/ipv4.ts'
import { emitTcpHeader, tcpHeaderLength, writeTcpChecksum, TCP_SYN, TCP_ACK, TCP_RST, TCP_FIN, type TcpRepr, type TcpParsed, emptyTcpRepr } from '../../../proto/wire/tcp.ts'
import { IPV4_HEADER_LEN } from './constants.ts'
import type { SendBuffer } from './send-buffer.ts'

export function buildDatagram (
  src: number, dst: number, ident: number, repr: TcpRepr,
  payload: SendBuffer | null, payloadOffset: number, payloadLen: number,
): Buffer {
  const headerLen = tcpHeaderLength(repr)
  const segmentLen = headerLen + payloadLen
  const buf = Buffer.allocUnsafe(IPV4_HEADER_LEN + segmentLen)
  emitIPv4({ src, dst, protocol: IPPROTO_TCP, ttl: DEFAULT_TTL, payloadLen: segmentLen, ident, dontFragment: true }, buf, 0)
  emitTcpHeader(repr, buf, IPV4_HEADER_LEN)
  if (payloadLen > 0 && payload !== null) payload.copyOut(payloadOffset, payloadLen, buf, IPV4_HEADER_LEN + headerLen)
  writeTcpChecksum(buf, IPV4_HEADER_LEN, segmentLen, src, dst)
  return buf
}

const rstRepr = emptyTcpRepr()

/**
 * The reset for a segment that matches no connection (RFC 9293 3.10.7.1): with ACK set,
 * <SEQ=SEG.ACK><CTL=RST>; otherwise <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>.
 * The caller never answers an RST with an RST.
 */
export function buildResetFor (seg: TcpParsed, src: number, dst: number, ident: number): Buffer {
  const r = rstRepr
  r.srcPort = seg.dstPort
  r.dstPort = seg.srcPort
  if ((seg.flags & TCP_ACK) !== 0) {
    r.seq = seg.ack
    r.ack = 0
    r.flags = TCP_RST
  } else {
    const segLen = seg.payloadLen + ((seg.flags & TCP_SYN) !== 0 ? 1 : 0) + ((seg.flags & TCP_FIN) !== 0 ? 1 : 0)
    r.seq = 0
    r.ack = (seg.seq + segLen) >>> 0
    r.flags = TCP_RST | TCP_ACK
  }
  r.window = 0
  return buildDatagram(src, dst, ident, r, null, 0, 0)
}
