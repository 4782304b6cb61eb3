/**
 * The userspace agent with two gateways, all real processes on loopback (no root needed): two
 * `cloud-connect gateway --config FILE` processes, each with its own tunnel address and edge, and
 * `cloud-connect agent` registered against a stand-in control API that places both. HTTPS through
 * each gateway reaches the local server; `kill -9` of one gateway while a download runs through the
 * other: the download completes byte-exact and the status shows that gateway down and the tunnel
 * up; a heartbeat answering a new set of gateways adds one and drops the dead one without breaking
 * a download through the one that stays.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { freshState, writeState } from '../../agent/state.ts'
import { encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../../proto/noise/keys.ts'
import { freePort, Proc, startAgent, tempDir, waitUntil } from './service.ts'
import { edgeRequest, edgeText, keystream, sha256Of, startOrigin, type EdgeTarget } from './origin.ts'

const TUNNEL_IP = '10.100.0.7'
const HOSTNAME = 'box.fleet.test'
const DOWNLOAD_BYTES = 48 * 1024 * 1024

interface FleetGateway {
  id: string
  address: string
  publicKey: string
  wgPort: number
  edge: EdgeTarget
  proc: Proc
}

async function startGateway (t: Test, dir: string, id: string, address: string, agentPublicKey: string): Promise<FleetGateway> {
  const privateKey = generatePrivateKey()
  const wgPort = await freePort({ udp: true })
  const httpsPort = await freePort()
  const dataDir = join(dir, id)
  const config = {
    privateKey: encodeKey(privateKey),
    listenPort: wgPort,
    listenAddress: '127.0.0.1',
    address,
    peers: [{ publicKey: agentPublicKey, allowedIPs: [`${TUNNEL_IP}/32`], hostnames: [HOSTNAME], port: 80, name: 'box' }],
    edge: { dataDir, httpsListen: `127.0.0.1:${httpsPort}`, httpListen: null },
  }
  const path = join(dir, `${id}.json`)
  writeFileSync(path, JSON.stringify(config), { mode: 0o600 })
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const name of Object.keys(env)) if (name.startsWith('CC_')) delete env[name]
  const proc = new Proc(id, ['gateway', '--config', path, '--log-level', 'info'], env, t)
  await proc.waitFor(/"msg":"edge listening"/, 60_000)
  const ca = readFileSync(join(dataDir, 'tls', 'local-ca', 'ca.crt'), 'utf8')
  return { id, address, publicKey: encodeKey(publicKeyFromPrivate(privateKey)), wgPort, edge: { port: httpsPort, hostname: HOSTNAME, ca }, proc }
}

function fleetPeer (g: FleetGateway, role: 'primary' | 'backup'): Record<string, unknown> {
  return { gateway_id: g.id, role, region: null, public_key: g.publicKey, endpoint: `127.0.0.1:${g.wgPort}`, allowed_ips: `${g.address}/32`, persistent_keepalive: 25 }
}

/** The control API's /v1/tunnel/* as the fleet answers them; `placed` is what register and heartbeat say. */
async function standInControl (t: Test, placed: () => Array<Record<string, unknown>>): Promise<{ url: string, heartbeats: () => number }> {
  let heartbeats = 0
  const server = http.createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      const send = (body: unknown): void => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body)) }
      const peers = placed()
      const { gateway_id: _, role: _r, region: _g, ...peer } = peers[0]
      if (req.url === '/v1/tunnel/register') {
        send({ status: 'registered', tunnel_config: { interface: { address: `${TUNNEL_IP}/32` }, peer, peers }, domains: { subdomain: HOSTNAME, custom_domains: [] } })
      } else if (req.url === '/v1/tunnel/heartbeat') {
        heartbeats++
        send({ status: 'ok', next_heartbeat_in: 1, peers })
      } else if (req.url === '/v1/tunnel/status') {
        send({ tunnel_status: 'connected', suspended_reason: null, domains: { subdomain: { domain: HOSTNAME, status: 'active' }, custom_domains: [] } })
      } else if (req.url === '/v1/tunnel/disconnect') {
        send({ status: 'disconnected' })
      } else {
        res.writeHead(404).end()
      }
    })
  })
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, heartbeats: () => heartbeats }
}

interface GatewayReport { id: string | null, role: string, connected: boolean, last_handshake_at: string | null }
interface Report { status: string, last_error: string | null, gateways: GatewayReport[] }

async function agentStatus (stateFile: string): Promise<Report> {
  const listen = JSON.parse(readFileSync(stateFile, 'utf8')).status_listen as string
  return await (await fetch(`http://${listen}/status`)).json() as Report
}

/** A download through `edge` that stops reading after the first MB until resume() is called. */
function heldDownload (edge: EdgeTarget, seed: string): { started: Promise<void>, resume: () => void, result: Promise<{ bytes: number, sha256: string }> } {
  let resume = (): void => {}
  let started = (): void => {}
  const startedPromise = new Promise<void>(resolve => { started = resolve })
  const result = (async () => {
    const res = await edgeRequest(edge, 'GET', `/download?bytes=${DOWNLOAD_BYTES}&seed=${seed}`)
    if (res.statusCode !== 200) throw new Error(`download answered ${String(res.statusCode)}`)
    const hash = createHash('sha256')
    let bytes = 0
    let held = true
    await new Promise<void>((resolve, reject) => {
      res.on('data', (c: Buffer) => {
        hash.update(c)
        bytes += c.length
        if (held && bytes >= 1024 * 1024) {
          held = false
          res.pause()
          resume = () => { res.resume() }
          started()
        }
      })
      res.on('end', resolve)
      res.on('error', reject)
      res.on('aborted', () => { reject(new Error('aborted')) })
    })
    return { bytes, sha256: hash.digest('hex') }
  })()
  result.catch(() => { started() })
  return { started: startedPromise, resume: () => { resume() }, result }
}

