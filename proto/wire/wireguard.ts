/**
 * WireGuard messages (paper 5.4.2, 5.4.3, 5.4.6, 5.4.7; wireguard-go device/noise-protocol.go):
 * a type byte, three reserved zero bytes, then little-endian fields. Handshake messages have exact
 * sizes; a transport message is a 16-byte header and at least a 16-byte tag. Parsers copy handshake
 * fields (rare, small) and never copy transport payloads.
 */
import { WireError } from './errors.ts'

export const MESSAGE_INITIATION = 1
export const MESSAGE_RESPONSE = 2
export const MESSAGE_COOKIE_REPLY = 3
export const MESSAGE_TRANSPORT = 4

export const MESSAGE_INITIATION_SIZE = 148
export const MESSAGE_RESPONSE_SIZE = 92
export const MESSAGE_COOKIE_REPLY_SIZE = 64
export const MESSAGE_TRANSPORT_HEADER_SIZE = 16
export const MESSAGE_TRANSPORT_MIN_SIZE = 32
/** Largest datagram a transport message can be (a UDP payload). */
export const MESSAGE_TRANSPORT_MAX_SIZE = 65535

const KEY_LEN = 32
const TAG_LEN = 16
const MAC_LEN = 16
const NONCE_LEN = 24
const TIMESTAMP_LEN = 12

// The layout, one place for the codec and the data path (wireguard-go's MessageTransportOffset*).
/** Every message: type (1 byte), three reserved zero bytes. */
export const MESSAGE_TYPE_OFFSET = 0

// Initiation (paper 5.4.2).
export const MESSAGE_INITIATION_SENDER_OFFSET = 4
export const MESSAGE_INITIATION_EPHEMERAL_OFFSET = 8
export const MESSAGE_INITIATION_STATIC_OFFSET = MESSAGE_INITIATION_EPHEMERAL_OFFSET + KEY_LEN // 40
export const MESSAGE_INITIATION_TIMESTAMP_OFFSET = MESSAGE_INITIATION_STATIC_OFFSET + KEY_LEN + TAG_LEN // 88
export const MESSAGE_INITIATION_MAC1_OFFSET = MESSAGE_INITIATION_TIMESTAMP_OFFSET + TIMESTAMP_LEN + TAG_LEN // 116
export const MESSAGE_INITIATION_MAC2_OFFSET = MESSAGE_INITIATION_MAC1_OFFSET + MAC_LEN // 132

// Response (paper 5.4.3).
export const MESSAGE_RESPONSE_SENDER_OFFSET = 4
export const MESSAGE_RESPONSE_RECEIVER_OFFSET = 8
export const MESSAGE_RESPONSE_EPHEMERAL_OFFSET = 12
export const MESSAGE_RESPONSE_EMPTY_OFFSET = MESSAGE_RESPONSE_EPHEMERAL_OFFSET + KEY_LEN // 44
export const MESSAGE_RESPONSE_MAC1_OFFSET = MESSAGE_RESPONSE_EMPTY_OFFSET + TAG_LEN // 60
export const MESSAGE_RESPONSE_MAC2_OFFSET = MESSAGE_RESPONSE_MAC1_OFFSET + MAC_LEN // 76

/** The sender index of a handshake message: the same offset in an initiation and a response. */
export const MESSAGE_HANDSHAKE_SENDER_OFFSET = MESSAGE_INITIATION_SENDER_OFFSET

// Cookie reply (paper 5.4.7).
export const MESSAGE_COOKIE_REPLY_RECEIVER_OFFSET = 4
export const MESSAGE_COOKIE_REPLY_NONCE_OFFSET = 8
export const MESSAGE_COOKIE_REPLY_COOKIE_OFFSET = MESSAGE_COOKIE_REPLY_NONCE_OFFSET + NONCE_LEN // 32

// Transport (paper 5.4.6).
export const MESSAGE_TRANSPORT_RECEIVER_OFFSET = 4
export const MESSAGE_TRANSPORT_COUNTER_OFFSET = 8
/** The encrypted packet and its tag start right after the header. */
export const MESSAGE_TRANSPORT_CONTENT_OFFSET = MESSAGE_TRANSPORT_HEADER_SIZE

export interface InitiationRepr {
  senderIndex: number
  ephemeral: Buffer
  encryptedStatic: Buffer
  encryptedTimestamp: Buffer
  mac1: Buffer
  mac2: Buffer
}

export interface ResponseRepr {
  senderIndex: number
  receiverIndex: number
  ephemeral: Buffer
  encryptedNothing: Buffer
  mac1: Buffer
  mac2: Buffer
}

export interface CookieReplyRepr {
  receiverIndex: number
  /** 24 bytes */
  nonce: Buffer
  /** 32 bytes: the 16-byte cookie and its tag */
  encryptedCookie: Buffer
}

export interface TransportHeader {
  receiverIndex: number
  counter: bigint
}

function readU32LE (buf: Uint8Array, off: number): number {
  return (buf[off] | (buf[off + 1] << 8) | (buf[off + 2] << 16) | (buf[off + 3] << 24)) >>> 0
}

