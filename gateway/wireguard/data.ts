/**
 * Transport data (paper 5.4.6) and the session-freshness rules of paper 6.2: encrypting staged and
 * direct packets, keepalives, decrypting with replay protection, confirming the responder's next
 * keypair, and the cryptokey routing check on every decrypted packet (paper 2).
 */
import {
  sealTransport, openTransportMessage, REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME, REKEY_AFTER_MESSAGES,
  KEEPALIVE_TIMEOUT, REKEY_TIMEOUT,
} from '../../proto/noise/index.ts'
import { ipv4Source, IPV4_MIN_HEADER_LEN } from '../../proto/wire/ipv4.ts'
import {
  MESSAGE_TRANSPORT_CONTENT_OFFSET as CONTENT, MESSAGE_TRANSPORT_COUNTER_OFFSET, MESSAGE_TRANSPORT_RECEIVER_OFFSET,
} from '../../proto/wire/wireguard.ts'
import type { Device } from './device.ts'
import type { Keypair } from './keypair.ts'
import { NO_PACKETS, type Peer } from './peer.ts'
import {
  timersAnyAuthenticatedPacketReceived, timersAnyAuthenticatedPacketSent, timersAnyAuthenticatedPacketTraversal,
  timersDataReceived, timersDataSent, timersHandshakeComplete,
} from './timers.ts'

const KEEPALIVE = Buffer.alloc(0)

/** Paper 6.1: keys are not used past REJECT_AFTER_TIME or REJECT_AFTER_MESSAGES. */
export function keypairUsable (keypair: Keypair, now: number): boolean {
  return now - keypair.createdAt < REJECT_AFTER_TIME && keypair.sendCounter < REJECT_AFTER_MESSAGES
}

/** Sends one IP packet to `peer`: directly on the current session, else staged behind a handshake. */
export function sendPacket (dev: Device, peer: Peer, packet: Buffer, now: number): void {
  const keypair = peer.current
  if (peer.staged.length === 0 && keypair !== null && peer.endpoint !== null && keypairUsable(keypair, now)) {
    sealAndSend(dev, peer, keypair, packet, now)
    keepKeyFreshSending(dev, peer, now)
    return
  }
  dev.stage(peer, packet)
  sendStaged(dev, peer, now)
}

/** A keepalive is an empty transport message (paper 6.5); with no session it starts a handshake. */
export function sendKeepalive (dev: Device, peer: Peer, now: number): void {
  if (peer.staged.length === 0) dev.stage(peer, KEEPALIVE)
  sendStaged(dev, peer, now)
}

/** Flushes the staged queue on the current session, or asks for a handshake if there is none. */
export function sendStaged (dev: Device, peer: Peer, now: number): void {
  if (peer.endpoint === null) {
    dev.dropStaged(peer, 'no_endpoint')
    return
  }
  const keypair = peer.current
  if (keypair === null || !keypairUsable(keypair, now)) {
    dev.sendInitiation(peer, now, false)
    return
  }
  while (peer.staged.length > 0) {
    const staged = peer.staged
    peer.staged = NO_PACKETS
    for (const packet of staged) sealAndSend(dev, peer, keypair, packet, now)
  }
  keepKeyFreshSending(dev, peer, now)
}

function sealAndSend (dev: Device, peer: Peer, keypair: Keypair, packet: Buffer, now: number): void {
  const counter = keypair.sendCounter
  keypair.sendCounter = counter + 1n
  dev.transmit(peer, sealTransport(dev.aead, keypair.sendKey, keypair.remoteIndex, counter, packet))
  dev.sent.inc(packet.length === 0 ? 'keepalive' : 'data')
  timersAnyAuthenticatedPacketTraversal(dev, peer, now)
  timersAnyAuthenticatedPacketSent(peer)
  if (packet.length > 0) timersDataSent(dev, peer, now)
}