t.test('two gateways: HTTPS through each; kill -9 of one leaves a download through the other byte-exact and the tunnel up; a new set from the heartbeat adds and drops gateways', async t => {
  const dir = tempDir(t, 'cc-agent-fleet-')
  // The agent's key is made first: the gateways' static files name it as their peer.
  const state = freshState()
  writeState(join(dir, 'agent.json'), state)
  const origin = await startOrigin(t)
  const a = await startGateway(t, dir, 'gw-a', '10.100.0.1', state.public_key)
  const b = await startGateway(t, dir, 'gw-b', '10.100.255.254', state.public_key)
  let placed = [fleetPeer(a, 'primary'), fleetPeer(b, 'backup')]
  const control = await standInControl(t, () => placed)
  const agent = startAgent(t, { api: control.url, token: 'fleet-test-instance-token', dir, target: `http://127.0.0.1:${origin.port}` })
  const stateFile = join(dir, 'agent.json')
  await agent.waitFor(/"msg":"tunnel up: the gateway answers"/, 90_000)
  await waitUntil('both gateways connected', async () => (await agentStatus(stateFile)).gateways.every(g => g.connected) || undefined, 30_000)
  const before = await agentStatus(stateFile)
  t.match(before, { status: 'connected', last_error: null, gateways: [{ id: 'gw-a', role: 'primary', connected: true }, { id: 'gw-b', role: 'backup', connected: true }] })
  t.ok(before.gateways.every(g => g.last_handshake_at !== null), 'a handshake with each gateway')

  for (const g of [a, b]) {
    const answer = await edgeText(g.edge, `/through-${g.id}`)
    t.equal(answer.status, 200, `HTTPS through ${g.id}`)
    t.equal(answer.body, `hello GET /through-${g.id} host=${HOSTNAME} proto=https\n`, `${g.id} reaches the local server through its own peer`)
  }

  // A download through B, held after its first MB; then A is killed outright.
  const viaB = heldDownload(b.edge, 'via-b')
  await viaB.started
  a.proc.child.kill('SIGKILL')
  await a.proc.exited
  const oneDown = await waitUntil('gw-a down in the status', async () => {
    const r = await agentStatus(stateFile)
    return r.gateways[0].connected ? undefined : r
  }, 30_000)
  t.match(oneDown, { status: 'connected', last_error: null, gateways: [{ id: 'gw-a', connected: false }, { id: 'gw-b', connected: true }] }, 'one gateway down, the tunnel still up')
  viaB.resume()
  t.same(await viaB.result, await sha256Of(keystream('via-b', DOWNLOAD_BYTES)), 'the download through gw-b completes byte-exact')
  t.equal((await edgeText(b.edge, '/after')).status, 200, 'new requests through gw-b')
  t.ok(agent.running, 'the agent keeps running')
  t.notMatch(agent.output, /"msg":"no answer from the gateway: reconnecting"/, 'no full reconnect: the other gateway carried the tunnel')

  // Re-placed by control: gw-b primary, a new gw-c backup; gw-a gone. A download through gw-b spans the change.
  const c = await startGateway(t, dir, 'gw-c', '10.100.255.253', state.public_key)
  const spanning = heldDownload(b.edge, 'spanning')
  await spanning.started
  placed = [fleetPeer(b, 'primary'), fleetPeer(c, 'backup')]
  const after = await waitUntil('the new set in the status, gw-c connected', async () => {
    const r = await agentStatus(stateFile)
    return r.gateways.map(g => g.id).join() === 'gw-b,gw-c' && r.gateways.every(g => g.connected) ? r : undefined
  }, 30_000)
  t.match(after, { status: 'connected', gateways: [{ id: 'gw-b', role: 'primary' }, { id: 'gw-c', role: 'backup' }] })
  t.match(agent.output, /"msg":"gateways changed: tunnel reconfigured"/)
  spanning.resume()
  t.same(await spanning.result, await sha256Of(keystream('spanning', DOWNLOAD_BYTES)), 'the download through gw-b, across the change, byte-exact')
  const throughC = await edgeText(c.edge, '/through-gw-c')
  t.equal(throughC.body, `hello GET /through-gw-c host=${HOSTNAME} proto=https\n`, 'HTTPS through the added gateway')
  const saved = JSON.parse(readFileSync(stateFile, 'utf8'))
  t.same(saved.registration.tunnel_config.peers.map((p: { gateway_id: string }) => p.gateway_id), ['gw-b', 'gw-c'], 'the state file follows the heartbeat')
  t.ok(control.heartbeats() > 0)

  t.equal(await agent.stop('SIGTERM'), 0, 'exit status 0 on SIGTERM')
})