function writeU32LE (buf: Uint8Array, off: number, value: number): void {
  buf[off] = value & 0xff
  buf[off + 1] = (value >>> 8) & 0xff
  buf[off + 2] = (value >>> 16) & 0xff
  buf[off + 3] = (value >>> 24) & 0xff
}

function copyField (buf: Uint8Array, off: number, len: number): Buffer {
  return Buffer.from(buf.subarray(off, off + len))
}

/**
 * Returns the message type after checking the three reserved bytes (paper 5.4: must be zero) and
 * the size that type must have. Throws WireError `wg_short`, `wg_type`, `wg_reserved` or `wg_size`.
 */
export function messageType (datagram: Uint8Array): number {
  const len = datagram.length
  if (len < 4) throw new WireError('wg_short', 'shorter than a WireGuard message header')
  const type = datagram[MESSAGE_TYPE_OFFSET]
  if (datagram[1] !== 0 || datagram[2] !== 0 || datagram[3] !== 0) throw new WireError('wg_reserved', 'reserved bytes are not zero')
  switch (type) {
    case MESSAGE_INITIATION:
      if (len !== MESSAGE_INITIATION_SIZE) throw new WireError('wg_size', 'initiation is not 148 bytes')
      break
    case MESSAGE_RESPONSE:
      if (len !== MESSAGE_RESPONSE_SIZE) throw new WireError('wg_size', 'response is not 92 bytes')
      break
    case MESSAGE_COOKIE_REPLY:
      if (len !== MESSAGE_COOKIE_REPLY_SIZE) throw new WireError('wg_size', 'cookie reply is not 64 bytes')
      break
    case MESSAGE_TRANSPORT:
      if (len < MESSAGE_TRANSPORT_MIN_SIZE || len > MESSAGE_TRANSPORT_MAX_SIZE) throw new WireError('wg_size', 'transport message shorter than header and tag')
      break
    default:
      throw new WireError('wg_type', `unknown message type ${type}`)
  }
  return type
}

function expectType (buf: Uint8Array, type: number): void {
  if (messageType(buf) !== type) throw new WireError('wg_type', `not a message of type ${type}`)
}

function checkField (value: Uint8Array, len: number, name: string): void {
  if (value.length !== len) throw new WireError('wg_field', `${name} is not ${len} bytes`)
}

function checkBuffer (buf: Uint8Array, offset: number, len: number): void {
  if (offset < 0 || buf.length - offset < len) throw new WireError('wg_buffer', 'output buffer too small')
}

function writeHeader (buf: Uint8Array, offset: number, type: number): void {
  buf[offset] = type
  buf[offset + 1] = 0
  buf[offset + 2] = 0
  buf[offset + 3] = 0
}

/**
 * A handshake message's fields after the header, in wire order: each at its offset, either a
 * little-endian u32 index or a byte string of a fixed length. One table per message type serves
 * both parse and emit.
 */
type Layout<R> = ReadonlyArray<readonly [name: keyof R & string, offset: number, len: number | 'u32']>

const INITIATION_LAYOUT: Layout<InitiationRepr> = [
  ['senderIndex', MESSAGE_INITIATION_SENDER_OFFSET, 'u32'],
  ['ephemeral', MESSAGE_INITIATION_EPHEMERAL_OFFSET, KEY_LEN],
  ['encryptedStatic', MESSAGE_INITIATION_STATIC_OFFSET, KEY_LEN + TAG_LEN],
  ['encryptedTimestamp', MESSAGE_INITIATION_TIMESTAMP_OFFSET, TIMESTAMP_LEN + TAG_LEN],
  ['mac1', MESSAGE_INITIATION_MAC1_OFFSET, MAC_LEN],
  ['mac2', MESSAGE_INITIATION_MAC2_OFFSET, MAC_LEN],
]

const RESPONSE_LAYOUT: Layout<ResponseRepr> = [
  ['senderIndex', MESSAGE_RESPONSE_SENDER_OFFSET, 'u32'],
  ['receiverIndex', MESSAGE_RESPONSE_RECEIVER_OFFSET, 'u32'],
  ['ephemeral', MESSAGE_RESPONSE_EPHEMERAL_OFFSET, KEY_LEN],
  ['encryptedNothing', MESSAGE_RESPONSE_EMPTY_OFFSET, TAG_LEN],
  ['mac1', MESSAGE_RESPONSE_MAC1_OFFSET, MAC_LEN],
  ['mac2', MESSAGE_RESPONSE_MAC2_OFFSET, MAC_LEN],
]

const COOKIE_REPLY_LAYOUT: Layout<CookieReplyRepr> = [
  ['receiverIndex', MESSAGE_COOKIE_REPLY_RECEIVER_OFFSET, 'u32'],
  ['nonce', MESSAGE_COOKIE_REPLY_NONCE_OFFSET, NONCE_LEN],
  ['encryptedCookie', MESSAGE_COOKIE_REPLY_COOKIE_OFFSET, MAC_LEN + TAG_LEN],
]

