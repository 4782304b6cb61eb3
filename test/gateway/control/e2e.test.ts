/**
 * The real thing, without root: the control app on PGlite with its RPC listener, and a real
 * Gateway on loopback UDP run by the HTTP control plane (and, second, by control in-process as
 * `cloud-connect start` does). A container's key registered through the API becomes a peer; its
 * handshake, reported by the gateway, makes the instance `connected`; regenerating its token or
 * deleting it removes the peer from the gateway within 5 s.
 */
import t, { type Test } from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { loadGatewayEnv } from '../../../gateway/control/env.ts'
import { HttpControlPlane } from '../../../gateway/control/http-client.ts'
import { startGatewayWithControl, type RunningGateway } from '../../../gateway/control/run.ts'
import { SnapshotStore } from '../../../gateway/control/store.ts'
import type { ControlPlane } from '../../../proto/rpc/index.ts'
import { openTestDatabase, bearer } from '../../control/harness.ts'
import { mustCreate, newUser } from '../../control/routes/tunnel-fixtures.ts'
import { SECRET, startRpc, type RpcHarness } from '../../control/rpc/fixtures.ts'
import { newKeyPair, repliesTo, startClient, until } from './harness.ts'

const silent = pino({ level: 'silent' })
const REMOVAL_LIMIT_MS = 5_000

async function runGateway (t: Test, plane: ControlPlane, id: string): Promise<RunningGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'cc-e2e-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const settings = loadGatewayEnv({ CC_DATA_DIR: dir, CC_WG_HOST: '127.0.0.1', CC_WG_PORT: '0', CC_EDGE: '0', CC_GATEWAY_ID: id })
  const running = await startGatewayWithControl({ plane, settings, logger: silent, store: new SnapshotStore(settings.snapshotFile), reportIntervalMs: 200 })
  if (running === null) throw new Error('gateway did not start')
  t.teardown(() => running.stop(0))
  return running
}

async function tunnelStatus (h: RpcHarness, token: string): Promise<string> {
  return (await h.request('GET', '/v1/tunnel/status', undefined, bearer(token))).body?.tunnel_status
}

