/**
 * TCP segment header (RFC 9293 3.1) with the options a modern stack exchanges: MSS (RFC 9293
 * 3.7.1), window scale and timestamps (RFC 7323), SACK-permitted and SACK (RFC 2018).
 *
 * `parseTcp` reads a header from untrusted bytes (length checks first, optional checksum check)
 * into a plain value; `emitTcpHeader` writes a value into a caller's buffer (exactly
 * `tcpHeaderLength(repr)` bytes); `writeTcpChecksum` fills the checksum once the payload is in place,
 * so a stack can build IP header + TCP header + payload into one Buffer and sum it once.
 *
 * Option values use sentinels instead of optional properties so a parsed header has one shape:
 * `mss` 0 and `windowScale` -1 mean "absent", `sackBlocks` is null or a flat list of
 * [left, right) edge pairs.
 */
import { WireError } from './errors.ts'
import { finishChecksum, pseudoHeaderSum } from './checksum.ts'
import { IPPROTO_TCP } from './ipv4.ts'

export const TCP_HEADER_LEN = 20
export const TCP_MAX_HEADER_LEN = 60
export const TCP_MAX_OPTIONS_LEN = TCP_MAX_HEADER_LEN - TCP_HEADER_LEN

// Field offsets (RFC 9293 3.1).
const OFF_SRC_PORT = 0
const OFF_DST_PORT = 2
const OFF_SEQ = 4
const OFF_ACK = 8
const OFF_DATA_OFFSET = 12
const OFF_FLAGS = 13
const OFF_WINDOW = 14
export const TCP_OFF_CHECKSUM = 16
const OFF_URGENT = 18

// Control bits (RFC 9293 3.1; ECE/CWR from RFC 3168).
export const TCP_FIN = 0x01
export const TCP_SYN = 0x02
export const TCP_RST = 0x04
export const TCP_PSH = 0x08
export const TCP_ACK = 0x10
export const TCP_URG = 0x20
export const TCP_ECE = 0x40
export const TCP_CWR = 0x80

// Option kinds and their fixed lengths.
export const TCPOPT_EOL = 0
export const TCPOPT_NOP = 1
export const TCPOPT_MSS = 2
export const TCPOPT_WINDOW_SCALE = 3
export const TCPOPT_SACK_PERMITTED = 4
export const TCPOPT_SACK = 5
export const TCPOPT_TIMESTAMP = 8
const TCPOLEN_MSS = 4
const TCPOLEN_WINDOW_SCALE = 3
const TCPOLEN_SACK_PERMITTED = 2
const TCPOLEN_TIMESTAMP = 10
const TCPOLEN_SACK_BASE = 2
const TCPOLEN_SACK_PER_BLOCK = 8

/** RFC 7323 2.3: a shift count above 14 is used as 14. */
export const TCP_MAX_WINDOW_SCALE = 14
/** Four SACK blocks fill the option space; three fit beside a timestamp (RFC 2018 3). */
export const TCP_MAX_SACK_BLOCKS = 4

export interface TcpRepr {
  srcPort: number
  dstPort: number
  seq: number
  ack: number
  /** Control bits (TCP_SYN | TCP_ACK ...). */
  flags: number
  /** The raw 16-bit window field (unscaled). */
  window: number
  urgent: number
  /** MSS option value; 0 when absent. */
  mss: number
  /** Window scale shift; -1 when absent. */
  windowScale: number
  sackPermitted: boolean
  /** Timestamp option present (RFC 7323 3). */
  timestamp: boolean
  tsVal: number
  tsEcr: number
  /** SACK blocks as flat [left0, right0, left1, right1, ...]; null when absent. */
  sackBlocks: number[] | null
}

export interface TcpParsed extends TcpRepr {
  headerLen: number
  /** Offset of the payload in the buffer given to parseTcp. */
  payloadOffset: number
  payloadLen: number
}

/** A header with every option absent, for building segments field by field. */
export function emptyTcpRepr (): TcpRepr {
  return {
    srcPort: 0,
    dstPort: 0,
    seq: 0,
    ack: 0,
    flags: 0,
    window: 0,
    urgent: 0,
    mss: 0,
    windowScale: -1,
    sackPermitted: false,
    timestamp: false,
    tsVal: 0,
    tsEcr: 0,
    sackBlocks: null,
  }
}