function parseMessage<R> (buf: Uint8Array, type: number, layout: Layout<R>): R {
  expectType(buf, type)
  const repr: Record<string, number | Buffer> = {}
  for (const [name, offset, len] of layout) repr[name] = len === 'u32' ? readU32LE(buf, offset) : copyField(buf, offset, len)
  return repr as R
}

/** Checks every byte-string field's length first, then writes exactly `size` bytes at buf[offset..]. */
function emitMessage<R> (repr: R, buf: Uint8Array, offset: number, type: number, size: number, layout: Layout<R>): number {
  checkBuffer(buf, offset, size)
  for (const [name, , len] of layout) if (len !== 'u32') checkField(repr[name] as Uint8Array, len, name)
  writeHeader(buf, offset, type)
  for (const [name, at, len] of layout) {
    if (len === 'u32') writeU32LE(buf, offset + at, repr[name] as number)
    else buf.set(repr[name] as Uint8Array, offset + at)
  }
  return size
}

export function parseInitiation (buf: Uint8Array): InitiationRepr {
  return parseMessage(buf, MESSAGE_INITIATION, INITIATION_LAYOUT)
}

/** Writes exactly MESSAGE_INITIATION_SIZE bytes at buf[offset..]; returns that length. */
export function emitInitiation (repr: InitiationRepr, buf: Uint8Array, offset = 0): number {
  return emitMessage(repr, buf, offset, MESSAGE_INITIATION, MESSAGE_INITIATION_SIZE, INITIATION_LAYOUT)
}

export function parseResponse (buf: Uint8Array): ResponseRepr {
  return parseMessage(buf, MESSAGE_RESPONSE, RESPONSE_LAYOUT)
}

/** Writes exactly MESSAGE_RESPONSE_SIZE bytes at buf[offset..]; returns that length. */
export function emitResponse (repr: ResponseRepr, buf: Uint8Array, offset = 0): number {
  return emitMessage(repr, buf, offset, MESSAGE_RESPONSE, MESSAGE_RESPONSE_SIZE, RESPONSE_LAYOUT)
}

export function parseCookieReply (buf: Uint8Array): CookieReplyRepr {
  return parseMessage(buf, MESSAGE_COOKIE_REPLY, COOKIE_REPLY_LAYOUT)
}

/** Writes exactly MESSAGE_COOKIE_REPLY_SIZE bytes at buf[offset..]; returns that length. */
export function emitCookieReply (repr: CookieReplyRepr, buf: Uint8Array, offset = 0): number {
  return emitMessage(repr, buf, offset, MESSAGE_COOKIE_REPLY, MESSAGE_COOKIE_REPLY_SIZE, COOKIE_REPLY_LAYOUT)
}

/** Reads the transport header; the payload is datagram.subarray(MESSAGE_TRANSPORT_HEADER_SIZE), never copied. */
export function parseTransportHeader (datagram: Uint8Array): TransportHeader {
  expectType(datagram, MESSAGE_TRANSPORT)
  const lo = readU32LE(datagram, MESSAGE_TRANSPORT_COUNTER_OFFSET)
  const hi = readU32LE(datagram, MESSAGE_TRANSPORT_COUNTER_OFFSET + 4)
  return {
    receiverIndex: readU32LE(datagram, MESSAGE_TRANSPORT_RECEIVER_OFFSET),
    counter: hi === 0 ? BigInt(lo) : (BigInt(hi) << 32n) | BigInt(lo),
  }
}

/** Writes the 16-byte transport header at buf[offset..]; returns 16. */
export function emitTransportHeader (header: TransportHeader, buf: Uint8Array, offset = 0): number {
  checkBuffer(buf, offset, MESSAGE_TRANSPORT_HEADER_SIZE)
  writeHeader(buf, offset, MESSAGE_TRANSPORT)
  writeU32LE(buf, offset + MESSAGE_TRANSPORT_RECEIVER_OFFSET, header.receiverIndex)
  writeU32LE(buf, offset + MESSAGE_TRANSPORT_COUNTER_OFFSET, Number(header.counter & 0xffffffffn))
  writeU32LE(buf, offset + MESSAGE_TRANSPORT_COUNTER_OFFSET + 4, Number(header.counter >> 32n))
  return MESSAGE_TRANSPORT_HEADER_SIZE
}

/**
 * The receiver index of a response, cookie reply or transport message, read without allocating.
 * Call after messageType(); throws WireError `wg_type` for an initiation (it has no receiver).
 */
export function receiverIndexOf (datagram: Uint8Array): number {
  const type = datagram.length >= 12 ? datagram[MESSAGE_TYPE_OFFSET] : 0
  if (type === MESSAGE_RESPONSE) return readU32LE(datagram, MESSAGE_RESPONSE_RECEIVER_OFFSET)
  if (type === MESSAGE_TRANSPORT || type === MESSAGE_COOKIE_REPLY) return readU32LE(datagram, MESSAGE_TRANSPORT_RECEIVER_OFFSET)
  throw new WireError('wg_type', 'message has no receiver index')
}
