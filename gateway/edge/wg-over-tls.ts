/**
 * WireGuard over the HTTPS listener, for containers whose network blocks UDP. Two ways in, both on
 * the HTTPS port and both ending in a stream of framed WireGuard messages (wireguard/stream.ts):
 *
 *   ALPN     a TLS connection that offers the protocol `cc-wireguard/1` (and gets it) is a stream
 *            from its first byte after the handshake; to a middlebox it is any TLS connection to 443.
 *   Upgrade  for middleboxes that only pass HTTP/1.1: `GET /.well-known/cloud-connect/wireguard`
 *            with `Connection: Upgrade` and `Upgrade: cc-wireguard/1` on the control route's names
 *            (api.<base>) answers 101 and the connection is a stream from then on.
 *
 * The certificate is the one of the SNI name as for any client; nothing here authenticates: the
 * WireGuard handshake inside the stream is the authentication, so nothing new is trusted.
 *
 * Node's HTTP/2 server takes every ALPN protocol other than http/1.1 as HTTP/2 and would start a
 * session on it, so the protocol is added to the server's list and its 'secureConnection' listeners
 * are wrapped: a connection that negotiated ours goes to the stream handler and never reaches HTTP.
 */
import type http from 'node:http'
import type net from 'node:net'
import type tls from 'node:tls'
import type { Duplex } from 'node:stream'
import { intercept } from './intercept.ts'

/** The ALPN protocol ID of WireGuard over TLS (RFC 7301 3.1: opaque, not a registered ID). */
export const WIREGUARD_ALPN = 'cc-wireguard/1'
/** The reserved path of the HTTP/1.1 upgrade (RFC 8615 well-known URI). */
export const WIREGUARD_UPGRADE_PATH = '/.well-known/cloud-connect/wireguard'
/** The upgrade token (RFC 9110 7.8). */
export const WIREGUARD_UPGRADE_TOKEN = 'cc-wireguard/1'

export type StreamHandler = (socket: net.Socket, remote: { address: string, port: number }) => void

/** Adds WIREGUARD_ALPN to `server`'s ALPN list and sends connections that chose it to `onStream`. Call once, after the server's own listeners. */
export function attachWireGuardAlpn (server: tls.Server, onStream: StreamHandler): void {
  const holder = server as unknown as { ALPNProtocols?: Buffer }
  const existing = decodeAlpnList(holder.ALPNProtocols)
  // The wire form (RFC 7301 3.1: length-prefixed names) the server hands each connection.
  if (!existing.includes(WIREGUARD_ALPN)) holder.ALPNProtocols = encodeAlpnList([...existing, WIREGUARD_ALPN])
  intercept<tls.TLSSocket>(server, 'secureConnection', (socket, handOn) => {
    if (socket.alpnProtocol === WIREGUARD_ALPN) {
      onStream(socket, { address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 })
      return
    }
    handOn(socket)
  })
}

/** A request for the WireGuard upgrade (method, path and Upgrade token; the route is the caller's to check). */
export function isWireGuardUpgrade (req: http.IncomingMessage): boolean {
  if (req.method !== 'GET') return false
  const path = (req.url ?? '').split('?', 1)[0]
  if (path !== WIREGUARD_UPGRADE_PATH) return false
  const tokens = (req.headers.upgrade ?? '').toLowerCase().split(',').map(s => s.trim())
  return tokens.includes(WIREGUARD_UPGRADE_TOKEN)
}

/** Answers the upgrade (RFC 9110 15.2.2: 101 names the protocol switched to) and hands the stream on. */
export function acceptWireGuardUpgrade (req: http.IncomingMessage, socket: Duplex, head: Buffer, onStream: StreamHandler): void {
  const s = socket as net.Socket
  s.write(`HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: ${WIREGUARD_UPGRADE_TOKEN}\r\n\r\n`)
  if (head.length > 0) s.unshift(head)
  onStream(s, { address: s.remoteAddress ?? req.socket.remoteAddress ?? '', port: s.remotePort ?? 0 })
}

function decodeAlpnList (wire: Buffer | undefined): string[] {
  const out: string[] = []
  if (wire === undefined) return out
  for (let i = 0; i < wire.length;) {
    const n = wire[i]!
    out.push(wire.subarray(i + 1, i + 1 + n).toString('latin1'))
    i += 1 + n
  }
  return out
}

function encodeAlpnList (protocols: string[]): Buffer {
  return Buffer.concat(protocols.map(p => Buffer.concat([Buffer.from([p.length]), Buffer.from(p, 'latin1')])))
}
