/**
 * End to end on real components, the way a user runs it: `cloud-connect start` (control + gateway,
 * embedded PGlite) in a namespace of its own; an Erugo-like container in another (wireguard-go,
 * configured from nothing but POST /v1/tunnel/register's answer, with nginx on port 80 in front of
 * an upload sink and a WebSocket echo); curl and a `ws` client beside the service.
 *
 *   ns gw:   cloud-connect start (API :8080, WireGuard :51820, HTTPS :8443), curl, ws client
 *      | veth 198.18.x.0/30
 *   ns peer: wireguard-go (tunnel address from control), nginx :80 -> sink, ws echo
 *
 * Proves: register -> verify (outbox link) -> login -> instance -> the container's own key
 * registered and its tunnel up; 100 MB down and 1 GiB up byte-exact through TLS, our WireGuard and
 * our TCP stack; WebSocket echo; `connected` from the gateway's handshake reports, `disconnected`
 * once the container's WireGuard is gone (CC_TUNNEL_STATUS_WINDOW shortened), and the 502 page
 * meanwhile. Needs root, wireguard-go and nginx: skipped with the reason otherwise, failed under
 * CC_REQUIRE_INTEROP=1.
 */
import t from 'tap'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { Lab, requireLab } from '../helpers/lab.ts'
import { writeGeneratedFile } from '../helpers/lab/generator.ts'
import {
  ApiClient, connectPeer, createInstance, downloadSha256, httpsArgs, httpsFetch, renewHandshake, listenEnv, serviceEnv, signUp,
  startAllInOne, startOrigin, uploadGenerated, waitForHttps, waitForTunnelStatus, wsEcho,
} from '../helpers/lab/e2e.ts'

const BASE_DOMAIN = 'cc.test'
const API_PORT = 8080
const WG_PORT = 51820
const HTTPS_PORT = 8443
const METRICS = '127.0.0.1:9091'
const STATUS_WINDOW_S = 10
const DOWNLOAD_BYTES = 100_000_000
const UPLOAD_BYTES = 1 << 30

