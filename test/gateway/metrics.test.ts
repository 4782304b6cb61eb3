/**
 * The gateway's Prometheus exposition (gateway/metrics.ts on prom-client) over its real metrics
 * listener: counter families keep their names and `reason` label, live tunnels are counted at
 * scrape time, a tunnel's lifetime is observed when its peer is removed, failed handshakes are
 * counted by reason, and Node's process metrics are there. Tunnel lapses run on a fake clock.
 */
import t, { type Test } from 'tap'
import { createSocket } from 'node:dgram'
import { randomBytes } from 'node:crypto'
import { pino } from 'pino'
import { Gateway } from '../../gateway/index.ts'
import { validateConfig } from '../../gateway/config/schema.ts'
import { Device } from '../../gateway/wireguard/device.ts'
import { TunnelLifetimes } from '../../gateway/wireguard/tunnels.ts'
import { Peer } from '../../gateway/wireguard/peer.ts'
import { UdpShell } from '../../gateway/wireguard/udp.ts'
import { REJECT_AFTER_TIME, encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../../proto/noise/index.ts'
import { parseIPv4Prefix } from '../../proto/wire/ipv4.ts'
import { until } from '../helpers/until.ts'
import { udpDevice } from '../helpers/udp-device.ts'

const silent = pino({ level: 'silent' })

/** A client Device behind its own UdpShell with the gateway as its only peer; `handshake()` starts one. */
async function startClient (t: Test, privateKey: Buffer, gw: Gateway): Promise<{ device: Device, shell: UdpShell }> {
  const { device, shell } = udpDevice({ privateKey })
  device.addPeer({ publicKey: gw.device.publicKey, allowedIPs: [parseIPv4Prefix('10.100.0.0/16')], endpoint: { address: '127.0.0.1', port: Number(gw.listen.split(':')[1]) }, persistentKeepalive: 1 })
  await shell.listen()
  t.teardown(() => shell.close())
  return { device, shell }
}

async function scrape (gw: Gateway): Promise<string> {
  const res = await fetch(`http://${gw.metricsListen!}/metrics`)
  if (res.status !== 200) throw new Error(`/metrics: ${res.status}`)
  return await res.text()
}

function sample (text: string, name: string, labels = ''): number | undefined {
  const escaped = `${name}${labels}`.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  const m = new RegExp(`^${escaped} (\\S+)$`, 'm').exec(text)
  return m === null ? undefined : Number(m[1])
}

t.test('a tunnel up: active tunnels counted at scrape time; removing the peer observes its lifetime', async t => {
  const keys = [generatePrivateKey(), generatePrivateKey()]
  const config = validateConfig({
    privateKey: encodeKey(generatePrivateKey()),
    listenAddress: '127.0.0.1',
    listenPort: 0,
    metricsListen: '127.0.0.1:0',
    peers: keys.map((k, i) => ({ publicKey: encodeKey(publicKeyFromPrivate(k)), allowedIPs: [`10.100.0.${i + 2}/32`] })),
  })
  const gw = await Gateway.start(config, silent)
  t.teardown(() => gw.close())

  const before = await scrape(gw)
  t.equal(sample(before, 'cc_tunnels_active'), 0, 'no tunnel before any handshake')
  t.equal(sample(before, 'cc_wg_peers'), 2)
  t.equal(sample(before, 'cc_tunnel_connection_duration_seconds_count'), 0)
  t.match(before, /^# TYPE cc_tcp_connections gauge$/m, 'connections by state stay a gauge')
  t.match(before, /^# TYPE cc_wg_handshakes_completed counter$/m)
  t.match(before, /^# TYPE nodejs_eventloop_lag_seconds gauge$/m, 'process metrics: event-loop lag')
  t.match(before, /^# TYPE nodejs_heap_size_used_bytes gauge$/m, 'process metrics: heap')

  await startClient(t, keys[0], gw)
  await until('the first tunnel is up', () => gw.device.peer(publicKeyFromPrivate(keys[0]))?.lastHandshakeAt != null, 10_000)
  const one = await scrape(gw)
  t.equal(sample(one, 'cc_tunnels_active'), 1, 'one live tunnel')
  t.equal(sample(one, 'cc_wg_handshakes_completed', '{reason="responder"}'), 1, 'counter family names and labels unchanged')

  await startClient(t, keys[1], gw)
  await until('the second tunnel is up', () => gw.device.peer(publicKeyFromPrivate(keys[1]))?.lastHandshakeAt != null, 10_000)
  t.equal(sample(await scrape(gw), 'cc_tunnels_active'), 2, 'two live tunnels')

  // Control drops the first peer: its tunnel ends and its lifetime is observed.
  gw.reloadPeers([{ publicKey: publicKeyFromPrivate(keys[1]), presharedKey: null, endpoint: null, persistentKeepalive: 0, allowedIPs: [parseIPv4Prefix('10.100.0.3/32')] }])
  const after = await scrape(gw)
  t.equal(sample(after, 'cc_tunnels_active'), 1)
  t.equal(sample(after, 'cc_tunnel_connection_duration_seconds_count'), 1, 'one tunnel ended')
  t.equal(sample(after, 'cc_tunnel_connection_duration_seconds_bucket', '{le="60"}'), 1, 'it lasted under a minute')
})

t.test('handshakes refused: unknown key and invalid mac1 counted as failed attempts by reason', async t => {
  const config = validateConfig({ privateKey: encodeKey(generatePrivateKey()), listenAddress: '127.0.0.1', listenPort: 0, metricsListen: '127.0.0.1:0', peers: [] })
  const gw = await Gateway.start(config, silent)
  t.teardown(() => gw.close())
  // A well-formed initiation from a key the gateway does not know.
  await startClient(t, generatePrivateKey(), gw)
  await until('an initiation refused', () => gw.device.rejected.get('unknown_peer') >= 1, 10_000)
  // 148 random bytes of type 1: mac1 cannot match.
  const junk = randomBytes(148)
  junk.writeUInt32LE(1, 0)
  const socket = createSocket('udp4')
  t.teardown(() => { socket.close() })
  await new Promise<void>((resolve, reject) => { socket.send(junk, Number(gw.listen.split(':')[1]), '127.0.0.1', err => { if (err == null) resolve(); else reject(err) }) })
  await until('the junk refused', () => gw.device.rejected.get('mac1') === 1, 10_000)

  const text = await scrape(gw)
  t.ok(sample(text, 'cc_tunnel_failed_attempts_total', '{reason="unknown_key"}')! >= 1, 'unknown key')
  t.equal(sample(text, 'cc_tunnel_failed_attempts_total', '{reason="invalid_mac"}'), 1, 'invalid mac1')
  t.equal(sample(text, 'cc_tunnels_active'), 0, 'no tunnel came up')
})

t.test('TunnelLifetimes: a tunnel lapses REJECT_AFTER_TIME after its last handshake; rekeys extend it', async t => {
  const seen: number[] = []
  const lifetimes = new TunnelLifetimes(s => { seen.push(s) })
  const peer = new Peer({ publicKey: publicKeyFromPrivate(generatePrivateKey()), allowedIPs: [] })
  const handshake = (now: number): void => { lifetimes.handshake(peer, now); peer.lastHandshakeAt = now }
  handshake(1_000)
  handshake(121_000) // a rekey two minutes later: the same tunnel
  lifetimes.lapse(peer, 121_000 + REJECT_AFTER_TIME - 1)
  t.same(seen, [], 'still live 1 ms before the lapse')
  t.ok(TunnelLifetimes.live(peer, 121_000 + REJECT_AFTER_TIME - 1))
  lifetimes.lapse(peer, 900_000) // noticed late: the lapse time still counts
  t.same(seen, [(121_000 + REJECT_AFTER_TIME - 1_000) / 1000], 'first handshake to lapse')
  t.notOk(TunnelLifetimes.live(peer, 900_000))

  // A handshake after an unnoticed lapse ends the old tunnel before starting the next.
  handshake(1_000_000)
  handshake(2_000_000)
  t.same(seen.slice(1), [REJECT_AFTER_TIME / 1000], 'the lapsed tunnel lasted REJECT_AFTER_TIME')
  lifetimes.removed(peer, 2_030_000)
  t.same(seen.slice(2), [30], 'removed 30 s after its first handshake')
  lifetimes.removed(peer, 2_040_000)
  t.equal(seen.length, 3, 'a peer without a tunnel observes nothing')
})
