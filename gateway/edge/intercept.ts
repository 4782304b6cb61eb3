/**
 * Putting a check in front of a server's own handling of an event ('connection' before TLS,
 * 'secureConnection' after it): the listeners already on are taken off and called by `front` only
 * when it hands the socket on. Used by the connection gate, the ACME TLS-ALPN responder, the fleet's
 * TLS passthrough and WireGuard over TLS; each wraps whatever was attached before it.
 */
import type { EventEmitter } from 'node:events'

export function intercept<S> (server: EventEmitter, event: 'connection' | 'secureConnection', front: (socket: S, handOn: (socket: S) => void) => void): void {
  const original = server.listeners(event) as Array<(socket: S) => void>
  server.removeAllListeners(event)
  const handOn = (socket: S): void => { for (const listener of original) listener.call(server, socket) }
  server.on(event, (socket: S) => { front(socket, handOn) })
}