export interface TcpChecksumContext {
  /** IPv4 source and destination (uint32) for the pseudo-header. */
  src: number
  dst: number
}

/**
 * Parses the TCP segment in buf[offset, offset + length). With `pseudo`, the checksum is verified
 * first (RFC 9293 3.1: a segment with a bad checksum is discarded). Throws WireError only.
 */
export function parseTcp (buf: Uint8Array, offset: number, length: number, pseudo?: TcpChecksumContext): TcpParsed {
  if (offset < 0 || length < 0 || offset + length > buf.length) throw new WireError('tcp_length', 'segment outside the buffer')
  if (length < TCP_HEADER_LEN) throw new WireError('tcp_truncated', 'shorter than a TCP header')
  const headerLen = (buf[offset + OFF_DATA_OFFSET] >> 4) * 4
  if (headerLen < TCP_HEADER_LEN) throw new WireError('tcp_data_offset', 'data offset below 5')
  if (headerLen > length) throw new WireError('tcp_data_offset', 'data offset past the segment')
  if (pseudo !== undefined && tcpChecksum(buf, offset, length, pseudo.src, pseudo.dst) !== 0) {
    throw new WireError('tcp_checksum', 'bad checksum')
  }
  const repr: TcpParsed = {
    srcPort: readU16(buf, offset + OFF_SRC_PORT),
    dstPort: readU16(buf, offset + OFF_DST_PORT),
    seq: readU32(buf, offset + OFF_SEQ),
    ack: readU32(buf, offset + OFF_ACK),
    flags: buf[offset + OFF_FLAGS],
    window: readU16(buf, offset + OFF_WINDOW),
    urgent: readU16(buf, offset + OFF_URGENT),
    mss: 0,
    windowScale: -1,
    sackPermitted: false,
    timestamp: false,
    tsVal: 0,
    tsEcr: 0,
    sackBlocks: null,
    headerLen,
    payloadOffset: offset + headerLen,
    payloadLen: length - headerLen,
  }
  if (headerLen > TCP_HEADER_LEN) parseOptions(buf, offset + TCP_HEADER_LEN, offset + headerLen, repr)
  return repr
}

/**
 * RFC 9293 3.1: an option list ends at EOL or the header end; a kind we do not know is skipped by
 * its length. A length below 2 or past the header cannot be skipped: the segment is rejected
 * (RFC 9293 3.1 MUST-7: be prepared for illegal option lengths without crashing). A known option
 * with the wrong length is ignored, as Linux does.
 */
function parseOptions (buf: Uint8Array, start: number, end: number, repr: TcpRepr): void {
  let i = start
  while (i < end) {
    const kind = buf[i]
    if (kind === TCPOPT_EOL) return
    if (kind === TCPOPT_NOP) {
      i++
      continue
    }
    if (i + 1 >= end) throw new WireError('tcp_option_length', 'option length byte missing')
    const len = buf[i + 1]
    if (len < 2 || i + len > end) throw new WireError('tcp_option_length', 'option length out of range')
    switch (kind) {
      case TCPOPT_MSS:
        if (len === TCPOLEN_MSS) repr.mss = readU16(buf, i + 2)
        break
      case TCPOPT_WINDOW_SCALE:
        if (len === TCPOLEN_WINDOW_SCALE) repr.windowScale = Math.min(buf[i + 2], TCP_MAX_WINDOW_SCALE)
        break
      case TCPOPT_SACK_PERMITTED:
        if (len === TCPOLEN_SACK_PERMITTED) repr.sackPermitted = true
        break
      case TCPOPT_TIMESTAMP:
        if (len === TCPOLEN_TIMESTAMP) {
          repr.timestamp = true
          repr.tsVal = readU32(buf, i + 2)
          repr.tsEcr = readU32(buf, i + 6)
        }
        break
      case TCPOPT_SACK: {
        const body = len - TCPOLEN_SACK_BASE
        if (body > 0 && body % TCPOLEN_SACK_PER_BLOCK === 0) {
          const blocks: number[] = []
          for (let b = i + 2; b < i + len; b += TCPOLEN_SACK_PER_BLOCK) blocks.push(readU32(buf, b), readU32(buf, b + 4))
          repr.sackBlocks = blocks
        }
        break
      }
    }
    i += len
  }
}