t.test('cloud-connect start: sign-up to a container served over HTTPS, then offline', async t => {
  if (!requireLab(t, ['nginx', 'bash', 'sha256sum'])) return
  const lab = await Lab.create(t)
  const gwNs = await lab.namespace('gw')
  const peerNs = await lab.namespace('peer')
  const link = await lab.link(gwNs, peerNs)
  const dataDir = mkdtempSync(join(tmpdir(), 'cc-e2e-start-'))
  const files = existsSync('/dev/shm') ? join('/dev/shm', `cc-e2e-${lab.runId}`) : join(lab.dir, 'files')
  mkdirSync(files, { recursive: true })
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }); rmSync(files, { recursive: true, force: true }) })
  const bigSha = writeGeneratedFile(join(files, 'big.bin'), DOWNLOAD_BYTES, 11)
  writeFileSync(join(files, 'hello.txt'), 'hello from the container\n')

  const svc = await startAllInOne(lab, gwNs, serviceEnv({
    CC_DATA_DIR: dataDir,
    CC_BASE_DOMAIN: BASE_DOMAIN,
    ...listenEnv(link.a.ip, { api: API_PORT, wg: WG_PORT, https: HTTPS_PORT }),
    CC_HTTP_PORT: '8000',
    CC_METRICS_LISTEN: METRICS,
    CC_TUNNEL_STATUS_WINDOW: String(STATUS_WINDOW_S),
  }))
  t.equal(svc.httpsPort, HTTPS_PORT)
  t.equal(svc.outbox, join(dataDir, 'outbox'))
  const api = new ApiClient(lab, gwNs, svc.api)

  // The account owner, on the API.
  const access = await signUp(api, svc.outbox, 'owner@example.com')
  const inst = await createInstance(api, access, 'myfiles')
  t.equal(inst.fullDomain, `myfiles.${BASE_DOMAIN}`)
  t.equal(inst.serverPublicKey, svc.publicKey, 'credentials name the running gateway')
  t.equal(inst.serverEndpoint, `${link.a.ip}:${WG_PORT}`)

  // The container, from its own namespace: own key, register, configure wireguard-go from the answer.
  const peerApi = new ApiClient(lab, peerNs, `http://${link.a.ip}:${API_PORT}`)
  const peer = await connectPeer(lab, peerApi, inst.token)
  const gatewayPeer = { public_key: svc.publicKey, endpoint: `${link.a.ip}:${WG_PORT}`, allowed_ips: '10.100.0.1/32', persistent_keepalive: 25 }
  t.same(peer.config, {
    interface: { address: `${inst.tunnelIp}/32` },
    peer: gatewayPeer,
    // The fleet's list: here the one gateway of `start`, as the primary.
    peers: [{ ...gatewayPeer, gateway_id: peer.config.peers?.[0]?.gateway_id, role: 'primary', region: null }],
  }, 'tunnel_config: everything wireguard-go needs')
  t.match(peer.config.peers?.[0]?.gateway_id, /^[A-Za-z0-9._:-]+$/, 'the gateway named by its id')
  t.same(peer.domains, { subdomain: `myfiles.${BASE_DOMAIN}`, custom_domains: [] })
  await startOrigin(lab, peerNs, files, { keepaliveSeconds: 5 })

  const host = `myfiles.${BASE_DOMAIN}`
  const hello = await waitForHttps(lab, gwNs, host, HTTPS_PORT, '/hello.txt', svc.ca)
  t.equal(hello.body, 'hello from the container\n', 'HTTPS through the edge, our WireGuard and our TCP stack')
  t.match(hello.headers, /^server: nginx/mi, 'answered by the container\'s nginx')
  // The status window is short here: read it right after a handshake, whatever the machine's load.
  await renewHandshake(lab, gwNs, METRICS, peer)
  await waitForTunnelStatus(peerApi, inst.token, 'connected', 5000)
  const listed = await api.ok('GET', '/v1/instances', 200, { token: access })
  t.match(listed.instances, [{ id: inst.id, status: 'connected', tunnel_ip: inst.tunnelIp }], 'GET /v1/instances reads connected')
  t.not(listed.instances[0].last_seen, null, 'last_seen from the tunnel')

  const down = await downloadSha256(lab, gwNs, httpsArgs(host, HTTPS_PORT, '/big.bin', svc.ca), 180)
  t.equal(down.bytes, DOWNLOAD_BYTES)
  t.equal(down.sha256, bigSha, '100 MB download byte-exact')
  t.comment(`download: ${(down.bytes / down.seconds / 1e6).toFixed(1)} MB/s over HTTP/${down.httpVersion}`)

  const up = await uploadGenerated(lab, gwNs, httpsArgs(host, HTTPS_PORT, '/upload', svc.ca), UPLOAD_BYTES, 12, 300)
  const lastPooledRequestAt = Date.now()
  t.equal(up.sink.bytes, UPLOAD_BYTES, '1 GiB reached the sink behind the tunnel')
  t.equal(up.sink.sha256, up.sent, 'byte-exact (SHA-256 of the stream sent = of the body received)')
  t.comment(`upload: ${(UPLOAD_BYTES / up.seconds / 1e6).toFixed(1)} MB/s (chunked)`)

  const ws = await wsEcho(lab, gwNs, `wss://${host}:${HTTPS_PORT}/ws`, svc.ca)
  t.same(ws, { ok: true, messages: 202, bytes: ws.bytes }, `WebSocket echo through the edge${ws.error !== undefined ? `: ${ws.error}` : ''}`)
  t.ok(ws.bytes > 1_000_000)

  // A fresh handshake first (the container re-applies its peer), so `connected` is current...
  await renewHandshake(lab, gwNs, METRICS, peer)
  await waitForTunnelStatus(peerApi, inst.token, 'connected', 5000)

  // ...then the container goes away. Its nginx has closed our idle keep-alive connection by now
  // (keepalive 5 s), so the next request opens a new one, which cannot complete: 502.
  await sleep(Math.max(0, lastPooledRequestAt + 6000 - Date.now()))
  await peer.wg.stop()
  const stoppedAt = Date.now()
  await waitForTunnelStatus(peerApi, inst.token, 'disconnected', (STATUS_WINDOW_S + 10) * 1000)
  t.comment(`disconnected ${((Date.now() - stoppedAt) / 1000).toFixed(1)} s after wireguard-go stopped (window ${STATUS_WINDOW_S} s)`)
  const after = await api.ok('GET', '/v1/instances', 200, { token: access })
  t.equal(after.instances[0].status, 'disconnected', 'GET /v1/instances reads disconnected')
  const offline = await httpsFetch(lab, gwNs, host, HTTPS_PORT, '/hello.txt', svc.ca, [], 45)
  t.equal(offline.status, 502, 'the edge answers 502 while the container is away')
  t.match(offline.body, /This Erugo instance is offline/)
  t.match(offline.body, new RegExp(host.replace(/\./g, '\\.')), 'the page names the address')
  t.match(offline.headers, /^cache-control: no-store/mi)
  t.ok(svc.process.running, 'the service is still running')
})
