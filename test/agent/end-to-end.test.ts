/**
 * Userspace mode end to end, on loopback, without root: `cloud-connect start` (control + gateway)
 * and `cloud-connect agent` as separate processes; a fresh instance token; HTTPS requests to the
 * instance's hostname answered by a local HTTP server behind the agent, byte-exact for 100 MB each
 * way; status from `agent status --json` and the status endpoint; SIGTERM -> disconnect.
 */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { decodeKey, encodeKey, publicKeyFromPrivate } from '../../proto/noise/keys.ts'
import { CLI, ROOT, connectedAgent, tunnelStatus, waitUntil } from './service.ts'
import { edgeRequest, edgeText, keystream, sha256Of } from './origin.ts'

const BODY_BYTES = 100 * 1024 * 1024

t.test('userspace agent: a fresh token, HTTPS through the gateway to a local server, 100 MB both ways, SIGTERM', async t => {
  const { dir, service, instance, agent } = await connectedAgent(t, 'myfiles')

  // The state file: 0600, the key pair generated here, the registration the API returned.
  const stateFile = join(dir, 'agent.json')
  t.equal(statSync(stateFile).mode & 0o777, 0o600, 'state file is 0600')
  const state = JSON.parse(readFileSync(stateFile, 'utf8'))
  t.equal(state.public_key, encodeKey(publicKeyFromPrivate(decodeKey(state.private_key))), 'the public key is the private key\'s')
  t.equal(state.registration.tunnel_config.interface.address, `${instance.tunnelIp}/32`)
  t.equal(state.status, 'connected')

  // `agent status --json` asks the running agent.
  const status = spawnSync(process.execPath, [CLI, 'agent', 'status', '--json', '--state', stateFile], { cwd: ROOT, encoding: 'utf8', timeout: 60_000, env: { ...process.env, CC_INSTANCE_TOKEN: '' } })
  t.equal(status.status, 0, status.stderr)
  const report = JSON.parse(status.stdout)
  t.match(report, { status: 'connected', last_error: null, subdomain: 'myfiles.localhost', custom_domains: [], public_key: state.public_key, tunnel_ip: instance.tunnelIp, mode: 'userspace', running: true })
  t.ok(report.last_handshake_at !== null, 'a handshake time')
  const endpoint = await (await fetch(`http://${state.status_listen as string}/status`)).json()
  t.equal(endpoint.status, 'connected', 'the status endpoint says the same')
  t.equal(endpoint.public_key, state.public_key)

  const edge = { port: service.httpsPort, hostname: instance.hostname, ca: service.ca }
  const small = await edgeText(edge, '/shares?x=1')
  t.equal(small.status, 200)
  t.equal(small.body, 'hello GET /shares?x=1 host=myfiles.localhost proto=https\n', 'request seen by the local server through edge, tunnel and agent')

  // 100 MB up: the server's hash of what arrived equals the hash of what was sent.
  const expected = await sha256Of(keystream('up', BODY_BYTES))
  const up = await edgeRequest(edge, 'POST', '/upload', keystream('up', BODY_BYTES), { 'content-type': 'application/octet-stream', 'content-length': String(BODY_BYTES) })
  let upBody = ''
  for await (const c of up) upBody += (c as Buffer).toString()
  t.equal(up.statusCode, 200)
  t.same(JSON.parse(upBody), expected, '100 MB upload arrives byte-exact')

  // 100 MB down.
  const down = await edgeRequest(edge, 'GET', `/download?bytes=${BODY_BYTES}&seed=down`)
  t.equal(down.statusCode, 200)
  t.same(await sha256Of(down), await sha256Of(keystream('down', BODY_BYTES)), '100 MB download arrives byte-exact')

  t.equal(await waitUntil('connected', async () => (await tunnelStatus(service, instance.token)) === 'connected' || undefined, 30_000), true, 'the API shows the tunnel connected')

  // SIGTERM: tunnel down, POST /tunnel/disconnect, exit 0, state disconnected.
  t.equal(await agent.stop('SIGTERM'), 0, 'exit status 0 on SIGTERM')
  t.match(agent.output, /"msg":"the API was told: disconnected"/)
  t.equal(await tunnelStatus(service, instance.token), 'disconnected', 'the API shows disconnected')
  t.equal(JSON.parse(readFileSync(stateFile, 'utf8')).status, 'disconnected')
  const after = spawnSync(process.execPath, [CLI, 'agent', 'status', '--json', '--state', stateFile], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 })
  t.match(JSON.parse(after.stdout), { status: 'disconnected', running: false, subdomain: 'myfiles.localhost' })
})
