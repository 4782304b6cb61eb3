/**
 * End to end, split deployment on real Postgres: `cloud-connect control` and `cloud-connect
 * gateway --control URL` as two processes in the service namespace, two Erugo-like containers
 * (wireguard-go + nginx) in namespaces of their own. Then the RPC faults:
 *
 *   - the gateway restarts: every peer and route comes back from control and traffic resumes;
 *   - control stops: the gateway keeps serving the routes it has; control comes back;
 *   - a token is regenerated / an instance deleted: its peer leaves the gateway within 5 s;
 *   - a container goes away: `disconnected`, and the 502 page meanwhile.
 *
 *   ns gw: control (API :8080, RPC 127.0.0.1:8081) + gateway (WireGuard :51820, HTTPS :8443), curl
 *     | veth                           | veth
 *   ns peera: wireguard-go, nginx     ns peerb: wireguard-go, nginx
 *
 * Postgres: a fresh database on CC_TEST_DATABASE_URL (dropped at the end), reached from inside the
 * namespace through a Unix-socket relay (PostgresRelay). Without the URL the test is skipped with
 * the reason (failed under CC_REQUIRE_INTEROP=1), like the lab itself.
 */
import t from 'tap'
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { postgresOrSkip } from '../helpers/postgres.ts'
import { Lab, requireLab, waitUntil } from '../helpers/lab.ts'
import { writeGeneratedFile } from '../helpers/lab/generator.ts'
import {
  ApiClient, connectPeer, createInstance, downloadSha256, freshDatabase, gatewayStatus, httpsArgs, httpsCurlExit, httpsFetch, logLine, PostgresRelay, renewHandshake, serviceEnv,
  signUp, startControl, startGatewayProcess, startOrigin, twoContainerLab, uploadGenerated, waitForHttps, waitForTunnelStatus, wsEcho,
  type ControlProcess, type GatewayProcess,
} from '../helpers/lab/e2e.ts'

const BASE_DOMAIN = 'cc.test'
const API_PORT = 8080
const RPC = '127.0.0.1:8081'
const WG_PORT = 51820
const HTTPS_PORT = 8443
const METRICS = '127.0.0.1:9091'
const SECRET = randomBytes(32).toString('base64url')
const STATUS_WINDOW_S = 10
const FILE_BYTES = 10_000_000