t.test('HTTP control plane: register -> peer, handshake -> connected, regenerate and delete -> peer gone within 5 s', async t => {
  const db = await openTestDatabase(t, 'pglite')
  // A long wait: only a change can end the gateway's long-poll quickly.
  const h = await startRpc(t, db, { waitMs: 25_000 })
  const { gateway } = await runGateway(t, new HttpControlPlane({ url: h.server!.url, secret: SECRET }), 'gw-e2e')
  const gatewayKey = gateway.device.publicKey.toString('base64')
  const port = Number(gateway.listen.split(':')[1])
  await until('the gateway said hello', async () => (await db('gateways').where({ id: 'gw-e2e' }).first()) !== undefined)

  const user = await newUser(h, 'e2e')
  const inst = await mustCreate(t, h, user.token, 'e2e-one')
  t.equal(inst.body.credentials.wireguard.server_public_key, gatewayKey, 'POST /v1/instances hands out the real gateway key')
  t.equal(inst.body.credentials.wireguard.server_endpoint, `connect.erugo.test:${port}`, 'and the port it listens on')

  const containerKey = newKeyPair()
  const reg = await h.request('POST', '/v1/tunnel/register', { public_key: containerKey.publicKey }, bearer(inst.token))
  t.equal(reg.status, 200)
  t.equal(reg.body.tunnel_config.peer.public_key, gatewayKey)
  const added = await until('the peer on the gateway', () => gateway.device.peer(containerKey.publicKey) !== undefined, REMOVAL_LIMIT_MS)
  t.ok(added < REMOVAL_LIMIT_MS, `peer added ${added} ms after registration`)
  t.same(gateway.status().peers[0].allowedIPs, [`${inst.tunnelIp}/32`])
  t.same(gateway.routes.map(r => r.hostnames), [['e2e-one.erugo.test']])

  t.equal(await tunnelStatus(h, inst.token), 'pending', 'registered, no handshake yet')
  // As a container does (spec, Flow 2): register first, then bring the interface up.
  const container = await startClient(t, gatewayKey, port, { privateKey: containerKey.privateKey, keepalive: 1 })
  container.ping(inst.tunnelIp, 1)
  await until('an echo reply through the tunnel', () => repliesTo(container, 1) === 1)
  await until('connected from the gateway\'s handshake report', async () => await tunnelStatus(h, inst.token) === 'connected')
  const listed = (await h.request('GET', '/v1/instances', undefined, bearer(user.token))).body.instances[0]
  t.equal(listed.status, 'connected')
  t.ok(Math.abs(Date.parse(listed.last_seen) - Date.now()) < 10_000, 'last_seen from the tunnel')

  const regen = await h.request('POST', `/v1/instances/${inst.id}/regenerate-token`, undefined, bearer(user.token))
  t.equal(regen.status, 200)
  const dropped = await until('the peer gone after regenerate-token', () => gateway.device.peer(container.publicKey) === undefined, REMOVAL_LIMIT_MS)
  t.ok(dropped < REMOVAL_LIMIT_MS, `regenerate-token: peer removed in ${dropped} ms`)
  t.equal(await tunnelStatus(h, regen.body.instance_token), 'pending', 'must register again')
  container.ping(inst.tunnelIp, 2)
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(repliesTo(container, 2), 0, 'the old key is not served any more')

  // Re-register with a new key, then delete the instance.
  const again = await startClient(t, gatewayKey, port)
  t.equal((await h.request('POST', '/v1/tunnel/register', { public_key: again.publicKey }, bearer(regen.body.instance_token))).status, 200)
  await until('the new key on the gateway', () => gateway.device.peer(again.publicKey) !== undefined, REMOVAL_LIMIT_MS)
  t.equal((await h.request('DELETE', `/v1/instances/${inst.id}`, undefined, bearer(user.token))).status, 204)
  const deleted = await until('the peer gone after delete', () => gateway.device.peer(again.publicKey) === undefined, REMOVAL_LIMIT_MS)
  t.ok(deleted < REMOVAL_LIMIT_MS, `delete: peer removed in ${deleted} ms`)
  t.same(gateway.routes, [], 'no routes left')
})

t.test('in-process control plane (as cloud-connect start wires it): same behaviour', async t => {
  const db = await openTestDatabase(t, 'pglite')
  const h = await startRpc(t, db, { waitMs: 25_000, listen: false })
  const { gateway } = await runGateway(t, h.rpc, 'gw-local')
  const gatewayKey = gateway.device.publicKey.toString('base64')
  const port = Number(gateway.listen.split(':')[1])
  await until('hello recorded', async () => (await db('gateways').where({ id: 'gw-local' }).first()) !== undefined)
  const user = await newUser(h, 'inproc')
  const inst = await mustCreate(t, h, user.token, 'in-process')
  t.equal(inst.body.credentials.wireguard.server_public_key, gatewayKey)
  const container = await startClient(t, gatewayKey, port)
  await h.request('POST', '/v1/tunnel/register', { public_key: container.publicKey }, bearer(inst.token))
  await until('peer added', () => gateway.device.peer(container.publicKey) !== undefined, REMOVAL_LIMIT_MS)
  container.ping(inst.tunnelIp, 1)
  await until('reply', () => repliesTo(container, 1) === 1)
  await until('connected', async () => await tunnelStatus(h, inst.token) === 'connected')
  t.equal((await h.request('DELETE', `/v1/instances/${inst.id}`, undefined, bearer(user.token))).status, 204)
  const ms = await until('peer removed', () => gateway.device.peer(container.publicKey) === undefined, REMOVAL_LIMIT_MS)
  t.ok(ms < REMOVAL_LIMIT_MS, `removed in ${ms} ms`)
})
