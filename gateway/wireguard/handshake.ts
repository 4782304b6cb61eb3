/**
 * Handshake messages of the device (paper 5.4.2-5.4.7): sending initiations, answering them,
 * consuming responses and cookie replies, and installing the resulting keypairs (paper 6.1:
 * previous/current/next). The DoS gate (MAC1, cookies, rate limit) runs before these, in device.ts.
 */
import {
  createInitiation, consumeInitiation, createResponse, consumeResponse, compareTai64n,
  HANDSHAKE_INITIATION_RATE, REKEY_TIMEOUT,
} from '../../proto/noise/index.ts'
import { MESSAGE_COOKIE_REPLY_RECEIVER_OFFSET, MESSAGE_RESPONSE_RECEIVER_OFFSET } from '../../proto/wire/wireguard.ts'
import type { Device } from './device.ts'
import { Keypair, PendingHandshake } from './keypair.ts'
import type { Peer } from './peer.ts'
import {
  timersAnyAuthenticatedPacketReceived, timersAnyAuthenticatedPacketSent, timersAnyAuthenticatedPacketTraversal,
  timersHandshakeComplete, timersHandshakeInitiated, timersSessionDerived,
} from './timers.ts'
import { sendKeepalive } from './data.ts'

/**
 * Sends a handshake initiation to the peer's endpoint. `isRetry` continues the current series
 * (retransmit timer); anything else starts a new series. Paper 6.1: at most one initiation per
 * REKEY_TIMEOUT, whatever asks for it.
 */
export function sendInitiation (dev: Device, peer: Peer, now: number, isRetry: boolean): void {
  if (!isRetry) peer.timers.handshakeAttempts = 0
  if (now - peer.lastSentHandshakeAt < REKEY_TIMEOUT) return
  if (peer.endpoint === null) {
    dev.logger?.debug({ peer: peer.name }, 'no endpoint known for peer; cannot initiate')
    return
  }
  peer.lastSentHandshakeAt = now
  if (peer.handshake !== null) dev.indexTable.delete(peer.handshake.localIndex)
  const pending = new PendingHandshake(peer)
  pending.localIndex = dev.indexTable.allocate(pending)
  let message: Buffer
  try {
    const created = createInitiation(dev.identity, peer.publicKey, peer.presharedKey, pending.localIndex, now + dev.wallClockOffset)
    message = created.message
    pending.state = created.handshake
  } catch (err) {
    // A low-order peer key: configuration is wrong, nothing to send.
    dev.indexTable.delete(pending.localIndex)
    peer.handshake = null
    dev.logger?.warn({ err, peer: peer.name }, 'cannot create handshake initiation')
    return
  }
  peer.handshake = pending
  peer.cookieGenerator.addMacs(message, now)
  peer.timers.handshakeAttempts++
  dev.transmit(peer, message)
  dev.sent.inc('initiation')
  timersAnyAuthenticatedPacketTraversal(dev, peer, now)
  timersAnyAuthenticatedPacketSent(peer)
  timersHandshakeInitiated(dev, peer, now)
}

/** An initiation that passed the DoS gate: authenticate, check replay/flood, answer, derive keys. */
export function receiveInitiation (dev: Device, message: Buffer, address: string, port: number, now: number): void {
  const consumed = consumeInitiation(dev.identity, message)
  if (consumed === null) {
    dev.rejected.inc('initiation_invalid')
    return
  }
  const peer = dev.peers.get(consumed.remoteStatic.toString('base64'))
  if (peer === undefined) {
    dev.rejected.inc('unknown_peer')
    return
  }
  // Paper 5.1: the timestamp must be newer than any accepted before (replay of a captured initiation).
  if (peer.lastTimestamp !== null && compareTai64n(consumed.timestamp, peer.lastTimestamp) <= 0) {
    dev.rejected.inc('replay')
    return
  }
  // wireguard-go HandshakeInitationRate: one initiation per 20 ms per peer (flood of fresh ones).
  if (now - peer.lastInitiationAt < HANDSHAKE_INITIATION_RATE) {
    dev.rejected.inc('flood')
    return
  }
  peer.lastTimestamp = Buffer.from(consumed.timestamp)
  peer.lastInitiationAt = now
  // Answering replaces our own initiation in flight, if any (one handshake slot per peer).
  if (peer.handshake !== null) {
    dev.indexTable.delete(peer.handshake.localIndex)
    peer.handshake = null
  }
  const localIndex = dev.indexTable.allocate(new PendingHandshake(peer))
  const { message: response, keys } = createResponse(consumed.handshake, peer.presharedKey, localIndex)
  peer.cookieGenerator.addMacs(response, now)
  const keypair = new Keypair(peer, keys, now)
  dev.indexTable.replace(localIndex, keypair)

  authenticatedHandshakeReceived(dev, peer, 'initiation', message, address, port, now)

  dev.transmit(peer, response)
  dev.sent.inc('response')
  timersAnyAuthenticatedPacketTraversal(dev, peer, now)
  timersAnyAuthenticatedPacketSent(peer)
  beginSession(dev, peer, keypair)
  timersSessionDerived(dev, peer, now)
}