/** Bytes of options (padded to 4) that emitTcpHeader writes for `repr`. */
export function tcpOptionsLength (repr: TcpRepr): number {
  let len = 0
  if (repr.mss > 0) len += TCPOLEN_MSS
  // SACK-permitted rides in the two bytes before a timestamp, or takes a padded word alone.
  if (repr.timestamp) len += 2 + TCPOLEN_TIMESTAMP
  else if (repr.sackPermitted) len += 4
  if (repr.windowScale >= 0) len += 1 + TCPOLEN_WINDOW_SCALE
  if (repr.sackBlocks !== null && repr.sackBlocks.length > 0) len += 2 + TCPOLEN_SACK_BASE + (repr.sackBlocks.length / 2) * TCPOLEN_SACK_PER_BLOCK
  return len
}

export function tcpHeaderLength (repr: TcpRepr): number {
  return TCP_HEADER_LEN + tcpOptionsLength(repr)
}

/**
 * Writes the header and options at `offset` (checksum field zeroed) in the layout Linux uses:
 * MSS, SACK-permitted + timestamp (or NOP NOP timestamp), NOP window-scale, NOP NOP SACK.
 * Returns the header length.
 */
export function emitTcpHeader (repr: TcpRepr, buf: Uint8Array, offset: number): number {
  const headerLen = tcpHeaderLength(repr)
  if (headerLen > TCP_MAX_HEADER_LEN) throw new WireError('tcp_options_too_long', 'options exceed 40 bytes')
  if (offset < 0 || offset + headerLen > buf.length) throw new WireError('tcp_buffer', 'buffer too small for header')
  writeU16(buf, offset + OFF_SRC_PORT, repr.srcPort)
  writeU16(buf, offset + OFF_DST_PORT, repr.dstPort)
  writeU32(buf, offset + OFF_SEQ, repr.seq)
  writeU32(buf, offset + OFF_ACK, repr.ack)
  buf[offset + OFF_DATA_OFFSET] = (headerLen / 4) << 4
  buf[offset + OFF_FLAGS] = repr.flags & 0xff
  writeU16(buf, offset + OFF_WINDOW, repr.window)
  buf[offset + TCP_OFF_CHECKSUM] = 0
  buf[offset + TCP_OFF_CHECKSUM + 1] = 0
  writeU16(buf, offset + OFF_URGENT, repr.urgent)
  let i = offset + TCP_HEADER_LEN
  if (repr.mss > 0) {
    buf[i] = TCPOPT_MSS; buf[i + 1] = TCPOLEN_MSS; writeU16(buf, i + 2, repr.mss)
    i += TCPOLEN_MSS
  }
  if (repr.timestamp) {
    if (repr.sackPermitted) {
      buf[i] = TCPOPT_SACK_PERMITTED; buf[i + 1] = TCPOLEN_SACK_PERMITTED
    } else {
      buf[i] = TCPOPT_NOP; buf[i + 1] = TCPOPT_NOP
    }
    buf[i + 2] = TCPOPT_TIMESTAMP; buf[i + 3] = TCPOLEN_TIMESTAMP
    writeU32(buf, i + 4, repr.tsVal)
    writeU32(buf, i + 8, repr.tsEcr)
    i += 2 + TCPOLEN_TIMESTAMP
  } else if (repr.sackPermitted) {
    buf[i] = TCPOPT_NOP; buf[i + 1] = TCPOPT_NOP; buf[i + 2] = TCPOPT_SACK_PERMITTED; buf[i + 3] = TCPOLEN_SACK_PERMITTED
    i += 4
  }
  if (repr.windowScale >= 0) {
    buf[i] = TCPOPT_NOP; buf[i + 1] = TCPOPT_WINDOW_SCALE; buf[i + 2] = TCPOLEN_WINDOW_SCALE; buf[i + 3] = repr.windowScale
    i += 4
  }
  const blocks = repr.sackBlocks
  if (blocks !== null && blocks.length > 0) {
    if (blocks.length % 2 !== 0 || blocks.length / 2 > TCP_MAX_SACK_BLOCKS) throw new WireError('tcp_sack_blocks', 'bad SACK block list')
    buf[i] = TCPOPT_NOP; buf[i + 1] = TCPOPT_NOP
    buf[i + 2] = TCPOPT_SACK; buf[i + 3] = TCPOLEN_SACK_BASE + (blocks.length / 2) * TCPOLEN_SACK_PER_BLOCK
    i += 4
    for (let b = 0; b < blocks.length; b++, i += 4) writeU32(buf, i, blocks[b])
  }
  return headerLen
}

