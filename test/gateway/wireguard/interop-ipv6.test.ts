// IPv6 interop: our gateway (`cloud-connect gateway --config FILE`, its WireGuard socket and HTTPS
// listener on the default dual-stack addresses) and two wireguard-go peers, each in a network
// namespace of its own (test/helpers/lab.ts): one reaches the gateway only over IPv6 (ULA addresses
// on its veth, its IPv4 address removed), the other over IPv4. Both tunnels carry HTTPS from the
// gateway's edge to an HTTP server behind the peer; /status reports the IPv6 peer's endpoint
// bracketed and the IPv4 one as plain IPv4 (never ::ffff:a.b.c.d). Needs root and wireguard-go:
// skipped with the reason otherwise, failed under CC_REQUIRE_INTEROP=1 (CI).
import t from 'tap'
import { createHash, randomBytes } from 'node:crypto'
import { join } from 'node:path'
import { batchedUdpUnavailable } from '../../../gateway/wireguard/socket.ts'
import { Lab, requireLab, runOk, waitUntil, wgGenKey, wgPubKey, type GatewayPeerConfig } from '../../helpers/lab.ts'

const GATEWAY_IP = '10.100.0.1'
const GATEWAY_PORT = 51820
const PEER_PORT = 51821
const HTTPS_PORT = 8443
const METRICS_LISTEN = '127.0.0.1:9091'

interface SinkAnswer { bytes: number, sha256: string }

if (requireLab(t, ['curl'])) {
  // Both socket implementations: node:dgram is the one that sees IPv4 senders as ::ffff:a.b.c.d.
  const kinds: Array<'batched' | 'dgram'> = ['dgram']
  if (batchedUdpUnavailable === null) kinds.unshift('batched')
  else if (process.env.CC_REQUIRE_INTEROP === '1') t.fail(`batched UDP socket ${batchedUdpUnavailable} (CC_REQUIRE_INTEROP=1)`)
  else t.comment(`batched UDP socket ${batchedUdpUnavailable}: only node:dgram is tested`)
  for (const udpIo of kinds) t.test(`${udpIo}: wireguard-go over IPv6 and over IPv4 on one dual-stack socket: HTTPS through both tunnels, endpoints reported per family`, async t => {
    const lab = await Lab.create(t)
    const gwNs = await lab.namespace('gw')
    const sixNs = await lab.namespace('six')
    const fourNs = await lab.namespace('four')
    const six = await lab.link(gwNs, sixNs, { ipv6: true })
    const four = await lab.link(gwNs, fourNs)
    // The IPv6 peer keeps no IPv4 path to the gateway: its tunnel can only run over IPv6.
    await runOk('ip', ['-n', sixNs, 'addr', 'del', six.b.cidr, 'dev', six.b.ifname])

    const gatewayKey = await wgGenKey()
    const gatewayPublicKey = await wgPubKey(gatewayKey)
    const peerOf = (endpoint: string): { publicKey: string, allowedIPs: string[], endpoint: string, persistentKeepalive: number } =>
      ({ publicKey: gatewayPublicKey, allowedIPs: [`${GATEWAY_IP}/32`], endpoint, persistentKeepalive: 1 })
    const wg6 = await lab.startWireguardGo(sixNs, { address: '10.100.0.2/32', listenPort: PEER_PORT, peers: [peerOf(`[${six.a.ip6!}]:${GATEWAY_PORT}`)] })
    const wg4 = await lab.startWireguardGo(fourNs, { address: '10.100.0.3/32', listenPort: PEER_PORT, peers: [peerOf(`${four.a.ip}:${GATEWAY_PORT}`)] })
    await lab.startHttpSink(sixNs, '10.100.0.2:8080')
    await lab.startHttpSink(fourNs, '10.100.0.3:8080')

    const edgeDir = join(lab.dir, 'edge')
    // No listenAddress and no host in httpsListen's default: the gateway as deployed.
    const gw = await lab.startGateway(gwNs, {
      privateKey: gatewayKey,
      listenPort: GATEWAY_PORT,
      udpIo,
      address: GATEWAY_IP,
      metricsListen: METRICS_LISTEN,
      peers: [
        { publicKey: wg6.publicKey, allowedIPs: ['10.100.0.2/32'], hostnames: ['six.example.test'], port: 8080, name: 'six' },
        { publicKey: wg4.publicKey, allowedIPs: ['10.100.0.3/32'], hostnames: ['four.example.test'], port: 8080, name: 'four' },
      ] satisfies GatewayPeerConfig[],
      edge: { dataDir: edgeDir, httpsListen: `[::]:${HTTPS_PORT}`, httpListen: null },
    })
    const status = async (): Promise<{ listen: string, peers: Array<{ publicKey: string, endpoint: string | null }> }> =>
      await gw.status() as unknown as { listen: string, peers: Array<{ publicKey: string, endpoint: string | null }> }
    t.equal((await status()).listen, `[::]:${GATEWAY_PORT}`, 'WireGuard listens on [::]')

    // Persistent keepalives make both peers handshake on their own.
    const endpoints = await waitUntil('both peers to handshake', async () => {
      const peers = (await status()).peers
      const e6 = peers.find(p => p.publicKey === wg6.publicKey)?.endpoint ?? null
      const e4 = peers.find(p => p.publicKey === wg4.publicKey)?.endpoint ?? null
      return e6 !== null && e4 !== null ? { e6, e4 } : undefined
    }, 20_000, 200)
    t.equal(endpoints.e6, `[${six.b.ip6!}]:${PEER_PORT}`, 'the IPv6 peer\'s endpoint, bracketed')
    t.equal(endpoints.e4, `${four.b.ip}:${PEER_PORT}`, 'the IPv4 peer on the dual-stack socket, as plain IPv4')

    const payload = randomBytes(1024 * 1024)
    const payloadFile = lab.file('payload.bin', payload)
    const sha256 = createHash('sha256').update(payload).digest('hex')
    const ca = join(edgeDir, 'tls', 'local-ca', 'ca.crt')
    // Clients over both families of the gateway's own loopback, each tunnel in turn.
    for (const [host, client] of [['six.example.test', '::1'], ['four.example.test', '127.0.0.1'], ['six.example.test', '127.0.0.1'], ['four.example.test', '::1']] as const) {
      const answer = await waitUntil(`HTTPS to ${host} over ${client}`, async () => {
        const r = await lab.curl(gwNs, ['-sS', '--fail', '--max-time', '10', '--cacert', ca, '--resolve', `${host}:${HTTPS_PORT}:${client.includes(':') ? `[${client}]` : client}`,
          '--data-binary', `@${payloadFile}`, `https://${host}:${HTTPS_PORT}/upload`], { timeoutMs: 20_000 })
        return r.code === 0 ? JSON.parse(r.stdout) as SinkAnswer : undefined
      }, 30_000, 250)
      t.same(answer, { bytes: payload.length, sha256 }, `1 MB to ${host} over ${client}, byte-exact through its tunnel`)
    }
    const rx6 = (await wg6.peer(gatewayPublicKey)).rxBytes
    t.ok(rx6 > 2 * payload.length, `the IPv6 tunnel carried both uploads (${rx6} bytes received by wireguard-go)`)
    t.notMatch(gw.logs(), /::ffff:/, 'no IPv4-mapped address in the gateway\'s log')
    t.match(gw.logs(), new RegExp(`"io":"${udpIo}"`), `the ${udpIo} socket was in use`)
  })
}
