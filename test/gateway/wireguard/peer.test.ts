/** Per-peer state of gateway/wireguard/peer.ts: what an idle peer holds. */
import t from 'tap'
import { Peer } from '../../../gateway/wireguard/peer.ts'
import { CookieGenerator, generatePrivateKey, publicKeyFromPrivate } from '../../../proto/noise/index.ts'

t.test('idle peer: no cookie state until a handshake message needs its macs, then one kept for good', async t => {
  const peer = new Peer({ publicKey: publicKeyFromPrivate(generatePrivateKey()), allowedIPs: [] })
  t.equal((peer as unknown as { cookies: CookieGenerator | null }).cookies, null, 'nothing built for a peer that never handshakes')
  const first = peer.cookieGenerator
  t.ok(first instanceof CookieGenerator)
  t.equal(peer.cookieGenerator, first, 'the same generator afterwards: a cookie received stays for the next initiation (paper 5.4.7)')
})
