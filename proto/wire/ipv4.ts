/**
 * IPv4 (RFC 791). Addresses are unsigned 32-bit numbers on the hot path; `formatIPv4`/`parseIPv4Address`
 * convert to dotted quads. Options are accepted and skipped; fragments are reported so callers can drop them.
 */
import { WireError } from './errors.ts'
import { internetChecksum } from './checksum.ts'

export const IPV4_MIN_HEADER_LEN = 20
export const IPV4_VERSION = 4
export const IPPROTO_ICMP = 1
export const IPPROTO_TCP = 6
export const IPPROTO_UDP = 17
export const DEFAULT_TTL = 64

// Field offsets (RFC 791 3.1).
const OFF_VERSION_IHL = 0
const OFF_TOTAL_LENGTH = 2
const OFF_IDENT = 4
const OFF_FLAGS_FRAG = 6
const OFF_TTL = 8
const OFF_PROTOCOL = 9
const OFF_CHECKSUM = 10
const OFF_SRC = 12
const OFF_DST = 16

const FLAG_MF = 0x2000
const FRAG_OFFSET_MASK = 0x1fff
export const FLAG_DF = 0x4000

export interface IPv4Repr {
  src: number
  dst: number
  protocol: number
  ttl: number
  /** Payload length in bytes. */
  payloadLen: number
  ident: number
  dontFragment: boolean
}

export interface IPv4Parsed extends IPv4Repr {
  headerLen: number
  /** True when this datagram is a fragment (MF set or a non-zero offset). */
  isFragment: boolean
}

/** Reads the version nibble without other checks (demux between IPv4 and IPv6). */
export function ipVersion (buf: Uint8Array): number {
  return buf.length > 0 ? buf[0] >> 4 : 0
}

/**
 * Parses and validates an IPv4 header: version, IHL, total length against the buffer, and the
 * header checksum. `buf` may be longer than the datagram (padding after it is ignored).
 */
export function parseIPv4 (buf: Uint8Array): IPv4Parsed {
  if (buf.length < IPV4_MIN_HEADER_LEN) throw new WireError('ipv4_truncated', 'shorter than an IPv4 header')
  const vihl = buf[OFF_VERSION_IHL]
  if (vihl >> 4 !== IPV4_VERSION) throw new WireError('ipv4_version', 'not IPv4')
  const headerLen = (vihl & 0x0f) * 4
  if (headerLen < IPV4_MIN_HEADER_LEN) throw new WireError('ipv4_ihl', 'IHL below 5')
  const totalLen = (buf[OFF_TOTAL_LENGTH] << 8) | buf[OFF_TOTAL_LENGTH + 1]
  if (totalLen < headerLen || totalLen > buf.length) throw new WireError('ipv4_length', 'total length does not fit')
  if (internetChecksum(buf, 0, headerLen) !== 0) throw new WireError('ipv4_checksum', 'bad header checksum')
  const flagsFrag = (buf[OFF_FLAGS_FRAG] << 8) | buf[OFF_FLAGS_FRAG + 1]
  return {
    src: readU32(buf, OFF_SRC),
    dst: readU32(buf, OFF_DST),
    protocol: buf[OFF_PROTOCOL],
    ttl: buf[OFF_TTL],
    payloadLen: totalLen - headerLen,
    ident: (buf[OFF_IDENT] << 8) | buf[OFF_IDENT + 1],
    dontFragment: (flagsFrag & FLAG_DF) !== 0,
    headerLen,
    isFragment: (flagsFrag & FLAG_MF) !== 0 || (flagsFrag & FRAG_OFFSET_MASK) !== 0,
  }
}

/** Source address of a datagram that is at least IPV4_MIN_HEADER_LEN long (no other checks). */
export function ipv4Source (buf: Uint8Array): number {
  return readU32(buf, OFF_SRC)
}

/** Destination address of a datagram that is at least IPV4_MIN_HEADER_LEN long (no other checks). */
export function ipv4Destination (buf: Uint8Array): number {
  return readU32(buf, OFF_DST)
}

