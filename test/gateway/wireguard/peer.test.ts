/** Per-peer state of gateway/wireguard/peer.ts: what an idle peer holds. */
import t from 'tap'
import { Peer } from '../../../gateway/wireguard/peer.ts'
import { CookieGenerator, REKEY_TIMEOUT, REKEY_TIMEOUT_JITTER_MAX, generatePrivateKey, publicKeyFromPrivate } from '../../../proto/noise/index.ts'
import { MESSAGE_INITIATION, MESSAGE_RESPONSE } from '../../../proto/wire/wireguard.ts'
import { parseIPv4Prefix } from '../../../proto/wire/ipv4.ts'
import { addClient, establish, pair } from './harness.ts'

t.test('idle peer: no cookie state until a handshake message needs its macs, then one kept for good', async t => {
  const peer = new Peer({ publicKey: publicKeyFromPrivate(generatePrivateKey()), allowedIPs: [] })
  t.equal((peer as unknown as { cookies: CookieGenerator | null }).cookies, null, 'nothing built for a peer that never handshakes')
  const first = peer.cookieGenerator
  t.ok(first instanceof CookieGenerator)
  t.equal(peer.cookieGenerator, first, 'the same generator afterwards: a cookie received stays for the next initiation (paper 5.4.7)')
})

/** The timer slot a peer's numbers live in (private to PeerTimers). */
function slotOf (peer: Peer): { values: Float64Array, base: number } {
  return peer.timers as unknown as { values: Float64Array, base: number }
}

t.test('idle peer: the key is kept once, as its name; publicKey decodes the same 32 bytes each time', async t => {
  const key = publicKeyFromPrivate(generatePrivateKey())
  const peer = new Peer({ publicKey: key, allowedIPs: [] })
  key.fill(0)
  const a = peer.publicKey
  t.equal(a.length, 32)
  t.equal(a.toString('base64'), peer.name, 'decoded from the name')
  t.not(a.toString('base64'), key.toString('base64'), 'not the caller\'s buffer, which was overwritten')
  a.fill(7)
  t.equal(peer.publicKey.toString('base64'), peer.name, 'a caller writing into one copy changes nothing')
})

t.test('device with 600 peers: every peer\'s deadlines are its own across timer-slab chunks, the earliest drives the device', async t => {
  const { gw } = pair()
  const peers: Peer[] = []
  for (let i = 0; i < 600; i++) {
    peers.push(gw.device.addPeer({ publicKey: publicKeyFromPrivate(generatePrivateKey()), allowedIPs: [parseIPv4Prefix(`10.101.${i >> 8}.${i & 255}/32`)] }))
  }
  t.equal(new Set(peers.map(p => slotOf(p).values)).size, 3, '601 peers in chunks of 256: three chunks')
  peers.forEach((p, i) => {
    p.timers.zeroKeyMaterialAt = 1_000_000 + i
    p.lastInitiationAt = 2_000_000 + i
  })
  t.ok(peers.every((p, i) => p.timers.zeroKeyMaterialAt === 1_000_000 + i && p.lastInitiationAt === 2_000_000 + i && p.timers.retransmitHandshakeAt === Infinity), 'each reads back its own numbers')
  t.same(peers.slice(0, 3).map(p => p.timers.earliest()), [1_000_000, 1_000_001, 1_000_002])
  gw.device.updateTimers(0)
  t.equal(gw.device.nextDeadline(), 1_000_000, 'the device arms for the earliest peer deadline')
})

t.test('removed peer: the next peer added takes its timer slot cleared, and a late write through the removed one does not reach it', async t => {
  const { gw } = pair()
  const slab = gw.device.timerSlab
  const before = slab.size
  const old = gw.device.addPeer({ publicKey: publicKeyFromPrivate(generatePrivateKey()), allowedIPs: [parseIPv4Prefix('10.101.0.1/32')] })
  old.timers.retransmitHandshakeAt = 5_000
  old.lastInitiationAt = 4_000
  old.lastSentHandshakeAt = 4_500
  const oldSlot = { ...slotOf(old) }
  t.ok(gw.device.removePeer(old.publicKey))
  t.equal(slab.size, before, 'slot freed')
  const next = gw.device.addPeer({ publicKey: publicKeyFromPrivate(generatePrivateKey()), allowedIPs: [parseIPv4Prefix('10.101.0.1/32')] })
  t.same(slotOf(next), oldSlot, 'the freed slot is reused')
  t.same([next.timers.retransmitHandshakeAt, next.lastInitiationAt, next.lastSentHandshakeAt], [Infinity, -Infinity, -Infinity], 'cleared, not the removed peer\'s numbers')
  old.timers.newHandshakeAt = 9_000
  old.lastInitiationAt = 9_000
  t.same([next.timers.newHandshakeAt, next.lastInitiationAt], [Infinity, -Infinity], 'stale writes stay with the removed peer')
  t.same([old.timers.newHandshakeAt, old.lastInitiationAt, old.lastSentHandshakeAt], [9_000, 9_000, 4_500], 'which keeps its own numbers')
})

t.test('established peer whose key changes: the new key handshakes at once on the same address, the old key is refused', async t => {
  const { net, gw, client } = pair()
  establish(net)
  t.equal(gw.delivered.length, 1, 'old key up')
  const slot = { ...slotOf(gw.device.peer(client.publicKey)!) }
  // The control plane replaces the instance's key, as reloadPeers does: remove, then add.
  t.ok(gw.device.removePeer(client.publicKey, net.now))
  const renewed = addClient(net, 'renewed', '198.18.0.9', 40009, '10.100.0.2')
  t.same(slotOf(gw.device.peer(renewed.publicKey)!), slot, 'the new peer took the old one\'s timer slot')
  // Same instant: a flood limit (paper 5.1) or timer carried over from the old peer would refuse it.
  establish(net, 'renewed')
  t.equal(gw.delivered.length, 2, 'new key handshook and its packet was delivered')
  t.equal(gw.delivered[1].peer.name, renewed.publicKey.toString('base64'))
  const rejectedBefore = gw.metrics.snapshot().wg_handshakes_rejected?.unknown_peer ?? 0
  net.advance(REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX + 1)
  const responses = net.sentBy('gateway', MESSAGE_RESPONSE).length
  client.device.sendInitiation(client.device.peer(gw.publicKey)!, net.now, false)
  net.flush()
  t.equal(net.sentBy('client', MESSAGE_INITIATION).length, 2, 'the old key initiated again')
  t.equal(gw.metrics.snapshot().wg_handshakes_rejected.unknown_peer, rejectedBefore + 1, 'refused as an unknown peer')
  t.equal(net.sentBy('gateway', MESSAGE_RESPONSE).length, responses, 'no response to the old key')
})
