// Interop: our gateway (`cloud-connect gateway --config FILE`, userspace WireGuard) against real
// wireguard-go peers with the Linux stack behind them, each in a network namespace of its own
// (test/helpers/lab.ts). Needs root and wireguard-go: skipped with the reason otherwise, failed
// under CC_REQUIRE_INTEROP=1 (CI).
//
// Counters are read from the gateway's /metrics (gateway/metrics.ts exposition, prefix cc_).
import t, { type Test } from 'tap'
import { setTimeout as sleep } from 'node:timers/promises'
import {
  Lab, metricValue, requireLab, waitUntil, wgGenKey, wgPubKey,
  type Gateway, type GatewayConfig, type GatewayPeerConfig, type WireguardGo, type LinkEnds,
} from '../../helpers/lab.ts'

const GATEWAY_IP = '10.100.0.1'
const GATEWAY_PORT = 51820
const PEER_PORT = 51821
const METRICS_LISTEN = '127.0.0.1:9091'

interface PeerSpec {
  /** Allowed IPs of the gateway in the peer's own wireguard-go config. */
  routes?: string[]
  /** The peer knows the gateway's endpoint (default) or only listens. */
  knowsEndpoint?: boolean
  /** Gateway side: the gateway knows this peer's endpoint and keeps it alive (so it initiates). */
  gatewayInitiates?: boolean
}

interface LabPeer {
  ns: string
  link: LinkEnds
  wg: WireguardGo
  tunnelIp: string
  publicKey: string
  /** The gateway's endpoint as this peer knew it before the gateway started. */
  endpointBeforeGateway: string | null
}

interface Setup {
  lab: Lab
  gwNs: string
  gw: Gateway
  config: GatewayConfig
  gatewayPublicKey: string
  peers: LabPeer[]
}

/**
 * Gateway namespace `gw`, one namespace per peer (`p1`, `p2`, ...) joined to it by a veth pair.
 * Peers start first (listening), then the gateway.
 */
async function setup (t: Test, specs: PeerSpec[], extra: Partial<GatewayConfig> = {}, logLevel = 'debug'): Promise<Setup> {
  const lab = await Lab.create(t)
  const gwNs = await lab.namespace('gw')
  const gatewayKey = await wgGenKey()
  const gatewayPublicKey = await wgPubKey(gatewayKey)
  const peers: LabPeer[] = []
  const peerConfigs: GatewayPeerConfig[] = []
  for (const [i, spec] of specs.entries()) {
    const ns = await lab.namespace(`p${i + 1}`)
    const link = await lab.link(gwNs, ns)
    const tunnelIp = `10.100.0.${i + 2}`
    const wg = await lab.startWireguardGo(ns, {
      address: `${tunnelIp}/32`,
      listenPort: PEER_PORT,
      peers: [{
        publicKey: gatewayPublicKey,
        allowedIPs: spec.routes ?? [`${GATEWAY_IP}/32`],
        ...(spec.knowsEndpoint === false ? {} : { endpoint: `${link.a.ip}:${GATEWAY_PORT}` }),
      }],
    })
    const endpointBeforeGateway = (await wg.peer(gatewayPublicKey)).endpoint
    peers.push({ ns, link, wg, tunnelIp, publicKey: wg.publicKey, endpointBeforeGateway })
    peerConfigs.push({
      publicKey: wg.publicKey,
      allowedIPs: [`${tunnelIp}/32`],
      ...(spec.gatewayInitiates === true ? { endpoint: `${link.b.ip}:${PEER_PORT}`, persistentKeepalive: 1 } : {}),
    })
  }
  const config: GatewayConfig = {
    privateKey: gatewayKey,
    listenPort: GATEWAY_PORT,
    address: GATEWAY_IP,
    metricsListen: METRICS_LISTEN,
    peers: peerConfigs,
    ...extra,
  }
  const gw = await lab.startGateway(gwNs, config, { logLevel })
  return { lab, gwNs, gw, config, gatewayPublicKey, peers }
}

async function counter (gw: Gateway, name: string, reason?: string): Promise<number> {
  return metricValue(await gw.metrics(), name, reason === undefined ? {} : { reason })
}

/** Waits until the wireguard-go peer records a handshake newer than `after` (unix seconds). */
async function waitHandshake (peer: LabPeer, gatewayPublicKey: string, timeoutMs: number, after = 0): Promise<number> {
  return waitUntil(`handshake on ${peer.wg.ifname}`, async () => {
    const h = (await peer.wg.peer(gatewayPublicKey)).latestHandshake
    return h > after ? h : undefined
  }, timeoutMs, 200)
}