/** Writes a 20-byte header (no options) with its checksum at `offset`; returns IPV4_MIN_HEADER_LEN. */
export function emitIPv4 (repr: IPv4Repr, buf: Uint8Array, offset = 0): number {
  const totalLen = IPV4_MIN_HEADER_LEN + repr.payloadLen
  if (totalLen > 0xffff) throw new WireError('ipv4_too_long', 'datagram over 65535 bytes')
  if (buf.length - offset < IPV4_MIN_HEADER_LEN) throw new WireError('ipv4_buffer', 'buffer too small for header')
  buf[offset + OFF_VERSION_IHL] = (IPV4_VERSION << 4) | 5
  buf[offset + 1] = 0
  buf[offset + OFF_TOTAL_LENGTH] = totalLen >> 8
  buf[offset + OFF_TOTAL_LENGTH + 1] = totalLen & 0xff
  buf[offset + OFF_IDENT] = (repr.ident >> 8) & 0xff
  buf[offset + OFF_IDENT + 1] = repr.ident & 0xff
  const flags = repr.dontFragment ? FLAG_DF : 0
  buf[offset + OFF_FLAGS_FRAG] = flags >> 8
  buf[offset + OFF_FLAGS_FRAG + 1] = 0
  buf[offset + OFF_TTL] = repr.ttl
  buf[offset + OFF_PROTOCOL] = repr.protocol
  buf[offset + OFF_CHECKSUM] = 0
  buf[offset + OFF_CHECKSUM + 1] = 0
  writeU32(buf, offset + OFF_SRC, repr.src)
  writeU32(buf, offset + OFF_DST, repr.dst)
  const sum = internetChecksum(buf, offset, offset + IPV4_MIN_HEADER_LEN)
  buf[offset + OFF_CHECKSUM] = sum >> 8
  buf[offset + OFF_CHECKSUM + 1] = sum & 0xff
  return IPV4_MIN_HEADER_LEN
}

export function readU32 (buf: Uint8Array, off: number): number {
  return ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0
}

export function writeU32 (buf: Uint8Array, off: number, value: number): void {
  buf[off] = (value >>> 24) & 0xff
  buf[off + 1] = (value >>> 16) & 0xff
  buf[off + 2] = (value >>> 8) & 0xff
  buf[off + 3] = value & 0xff
}

/** "10.100.0.1" -> 0x0a640001. Throws WireError on anything that is not a dotted quad. */
export function parseIPv4Address (text: string): number {
  const parts = text.split('.')
  if (parts.length !== 4) throw new WireError('ipv4_address', `not an IPv4 address: ${text}`)
  let value = 0
  for (const part of parts) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(part)) throw new WireError('ipv4_address', `not an IPv4 address: ${text}`)
    const octet = Number(part)
    if (octet > 255) throw new WireError('ipv4_address', `not an IPv4 address: ${text}`)
    value = (value * 256) + octet
  }
  return value >>> 0
}

export function formatIPv4 (address: number): string {
  return `${address >>> 24}.${(address >>> 16) & 0xff}.${(address >>> 8) & 0xff}.${address & 0xff}`
}

export interface IPv4Prefix { network: number, prefixLength: number, mask: number }

/** "10.100.0.0/16" -> prefix; host bits are cleared. A bare address is a /32. */
export function parseIPv4Prefix (text: string): IPv4Prefix {
  const [addr, len, extra] = text.split('/')
  if (extra !== undefined) throw new WireError('ipv4_prefix', `not an IPv4 prefix: ${text}`)
  const prefixLength = len === undefined ? 32 : Number(len)
  if (len !== undefined && !/^[0-9]{1,2}$/.test(len)) throw new WireError('ipv4_prefix', `not an IPv4 prefix: ${text}`)
  if (prefixLength > 32) throw new WireError('ipv4_prefix', `prefix length over 32: ${text}`)
  const mask = prefixLength === 0 ? 0 : (0xffffffff << (32 - prefixLength)) >>> 0
  return { network: (parseIPv4Address(addr) & mask) >>> 0, prefixLength, mask }
}

export function prefixContains (prefix: IPv4Prefix, address: number): boolean {
  return ((address & prefix.mask) >>> 0) === prefix.network
}

/**
 * Whether any two of the prefixes overlap, in O(n log n): sorted by network (the wider first on a
 * tie), a prefix overlaps an earlier one exactly when the furthest end so far reaches its network.
 */
export function anyPrefixesOverlap (prefixes: readonly IPv4Prefix[]): boolean {
  const ranges = prefixes.map(p => ({ start: p.network >>> 0, end: (p.network >>> 0) + 2 ** (32 - p.prefixLength) - 1 }))
    .sort((a, b) => a.start - b.start || b.end - a.end)
  let reach = -1
  for (const r of ranges) {
    if (r.start <= reach) return true
    reach = Math.max(reach, r.end)
  }
  return false
}