/**
 * Sum over the pseudo-header and buf[offset, offset + length), folded and complemented
 * (RFC 9293 3.1). A segment that carries a correct checksum yields 0.
 */
export function tcpChecksum (buf: Uint8Array, offset: number, length: number, src: number, dst: number): number {
  return finishChecksum(foldSum(pseudoHeaderSum(src, dst, IPPROTO_TCP, length) + sumBytes(buf, offset, offset + length)))
}

/** Computes and stores the checksum of the segment at buf[offset, offset + length). */
export function writeTcpChecksum (buf: Uint8Array, offset: number, length: number, src: number, dst: number): void {
  buf[offset + TCP_OFF_CHECKSUM] = 0
  buf[offset + TCP_OFF_CHECKSUM + 1] = 0
  const sum = tcpChecksum(buf, offset, length, src, dst)
  buf[offset + TCP_OFF_CHECKSUM] = sum >> 8
  buf[offset + TCP_OFF_CHECKSUM + 1] = sum & 0xff
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1
/** Below this many bytes the byte loop is as fast as setting up a word view. */
const WORD_PATH_MIN = 64
let cachedBuffer: ArrayBufferLike | null = null
let cachedWords: Uint32Array | null = null

/**
 * RFC 1071 sum of buf[start, end) as 16-bit big-endian words (not folded to 16 bits).
 * The 4-byte-aligned middle is read as native 32-bit words: on a little-endian host their sum is
 * the byte-swapped big-endian sum (RFC 1071 2(B) byte-order independence; a 32-bit word is the
 * sum of its two 16-bit halves modulo 0xffff). Unaligned ends use the byte loop.
 */
function sumBytes (buf: Uint8Array, start: number, end: number): number {
  if (!LITTLE_ENDIAN || end - start < WORD_PATH_MIN) return sumByteLoop(buf, start, end, false)
  const absolute = buf.byteOffset + start
  const a = start + ((4 - (absolute & 3)) & 3)
  const words = (end - a) >> 2
  const b = a + words * 4
  if (cachedBuffer !== buf.buffer) {
    cachedBuffer = buf.buffer
    cachedWords = new Uint32Array(buf.buffer, 0, buf.buffer.byteLength >> 2)
  }
  const view = cachedWords!
  const first = (buf.byteOffset + a) >> 2
  const last = first + words
  let middle = 0
  // At most 2^14 words per 64 KiB: the double stays exact (below 2^46).
  for (let i = first; i < last; i++) middle += view[i]
  middle = foldSum(middle)
  // Starting on an even offset of the segment, the little-endian sum must be swapped to big-endian.
  if (((a - start) & 1) === 0) middle = ((middle & 0xff) << 8) | (middle >> 8)
  return sumByteLoop(buf, start, a, false) + middle + sumByteLoop(buf, b, end, ((b - start) & 1) === 1)
}

/** Byte loop; `oddStart` means buf[start] is the low byte of a big-endian word. */
function sumByteLoop (buf: Uint8Array, start: number, end: number, oddStart: boolean): number {
  let sum = 0
  let i = start
  if (oddStart && i < end) sum += buf[i++]
  for (; i + 1 < end; i += 2) sum += (buf[i] << 8) | buf[i + 1]
  if (i < end) sum += buf[i] << 8
  return sum
}

/** Folds a non-negative integer below 2^53 to at most 17 bits keeping its value mod 0xffff. */
function foldSum (sum: number): number {
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000)
  return sum
}

function readU16 (buf: Uint8Array, off: number): number {
  return (buf[off] << 8) | buf[off + 1]
}

function readU32 (buf: Uint8Array, off: number): number {
  return ((buf[off] << 24) | (buf[off + 1] << 16) | (buf[off + 2] << 8) | buf[off + 3]) >>> 0
}

function writeU16 (buf: Uint8Array, off: number, value: number): void {
  buf[off] = (value >>> 8) & 0xff
  buf[off + 1] = value & 0xff
}

function writeU32 (buf: Uint8Array, off: number, value: number): void {
  buf[off] = (value >>> 24) & 0xff
  buf[off + 1] = (value >>> 16) & 0xff
  buf[off + 2] = (value >>> 8) & 0xff
  buf[off + 3] = value & 0xff
}