/** Paper 6.2: the initiator rekeys after REKEY_AFTER_TIME, anyone after REKEY_AFTER_MESSAGES. */
function keepKeyFreshSending (dev: Device, peer: Peer, now: number): void {
  const keypair = peer.current
  if (keypair === null) return
  if (keypair.sendCounter > REKEY_AFTER_MESSAGES ||
      ((keypair.isInitiator || dev.rekeyAsResponder) && now - keypair.createdAt > dev.rekeyAfterTime)) {
    dev.sendInitiation(peer, now, false)
  }
}

/**
 * Paper 6.2: an initiator receiving on keys older than REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT -
 * REKEY_TIMEOUT (165 s) starts a handshake once, so the session is replaced before it dies.
 */
function keepKeyFreshReceiving (dev: Device, peer: Peer, now: number): void {
  const keypair = peer.current
  if (keypair === null || !keypair.isInitiator || peer.timers.sentLastMinuteHandshake) return
  if (now - keypair.createdAt > REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT) {
    peer.timers.sentLastMinuteHandshake = true
    dev.sendInitiation(peer, now, false)
  }
}

/** A transport message (size and type already checked). */
export function receiveTransport (dev: Device, message: Buffer, address: string, port: number, now: number): void {
  const entry = dev.indexTable.get(message.readUInt32LE(MESSAGE_TRANSPORT_RECEIVER_OFFSET))
  if (entry === undefined || entry.kind !== 'keypair') {
    dev.dropped.inc('unknown_index')
    return
  }
  const keypair = entry
  const peer = keypair.peer
  if (now - keypair.createdAt >= REJECT_AFTER_TIME) {
    dev.dropped.inc('key_expired')
    return
  }
  const counter = message.readBigUInt64LE(MESSAGE_TRANSPORT_COUNTER_OFFSET)
  // The padded plaintext is then message[CONTENT, CONTENT + length): no views until delivery.
  const length = openTransportMessage(dev.aead, keypair.receiveKey, counter, message)
  if (length < 0) {
    dev.dropped.inc('decrypt')
    return
  }
  // Paper 5.4.6: the window moves only after authentication.
  if (!keypair.replay.checkAndUpdate(counter, REJECT_AFTER_MESSAGES)) {
    dev.dropped.inc('replay')
    return
  }
  if (peer.setEndpoint(address, port)) dev.io.endpointChanged?.(peer)
  peer.rxBytes += message.length
  peer.rxPackets++
  if (peer.next === keypair) confirmNext(dev, peer, now)
  keepKeyFreshReceiving(dev, peer, now)
  timersAnyAuthenticatedPacketTraversal(dev, peer, now)
  timersAnyAuthenticatedPacketReceived(peer)
  if (length === 0) {
    dev.received.inc('keepalive')
    return
  }
  dev.received.inc('data')
  timersDataReceived(dev, peer, now)

  if (length < IPV4_MIN_HEADER_LEN || message[CONTENT]! >> 4 !== 4) {
    dev.dropped.inc('rx_not_ipv4')
    return
  }
  const totalLength = message.readUInt16BE(CONTENT + 2)
  if (totalLength < IPV4_MIN_HEADER_LEN || totalLength > length) {
    dev.dropped.inc('rx_bad_length')
    return
  }
  const packet = message.subarray(CONTENT, CONTENT + totalLength)
  // Cryptokey routing (paper 2): the inner source must be one of this peer's allowed IPs.
  if (dev.allowedIps.lookup(ipv4Source(packet)) !== peer) {
    dev.dropped.inc('allowed_ips')
    return
  }
  dev.io.deliverPacket(packet, peer, now)
}

/** First packet on the responder's next keypair: it becomes current (paper 5.4.6, 6.1). */
function confirmNext (dev: Device, peer: Peer, now: number): void {
  if (peer.previous !== null) dev.deleteKeypairIndex(peer.previous.localIndex, peer.previous)
  peer.previous = peer.current
  peer.current = peer.next
  peer.next = null
  dev.tunnels.handshake(peer, now)
  timersHandshakeComplete(peer, now)
  dev.completed.inc('responder')
  dev.logger?.debug({ peer: peer.name }, 'handshake completed as responder')
  sendStaged(dev, peer, now)
}
