/**
 * Whole client connections relayed between gateways of a fleet (relay-connections.ts). A
 * gateway without a live session with an instance reads the ClientHello's server name, and when
 * that name's route relays (RelayClient.targetFor), the connection goes to a gateway holding the
 * session inside a relay connection (mutually authenticated TLS 1.3), in one of two ways:
 *
 *   stream (STREAM_ALPN, the default):
 *   client --TLS--> gateway A (client TLS ends, plaintext piped) ==relay TLS==> gateway B (HTTP) --> tunnel
 *   passthrough (PASSTHROUGH_ALPN):
 *   client --TLS--> gateway A (SNI read, bytes piped) ==relay TLS==> gateway B (client TLS ends) --> tunnel
 *
 * Either way A parses no HTTP, and B serves the requests as if the client had come to it. The
 * relay connection starts with a preamble naming the client's address (B's limits, logs and
 * forwarding headers use it; only fleet members can send one), and for a stream the ALPN protocol
 * and server name the client chose. A connection that arrived this way is never relayed again.
 * When the holder cannot be reached, A serves the connection itself (its proxy then relays per
 * request, or answers the error page).
 */
import type net from 'node:net'
import type { Duplex } from 'node:stream'

/** ALPN protocol of a relay connection carrying one client's raw TLS (our own identifier). */
export const PASSTHROUGH_ALPN = 'cc-tls-passthrough/1'

/**
 * ALPN protocol of a relay connection carrying one client's decrypted stream (our own identifier):
 * the relaying gateway terminated the client's TLS and pipes the plaintext HTTP/1.1 or HTTP/2.
 */
export const STREAM_ALPN = 'cc-relay-stream/1'

/** The most ClientHello bytes read before giving up on finding a server name (then: served locally). */
export const MAX_CLIENT_HELLO = 16 * 1024 + 5

/** The longest preamble accepted (2-byte length, then JSON; see Preamble). */
const MAX_PREAMBLE = 512

const CLIENT = Symbol('cc.passthroughClient')

type Marked = { [CLIENT]?: string }

export type ServerNameResult =
  | { done: false }
  | { done: true, servername: string | null }

/**
 * The server_name (RFC 6066 3) of a TLS ClientHello at the start of `data`, which may span several
 * records (RFC 8446 5.1). `done: false` while more bytes are needed; `servername: null` when the
 * bytes are not a ClientHello or name no host.
 */
export function readServerName (data: Buffer): ServerNameResult {
  const NONE: ServerNameResult = { done: true, servername: null }
  // Not a ClientHello, or one claiming more than the limit: known from the first record's start.
  if (data.length >= 9 && data[0] === 22 && data.readUInt16BE(3) >= 4) {
    if (data[5] !== 1 || 4 + data.readUIntBE(6, 3) > MAX_CLIENT_HELLO) return NONE
  }
  // Reassemble handshake bytes from consecutive handshake records.
  const chunks: Buffer[] = []
  let have = 0
  let need = -1
  let offset = 0
  while (need === -1 || have < need) {
    if (data.length < offset + 5) return data.length >= MAX_CLIENT_HELLO ? NONE : { done: false }
    if (data[offset] !== 22) return NONE // not a handshake record
    if (data[offset + 1] !== 3) return NONE
    const length = data.readUInt16BE(offset + 3)
    if (length === 0 || length > 16_384) return NONE
    if (data.length < offset + 5 + length) return data.length >= MAX_CLIENT_HELLO ? NONE : { done: false }
    chunks.push(data.subarray(offset + 5, offset + 5 + length))
    have += length
    offset += 5 + length
    if (need === -1) {
      const first = Buffer.concat(chunks)
      if (first.length < 4) continue
      if (first[0] !== 1) return NONE // not a ClientHello
      need = 4 + first.readUIntBE(1, 3)
      if (need > MAX_CLIENT_HELLO) return NONE
    }
  }
  return { done: true, servername: serverNameOf(Buffer.concat(chunks).subarray(4, need)) }
}

/** The host_name in a ClientHello body (after the 4-byte handshake header), or null. */
function serverNameOf (hello: Buffer): string | null {
  let p = 2 + 32 // legacy_version, random
  const skip = (lengthBytes: number): boolean => {
    if (p + lengthBytes > hello.length) return false
    p += lengthBytes + hello.readUIntBE(p, lengthBytes)
    return p <= hello.length
  }
  if (!skip(1) || !skip(2) || !skip(1)) return null // session id, cipher suites, compression
  if (p + 2 > hello.length) return null
  const end = p + 2 + hello.readUInt16BE(p)
  p += 2
  if (end > hello.length) return null
  while (p + 4 <= end) {
    const type = hello.readUInt16BE(p)
    const length = hello.readUInt16BE(p + 2)
    p += 4
    if (p + length > end) return null
    if (type === 0) {
      // ServerNameList: 2-byte length, then entries of type(1) length(2) name.
      let q = p + 2
      const listEnd = Math.min(p + 2 + (length >= 2 ? hello.readUInt16BE(p) : 0), p + length)
      while (q + 3 <= listEnd) {
        const nameType = hello[q]
        const nameLength = hello.readUInt16BE(q + 1)
        q += 3
        if (q + nameLength > listEnd) return null
        if (nameType === 0) {
          const name = hello.toString('latin1', q, q + nameLength)
          return /^[\x21-\x7e]+$/.test(name) ? name.toLowerCase() : null
        }
        q += nameLength
      }
      return null
    }
    p += length
  }
  return null
}

