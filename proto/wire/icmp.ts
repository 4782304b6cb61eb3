/** ICMP echo request/reply (RFC 792). Other ICMP types are parsed only far enough to be counted. */
import { WireError } from './errors.ts'
import { internetChecksum } from './checksum.ts'

export const ICMP_HEADER_LEN = 8
export const ICMP_ECHO_REPLY = 0
export const ICMP_DEST_UNREACHABLE = 3
export const ICMP_ECHO_REQUEST = 8

const OFF_TYPE = 0
const OFF_CODE = 1
const OFF_CHECKSUM = 2
const OFF_IDENT = 4
const OFF_SEQ = 6

export interface IcmpEchoRepr {
  type: typeof ICMP_ECHO_REQUEST | typeof ICMP_ECHO_REPLY
  ident: number
  seq: number
  payload: Uint8Array
}

export interface IcmpHeader { type: number, code: number }

/** Validates length and checksum; returns type/code. */
export function parseIcmpHeader (buf: Uint8Array): IcmpHeader {
  if (buf.length < ICMP_HEADER_LEN) throw new WireError('icmp_truncated', 'shorter than an ICMP header')
  if (internetChecksum(buf) !== 0) throw new WireError('icmp_checksum', 'bad ICMP checksum')
  return { type: buf[OFF_TYPE], code: buf[OFF_CODE] }
}

/** Parses an echo request or reply (checksum verified). `payload` is a view into `buf`. */
export function parseIcmpEcho (buf: Uint8Array): IcmpEchoRepr {
  const { type, code } = parseIcmpHeader(buf)
  if ((type !== ICMP_ECHO_REQUEST && type !== ICMP_ECHO_REPLY) || code !== 0) {
    throw new WireError('icmp_not_echo', `ICMP type ${type} code ${code} is not an echo`)
  }
  return {
    type,
    ident: (buf[OFF_IDENT] << 8) | buf[OFF_IDENT + 1],
    seq: (buf[OFF_SEQ] << 8) | buf[OFF_SEQ + 1],
    payload: buf.subarray(ICMP_HEADER_LEN),
  }
}

export function icmpEchoLength (repr: IcmpEchoRepr): number {
  return ICMP_HEADER_LEN + repr.payload.length
}

/** Writes exactly icmpEchoLength(repr) bytes at `offset`, checksum included. */
export function emitIcmpEcho (repr: IcmpEchoRepr, buf: Uint8Array, offset = 0): number {
  const len = icmpEchoLength(repr)
  if (buf.length - offset < len) throw new WireError('icmp_buffer', 'buffer too small')
  buf[offset + OFF_TYPE] = repr.type
  buf[offset + OFF_CODE] = 0
  buf[offset + OFF_CHECKSUM] = 0
  buf[offset + OFF_CHECKSUM + 1] = 0
  buf[offset + OFF_IDENT] = (repr.ident >> 8) & 0xff
  buf[offset + OFF_IDENT + 1] = repr.ident & 0xff
  buf[offset + OFF_SEQ] = (repr.seq >> 8) & 0xff
  buf[offset + OFF_SEQ + 1] = repr.seq & 0xff
  buf.set(repr.payload, offset + ICMP_HEADER_LEN)
  const sum = internetChecksum(buf, offset, offset + len)
  buf[offset + OFF_CHECKSUM] = sum >> 8
  buf[offset + OFF_CHECKSUM + 1] = sum & 0xff
  return len
}