t.test('control + gateway --control on Postgres: the flow, then RPC faults', async t => {
  if (!requireLab(t, ['nginx', 'bash', 'sha256sum'])) return
  const DATABASE_URL = await postgresOrSkip(t, 'postgres', 'this test needs a real Postgres')
  if (DATABASE_URL === undefined) return
  const lab = await Lab.create(t)
  const { gwNs, nsA, nsB, publicIp } = await twoContainerLab(lab)

  const dirs = ['control', 'gateway', 'pg'].map(role => mkdtempSync(join(tmpdir(), `cc-e2e-split-${role}-`)))
  const [controlDir, gatewayDir, relayDir] = dirs
  const files = existsSync('/dev/shm') ? join('/dev/shm', `cc-e2e-${lab.runId}`) : join(lab.dir, 'files')
  for (const who of ['a', 'b']) mkdirSync(join(files, who), { recursive: true })
  t.teardown(() => { for (const d of [...dirs, files]) rmSync(d, { recursive: true, force: true }) })
  const fileSha = writeGeneratedFile(join(files, 'a', 'file.bin'), FILE_BYTES, 21)
  writeFileSync(join(files, 'a', 'whoami.txt'), 'container A\n')
  writeFileSync(join(files, 'b', 'whoami.txt'), 'container B\n')

  const database = await freshDatabase(t, DATABASE_URL)
  const relay = await PostgresRelay.start(relayDir, Number(new URL(DATABASE_URL).port || 5432))
  t.teardown(() => relay.close())
  const controlEnv = serviceEnv({
    DATABASE_URL: relay.urlFor(database),
    CC_DATA_DIR: controlDir,
    CC_BASE_DOMAIN: BASE_DOMAIN,
    CC_API_HOST: '0.0.0.0',
    CC_API_PORT: String(API_PORT),
    CC_PUBLIC_URL: `http://${publicIp}:${API_PORT}`,
    CC_RPC_HOST: RPC.split(':')[0],
    CC_RPC_PORT: RPC.split(':')[1],
    CC_GATEWAY_SECRET: SECRET,
    CC_TUNNEL_STATUS_WINDOW: String(STATUS_WINDOW_S),
  })
  const gatewayEnv = serviceEnv({
    CC_DATA_DIR: gatewayDir,
    CC_GATEWAY_SECRET: SECRET,
    CC_GATEWAY_ID: 'gw-e2e',
    CC_WG_HOST: '0.0.0.0',
    CC_WG_PORT: String(WG_PORT),
    CC_GATEWAY_ENDPOINT: `${publicIp}:${WG_PORT}`,
    CC_EDGE_HOST: '0.0.0.0',
    CC_HTTPS_PORT: String(HTTPS_PORT),
    CC_HTTP_PORT: '8000',
    CC_METRICS_LISTEN: METRICS,
  })
  let control: ControlProcess = await startControl(lab, gwNs, controlEnv)
  let gateway: GatewayProcess = await startGatewayProcess(lab, gwNs, `http://${RPC}`, gatewayEnv)
  await logLine(gateway.process, 'control plane accepted hello')
  const ca = gateway.ca!
  t.ok(ca, 'the gateway has a local CA')

  const api = new ApiClient(lab, gwNs, control.api)
  // Two owners (the free plan allows one instance each).
  const access = await signUp(api, join(controlDir, 'outbox'), 'alpha@example.com')
  const accessB = await signUp(api, join(controlDir, 'outbox'), 'bravo@example.com')
  const instA = await createInstance(api, access, 'alpha')
  const instB = await createInstance(api, accessB, 'bravo')
  t.equal(instA.serverPublicKey, gateway.publicKey, 'credentials carry the key the gateway said hello with')
  t.equal(instA.serverEndpoint, `${publicIp}:${WG_PORT}`, '... and its endpoint')
  const apiFrom = (ns: string): ApiClient => new ApiClient(lab, ns, `http://${publicIp}:${API_PORT}`)
  const peerA = await connectPeer(lab, apiFrom(nsA), instA.token)
  const peerB = await connectPeer(lab, apiFrom(nsB), instB.token)
  await startOrigin(lab, nsA, join(files, 'a'), { keepaliveSeconds: 5 })
  await startOrigin(lab, nsB, join(files, 'b'), { keepaliveSeconds: 5 })
  const hostA = `alpha.${BASE_DOMAIN}`
  const hostB = `bravo.${BASE_DOMAIN}`
  const whoami = async (host: string): Promise<string> => (await waitForHttps(lab, gwNs, host, HTTPS_PORT, '/whoami.txt', ca, 45_000)).body
  const status = async (): Promise<Awaited<ReturnType<typeof gatewayStatus>>> => await gatewayStatus(lab, gwNs, METRICS)

  await t.test('the flow: both containers served, 10 MB each way byte-exact, WebSocket, connected', async t => {
    t.equal(await whoami(hostA), 'container A\n')
    t.equal(await whoami(hostB), 'container B\n')
    // Right after fresh handshakes (the status window is short here).
    await renewHandshake(lab, gwNs, METRICS, peerA)
    await renewHandshake(lab, gwNs, METRICS, peerB)
    await waitForTunnelStatus(apiFrom(nsA), instA.token, 'connected', 5000)
    await waitForTunnelStatus(apiFrom(nsB), instB.token, 'connected', 5000)
    for (const [token, subdomain] of [[access, 'alpha'], [accessB, 'bravo']]) {
      const listed = await api.ok('GET', '/v1/instances', 200, { token })
      t.match(listed.instances, [{ subdomain, status: 'connected' }], `${subdomain}: connected`)
    }
    const down = await downloadSha256(lab, gwNs, httpsArgs(hostA, HTTPS_PORT, '/file.bin', ca), 120)
    t.equal(down.sha256, fileSha, 'download byte-exact')
    const up = await uploadGenerated(lab, gwNs, httpsArgs(hostA, HTTPS_PORT, '/upload', ca), FILE_BYTES, 22, 120)
    t.same(up.sink, { bytes: FILE_BYTES, sha256: up.sent }, 'upload byte-exact')
    const ws = await wsEcho(lab, gwNs, `wss://${hostA}:${HTTPS_PORT}/ws`, ca)
    t.ok(ws.ok, `WebSocket echo${ws.error !== undefined ? `: ${ws.error}` : ''}`)
  })

  await t.test('gateway restarted: peers and routes come back from control, traffic resumes', async t => {
    await gateway.process.stop(10_000)
    t.equal(gateway.process.exitStatus?.code, 0, 'clean exit')
    // The stored snapshot would also bring them back: remove it, so only control can.
    rmSync(join(gatewayDir, 'gateway-snapshot.json'), { force: true })
    const restartedAt = Date.now()
    gateway = await startGatewayProcess(lab, gwNs, `http://${RPC}`, gatewayEnv)
    t.equal(gateway.publicKey, instA.serverPublicKey, 'same key from the data dir')
    const applied = await logLine(gateway.process, 'configuration applied')
    t.equal(applied.source, 'control', 'from control')
    t.equal(applied.peers, 2)
    const s = await status()
    t.same(s.peers.map(p => p.publicKey).sort(), [peerA.publicKey, peerB.publicKey].sort(), 'both peers')
    t.equal(s.routes, 2, 'both routes')
    t.equal(await whoami(hostA), 'container A\n', 'A answers again')
    t.equal(await whoami(hostB), 'container B\n', 'B answers again')
    t.comment(`traffic resumed ${((Date.now() - restartedAt) / 1000).toFixed(1)} s after the restart`)
  })

  await t.test('control stopped: the gateway keeps serving existing routes', async t => {
    await control.process.stop(10_000)
    t.equal(control.process.exitStatus?.code, 0, 'control: clean exit')
    const downFrom = gateway.process.output().length
    await logLine(gateway.process, 'control plane unreachable: serving the last configuration', 60_000)
    t.equal(await whoami(hostA), 'container A\n')
    t.equal(await whoami(hostB), 'container B\n')
    const down = await downloadSha256(lab, gwNs, httpsArgs(hostA, HTTPS_PORT, '/file.bin', ca), 120)
    t.equal(down.sha256, fileSha, 'a download while control is away')
    t.equal((await status()).peers.length, 2)
    control = await startControl(lab, gwNs, controlEnv)
    await waitUntil('a hello to the new control', () => gateway.process.output().slice(downFrom).includes('"msg":"control plane accepted hello"'), 60_000, 200)
    t.pass('the gateway said hello to the restarted control')
  })

  await t.test('token regenerated: the peer leaves the gateway within 5 s', async t => {
    const before = (await status()).configVersion
    const regenerated = await api.ok('POST', `/v1/instances/${instA.id}/regenerate-token`, 200, { token: access })
    const at = Date.now()
    t.not(regenerated.instance_token, instA.token)
    await waitUntil('peer A gone', async () => !(await status()).peers.some(p => p.publicKey === peerA.publicKey), 5000, 100)
    t.comment(`gone after ${Date.now() - at} ms`)
    const s = await status()
    t.ok(s.configVersion > before, 'a newer configuration')
    t.equal(s.routes, 1)
    t.equal(await httpsCurlExit(lab, gwNs, hostA, HTTPS_PORT, '/whoami.txt', ca), 35, 'the address is not served any more (no certificate: TLS refused)')
    t.equal((await apiFrom(nsA).call('GET', '/v1/tunnel/status', { token: instA.token })).status, 401, 'the old token is refused')
  })

  await t.test('container B goes away: disconnected, 502 meanwhile; deleted: the peer leaves within 5 s', async t => {
    // B's nginx closes our idle keep-alive connection (5 s) before its tunnel goes.
    const idleSince = Date.now()
    await renewHandshake(lab, gwNs, METRICS, peerB)
    await waitForTunnelStatus(apiFrom(nsB), instB.token, 'connected', 5000)
    await sleep(Math.max(0, idleSince + 6000 - Date.now()))
    await peerB.wg.stop()
    const [offline] = await Promise.all([
      httpsFetch(lab, gwNs, hostB, HTTPS_PORT, '/whoami.txt', ca, [], 45),
      waitForTunnelStatus(apiFrom(nsB), instB.token, 'disconnected', (STATUS_WINDOW_S + 10) * 1000),
    ])
    t.equal(offline.status, 502, '502 while the container is away')
    t.match(offline.body, /This Erugo instance is offline/)
    t.match((await api.ok('GET', '/v1/instances', 200, { token: accessB })).instances, [{ subdomain: 'bravo', status: 'disconnected' }])

    await api.ok('DELETE', `/v1/instances/${instB.id}`, 204, { token: accessB })
    const at = Date.now()
    await waitUntil('peer B gone', async () => (await status()).peers.length === 0, 5000, 100)
    t.comment(`gone after ${Date.now() - at} ms`)
    t.equal((await status()).routes, 0)
    t.equal(await httpsCurlExit(lab, gwNs, hostB, HTTPS_PORT, '/whoami.txt', ca), 35, 'the address is not served any more')
  })

  for (const p of [gateway.process, control.process]) await p.stop(10_000)
  t.equal(gateway.process.exitStatus?.code, 0, 'gateway: clean exit')
  t.equal(control.process.exitStatus?.code, 0, 'control: clean exit')
})