/**
 * What a relaying gateway writes first on a relay connection that carries one client's connection:
 * the client's address and port; on a stream (STREAM_ALPN) also the ALPN protocol the client
 * negotiated with the relaying gateway and the server name it asked for (the holder checks Host
 * against it, RFC 9110 7.4).
 */
export interface Preamble {
  client: string
  port: number
  alpn?: 'h2' | 'http/1.1'
  servername?: string
}

/** Encodes a preamble: 2-byte length, then JSON. */
export function encodePreamble (preamble: Preamble): Buffer {
  const body = Buffer.from(JSON.stringify(preamble))
  const head = Buffer.alloc(2)
  head.writeUInt16BE(body.length)
  return Buffer.concat([head, body])
}

/** The preamble in `json`, or null when it is not one (a field of the wrong type or size). */
function parsePreamble (json: string): Preamble | null {
  let value: unknown
  try { value = JSON.parse(json) } catch { return null }
  if (typeof value !== 'object' || value === null) return null
  const { client, port, alpn, servername } = value as Record<string, unknown>
  if (typeof client !== 'string' || client.length === 0 || client.length > 64) return null
  if (port !== undefined && (typeof port !== 'number' || !Number.isInteger(port) || port < 0 || port > 65535)) return null
  if (alpn !== undefined && alpn !== 'h2' && alpn !== 'http/1.1') return null
  if (servername !== undefined && (typeof servername !== 'string' || !/^[\x21-\x7e]{1,253}$/.test(servername))) return null
  return { client, port: (port as number | undefined) ?? 0, ...(alpn === undefined ? {} : { alpn }), ...(servername === undefined ? {} : { servername: servername as string }) }
}

/**
 * A relay connection that closed before its preamble. `empty`: not one byte came, as when the
 * client's TLS handshake at the relaying gateway failed (that gateway counts it; this one does not).
 */
export class PreambleMissing extends Error {
  constructor (readonly empty: boolean) {
    super(empty ? 'relay connection closed with no preamble' : 'relay connection closed before its preamble')
  }
}

/**
 * Reads the preamble from a relay connection: calls back with it and the bytes that followed it
 * (the client's), or an error (malformed, too long, closed before it (PreambleMissing), or
 * `timeoutMs` without it). The socket is left paused.
 */
export function readPreamble (socket: Duplex, timeoutMs: number, callback: (err: Error | null, preamble?: Preamble, rest?: Buffer) => void): void {
  let buffered: Buffer = Buffer.alloc(0)
  let received = 0
  let settled = false
  const finish = (err: Error | null, preamble?: Preamble, rest?: Buffer): void => {
    if (settled) return
    settled = true
    clearTimeout(timer)
    socket.off('data', onData)
    socket.off('end', onEnd)
    socket.off('close', onEnd)
    if (err === null) socket.pause()
    callback(err, preamble, rest)
  }
  const onEnd = (): void => { finish(new PreambleMissing(received === 0)) }
  const onData = (chunk: Buffer): void => {
    received += chunk.length
    buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk])
    if (buffered.length < 2) return
    const length = buffered.readUInt16BE(0)
    if (length === 0 || length > MAX_PREAMBLE) { finish(new Error('relay preamble malformed')); return }
    if (buffered.length < 2 + length) return
    const preamble = parsePreamble(buffered.toString('utf8', 2, 2 + length))
    if (preamble === null) { finish(new Error('relay preamble malformed')); return }
    finish(null, preamble, buffered.subarray(2 + length))
  }
  const timer = setTimeout(() => { finish(new Error('relay preamble timed out')) }, timeoutMs)
  socket.on('data', onData)
  socket.once('end', onEnd)
  socket.once('close', onEnd)
}

/** Marks a relay connection as carrying `client`'s connection (before TLS or HTTP is layered on it). */
export function markPassthrough (socket: Duplex, client: string): void {
  (socket as unknown as Marked)[CLIENT] = client
}

/**
 * The client address of a connection that arrived from another gateway (stream or passthrough),
 * else undefined. `socket` is the socket a request came on (or an HTTP/2 request's socket proxy):
 * the relay connection itself for a stream; for a passthrough the client's TLS socket, the mark
 * being on the relay connection beneath it (node's TLSSocket keeps the stream it wraps as `_parent`).
 */
export function passthroughClient (socket: net.Socket | Duplex | undefined | null): string | undefined {
  if (socket === undefined || socket === null) return undefined
  const own = (socket as unknown as Marked)[CLIENT]
  if (own !== undefined) return own
  const parent = (socket as unknown as { _parent?: Marked | null })._parent
  return parent?.[CLIENT]
}