if (requireLab(t)) {
  t.test('a peer pings the gateway and every echo is answered', async t => {
    const s = await setup(t, [{}])
    const [peer] = s.peers
    const r = await s.lab.ping(peer.ns, GATEWAY_IP, { count: 20, interval: 0.2 })
    t.equal(r.transmitted, 20)
    t.equal(r.received, 20, `0% loss (lost seqs: ${r.lostSeqs.join(',')})`)
    t.ok((await peer.wg.peer(s.gatewayPublicKey)).latestHandshake > 0, 'wireguard-go recorded the handshake')
    t.ok(await counter(s.gw, 'cc_wg_handshakes_completed', 'responder') >= 1, 'gateway completed a handshake as responder')
    t.ok(await counter(s.gw, 'cc_ip_packets', 'icmp_echo_reply') >= 20, 'gateway counted its echo replies')
    const status = JSON.stringify(await s.gw.status())
    t.ok(status.includes(peer.publicKey), '/status lists the peer')
  })

  t.test('after a gateway restart with the same key the peer\'s pings resume untouched', async t => {
    const s = await setup(t, [{}])
    const [peer] = s.peers
    const before = await s.lab.ping(peer.ns, GATEWAY_IP, { count: 5 })
    t.equal(before.received, 5, 'pings work before the restart')
    const firstPid = s.gw.process.pid
    await s.gw.stop()
    const gw2 = await s.lab.startGateway(s.gwNs, s.config)
    t.not(gw2.process.pid, firstPid, 'a new gateway process')
    // The peer still holds the old session; wireguard-go starts a new handshake once its data has
    // gone unanswered for KEEPALIVE_TIMEOUT + REKEY_TIMEOUT (15 s, paper 6.5). Nothing is done to the peer.
    const started = Date.now()
    await waitUntil('a ping reply from the restarted gateway', async () => {
      const r = await s.lab.ping(peer.ns, GATEWAY_IP, { count: 1, timeout: 1 })
      return r.received === 1
    }, 45_000, 0)
    t.comment(`traffic resumed ${Date.now() - started} ms after the restart`)
    const after = await s.lab.ping(peer.ns, GATEWAY_IP, { count: 10 })
    t.equal(after.received, 10, 'every ping answered after recovery')
    t.ok(await counter(gw2, 'cc_wg_handshakes_completed') >= 1, 'the new gateway completed a handshake')
  })

  t.test('the gateway initiates the handshake to a listening wireguard-go', async t => {
    const s = await setup(t, [{ knowsEndpoint: false, gatewayInitiates: true }])
    const [peer] = s.peers
    t.equal(peer.endpointBeforeGateway, null, 'the peer did not know the gateway\'s endpoint')
    await waitHandshake(peer, s.gatewayPublicKey, 15_000)
    t.equal((await peer.wg.peer(s.gatewayPublicKey)).endpoint, `${peer.link.a.ip}:${GATEWAY_PORT}`, 'the peer learned the gateway endpoint from the handshake')
    t.ok(await counter(s.gw, 'cc_wg_handshakes_completed', 'initiator') >= 1, 'gateway completed a handshake as initiator')
    const r = await s.lab.ping(peer.ns, GATEWAY_IP, { count: 10 })
    t.equal(r.received, 10, 'data flows over the session the gateway started')
  })

  t.test('peers cannot reach each other through the gateway', async t => {
    // Both peers route the whole tunnel subnet to the gateway, so a packet for the other peer
    // really enters the tunnel; the gateway must drop it (no forwarding, DESIGN "data path").
    const subnet = ['10.100.0.0/24']
    const s = await setup(t, [{ routes: subnet }, { routes: subnet }])
    const [p1, p2] = s.peers
    for (const p of s.peers) {
      const r = await s.lab.ping(p.ns, GATEWAY_IP, { count: 5 })
      t.equal(r.received, 5, `${p.tunnelIp} reaches the gateway`)
    }
    const droppedBefore = await counter(s.gw, 'cc_ip_dropped', 'not_for_us')
    const across = await s.lab.ping(p2.ns, p1.tunnelIp, { count: 5 })
    t.equal(across.transmitted, 5)
    t.equal(across.received, 0, 'peer 2 gets no reply from peer 1')
    const back = await s.lab.ping(p1.ns, p2.tunnelIp, { count: 5 })
    t.equal(back.received, 0, 'peer 1 gets no reply from peer 2')
    const droppedAfter = await counter(s.gw, 'cc_ip_dropped', 'not_for_us')
    t.ok(droppedAfter - droppedBefore >= 10, `gateway counted the dropped packets (${droppedBefore} -> ${droppedAfter})`)
    for (const p of s.peers) {
      const r = await s.lab.ping(p.ns, GATEWAY_IP, { count: 3 })
      t.equal(r.received, 3, `${p.tunnelIp} still reaches the gateway`)
    }
  })

  t.test('sessions rotating every 3 s lose at most one packet per rotation', async t => {
    const s = await setup(t, [{ gatewayInitiates: true }], { testing: { rekeyAfterTimeMs: 3000 } })
    const [peer] = s.peers
    await waitHandshake(peer, s.gatewayPublicKey, 15_000)
    const initiatedBefore = await counter(s.gw, 'cc_wg_handshakes_completed', 'initiator')
    const handshakes = new Set<number>()
    const pinger = s.lab.startPing(peer.ns, GATEWAY_IP, { count: 200, interval: 0.1 })
    let pinging = true
    void pinger.result.finally(() => { pinging = false })
    for (let i = 0; i < 200 && pinging; i++) { // ~20 s of pings, polled every 250 ms
      handshakes.add((await peer.wg.peer(s.gatewayPublicKey)).latestHandshake)
      await sleep(250)
    }
    const r = await pinger.result
    const rotations = await counter(s.gw, 'cc_wg_handshakes_completed', 'initiator') - initiatedBefore
    t.comment(`rotations: ${rotations} (wireguard-go saw ${handshakes.size} handshake times), lost ${r.transmitted - r.received}/${r.transmitted}: ${r.lostSeqs.join(',')}`)
    t.ok(rotations >= 3, `the gateway rekeyed as initiator several times (${rotations})`)
    t.ok(handshakes.size >= 3, `wireguard-go saw new handshakes (${handshakes.size} distinct times)`)
    t.equal(r.transmitted, 200)
    t.ok(r.transmitted - r.received <= rotations, `at most one lost packet per rotation (${r.transmitted - r.received} lost, ${rotations} rotations)`)
  })

  t.test('a handshake flood gets cookie replies while an established peer keeps working', async t => {
    // Info logs: a debug line per rejected initiation would measure the logger, not the gateway.
    const s = await setup(t, [{}], {}, 'info')
    const [peer] = s.peers
    const warm = await s.lab.ping(peer.ns, GATEWAY_IP, { count: 3 })
    t.equal(warm.received, 3, 'peer established before the flood')
    const floodNs = await s.lab.namespace('flood')
    const floodLink = await s.lab.link(s.gwNs, floodNs)
    const cookiesBefore = await counter(s.gw, 'cc_wg_messages_sent', 'cookie_reply')

    const pinger = s.lab.startPing(peer.ns, GATEWAY_IP, { count: 40, interval: 0.2 })
    const flood = await s.lab.flood(floodNs, {
      target: `${floodLink.a.ip}:${GATEWAY_PORT}`,
      serverPublicKey: s.gatewayPublicKey,
      count: 20_000,
      durationMs: 5000,
      sockets: 200,
    })
    const r = await pinger.result
    const cookiesSent = await counter(s.gw, 'cc_wg_messages_sent', 'cookie_reply') - cookiesBefore
    t.comment(`flood: ${JSON.stringify(flood)}; gateway sent ${cookiesSent} cookie replies; ping lost ${r.transmitted - r.received}/${r.transmitted}`)
    t.equal(flood.sent, 20_000, 'the whole flood was sent')
    t.ok(flood.cookieReplies > 0, `cookie replies came back to the flooder (${flood.cookieReplies})`)
    t.ok(cookiesSent >= flood.cookieReplies, 'the gateway counted at least the cookie replies that arrived')
    t.equal(flood.responses, 0, 'no handshake response to a forged initiation')
    t.ok(r.received >= 36, `the established peer's ping kept working (${r.received}/40)`)
    t.ok(s.gw.process.running, 'gateway still running')
    const after = await s.lab.ping(peer.ns, GATEWAY_IP, { count: 5 })
    t.equal(after.received, 5, 'every ping answered after the flood')
  })
}