/** A handshake message from `peer` passed authentication: the peer roams to its source, it counts, and the timers see it. */
function authenticatedHandshakeReceived (dev: Device, peer: Peer, kind: 'initiation' | 'response', message: Buffer, address: string, port: number, now: number): void {
  if (peer.setEndpoint(address, port)) dev.io.endpointChanged?.(peer)
  peer.rxBytes += message.length
  peer.rxPackets++
  dev.received.inc(kind)
  timersAnyAuthenticatedPacketTraversal(dev, peer, now)
  timersAnyAuthenticatedPacketReceived(peer)
}

/** A response that passed the DoS gate: it must answer our initiation in flight. */
export function receiveResponse (dev: Device, message: Buffer, address: string, port: number, now: number): void {
  const entry = dev.indexTable.get(message.readUInt32LE(MESSAGE_RESPONSE_RECEIVER_OFFSET))
  if (entry === undefined || entry.kind !== 'handshake' || entry.state === null) {
    dev.rejected.inc('unknown_index')
    return
  }
  const peer = entry.peer
  const keys = consumeResponse(entry.state, dev.identity, message)
  if (keys === null) {
    dev.rejected.inc('response_invalid')
    return
  }
  peer.handshake = null
  const keypair = new Keypair(peer, keys, now)
  dev.indexTable.replace(entry.localIndex, keypair)

  authenticatedHandshakeReceived(dev, peer, 'response', message, address, port, now)
  beginSession(dev, peer, keypair)
  timersSessionDerived(dev, peer, now)
  dev.tunnels.handshake(peer, now)
  timersHandshakeComplete(peer, now)
  dev.completed.inc('initiator')
  dev.logger?.debug({ peer: peer.name }, 'handshake completed as initiator')
  // Paper 6.1 / wireguard-go: confirm the session at once (staged data, else a keepalive).
  sendKeepalive(dev, peer, now)
}

/** A cookie reply (paper 5.4.7) to one of our messages: remember the cookie for mac2. */
export function receiveCookieReply (dev: Device, message: Buffer, now: number): void {
  const entry = dev.indexTable.get(message.readUInt32LE(MESSAGE_COOKIE_REPLY_RECEIVER_OFFSET))
  if (entry === undefined) {
    dev.dropped.inc('cookie_unknown_index')
    return
  }
  if (!entry.peer.cookieGenerator.consumeReply(message, now)) {
    dev.dropped.inc('cookie_invalid')
    return
  }
  dev.received.inc('cookie_reply')
}

/**
 * Installs fresh keys (wireguard-go BeginSymmetricSession). The initiator uses them at once; the
 * responder keeps them as `next` until the initiator's first data proves it has them too.
 */
function beginSession (dev: Device, peer: Peer, keypair: Keypair): void {
  if (keypair.isInitiator) {
    if (peer.next !== null) {
      if (peer.previous !== null) dev.deleteKeypairIndex(peer.previous.localIndex, peer.previous)
      if (peer.current !== null) dev.deleteKeypairIndex(peer.current.localIndex, peer.current)
      peer.previous = peer.next
      peer.next = null
    } else {
      if (peer.previous !== null) dev.deleteKeypairIndex(peer.previous.localIndex, peer.previous)
      peer.previous = peer.current
    }
    peer.current = keypair
  } else {
    if (peer.next !== null) dev.deleteKeypairIndex(peer.next.localIndex, peer.next)
    peer.next = keypair
    if (peer.previous !== null) dev.deleteKeypairIndex(peer.previous.localIndex, peer.previous)
    peer.previous = null
  }
}


