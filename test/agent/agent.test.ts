/**
 * The Agent's state machine against a scripted in-process API and a fake tunnel: key rotation on
 * KEY_IN_USE, 402 as state error with retries, heartbeats at the interval the API asks for, 401 on
 * a heartbeat as a fatal error without goodbye, an unusable tunnel_config as EXIT_REFUSED, and the
 * order of a graceful stop (tunnel down first, then disconnect).
 */
import t, { type Test } from 'tap'
import { until } from '../helpers/until.ts'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { Agent } from '../../agent/agent.ts'
import { loadSettings } from '../../agent/settings.ts'
import type { GatewayHealth, Tunnel, TunnelHealth, TunnelPlan } from '../../agent/tunnel.ts'
import { encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../../proto/noise/keys.ts'

const GATEWAY_KEY = encodeKey(publicKeyFromPrivate(generatePrivateKey()))
const REGISTERED = {
  status: 'registered',
  tunnel_config: { interface: { address: '10.100.0.7/32' }, peer: { public_key: GATEWAY_KEY, endpoint: '127.0.0.1:51820', allowed_ips: '10.100.0.1/32', persistent_keepalive: 25 } },
  domains: { subdomain: 'box.erugo.test', custom_domains: [] },
}

interface Reply { status: number, body: unknown }
type Script = (path: string, body: any) => Reply // eslint-disable-line @typescript-eslint/no-explicit-any

async function fakeApi (t: Test, script: Script): Promise<{ url: string, calls: string[] }> {
  const calls: string[] = []
  const server = http.createServer((req, res) => {
    let text = ''
    req.on('data', (c: Buffer) => { text += c.toString() })
    req.on('end', () => {
      const path = (req.url ?? '').replace(/^\/v1/, '')
      const body = text === '' ? undefined : JSON.parse(text)
      calls.push(`${path}${body?.public_key === undefined ? '' : ` ${body.public_key as string}`}`)
      const reply = script(path, body)
      res.writeHead(reply.status, { 'content-type': 'application/json' }).end(JSON.stringify(reply.body))
    })
  })
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, calls }
}

const fail = (status: number, code: string): Reply => ({ status, body: { error: { code, message: `${code} message`, details: {} } } })
const ok = (path: string): Reply => path === '/tunnel/register'
  ? { status: 200, body: REGISTERED }
  : path === '/tunnel/heartbeat'
    ? { status: 200, body: { status: 'ok', next_heartbeat_in: 5 } }
    : path === '/tunnel/disconnect'
      ? { status: 200, body: { status: 'disconnected' } }
      : { status: 200, body: { tunnel_status: 'connected', domains: { subdomain: { domain: 'box.erugo.test', status: 'active' }, custom_domains: [{ domain: 'share.example.com', status: 'active', ssl_status: 'active' }] } } }

const STATUS_WITHOUT_DOMAINS: Reply = { status: 200, body: { tunnel_status: 'connected', domains: { subdomain: { domain: 'box.erugo.test', status: 'active' }, custom_domains: [] } } }

class FakeTunnel implements Tunnel {
  readonly mode = 'userspace' as const
  alive = true
  /** Gateway addresses that do not answer. */
  readonly dead = new Set<string>()
  readonly plans: TunnelPlan[] = []
  constructor (readonly key: string, readonly log: string[]) {}
  async apply (plan: TunnelPlan): Promise<void> {
    this.log.push(`apply ${plan.address}`)
    this.plans.push(plan)
  }

  async reconnect (gatewayPublicKey?: string): Promise<void> { this.log.push(gatewayPublicKey === undefined ? 'reconnect' : `reconnect ${gatewayPublicKey}`) }
  async probe (_timeoutMs: number, gatewayAddress?: string): Promise<number | null> {
    await new Promise(resolve => setTimeout(resolve, 5))
    return this.alive && (gatewayAddress === undefined || !this.dead.has(gatewayAddress)) ? 1 : null
  }

  health (): TunnelHealth { return { lastHandshakeAt: Date.now(), lastReceiveAt: null, endpoint: '127.0.0.1:51820', rxBytes: 0, txBytes: 0 } }
  gateways (): GatewayHealth[] { return [] }
  async close (): Promise<void> { this.log.push('close') }
}

function setup (t: Test, api: string): { agent: Agent, log: string[], tunnels: FakeTunnel[], stateFile: string } {
  const dir = mkdtempSync(join(tmpdir(), 'cc-agent-unit-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const stateFile = join(dir, 'agent.json')
  const settings = loadSettings({ api, token: 'eyJ0eXAiOiJpbnN0YW5jZSJ9.e30.sig', state: stateFile, 'status-listen': 'off', 'probe-interval': '0.05', 'dead-after': '0.5', 'backoff-initial': '0.02', 'backoff-max': '0.1' }, {}, { requireToken: true })
  const log: string[] = []
  const tunnels: FakeTunnel[] = []
  const agent = new Agent({
    settings,
    logger: pino({ level: 'silent' }),
    createTunnel: key => {
      const tunnel = new FakeTunnel(encodeKey(publicKeyFromPrivate(key)), log)
      tunnels.push(tunnel)
      return tunnel
    },
  })
  return { agent, log, tunnels, stateFile }
}


t.test('KEY_IN_USE: a new key pair, registered at once; heartbeats follow next_heartbeat_in; stop: tunnel down, then disconnect', async t => {
  let registers = 0
  // GET /tunnel/status answers with the custom domain only once the registration's view is checked.
  let statusShowsDomain = false
  const api = await fakeApi(t, path => path === '/tunnel/register' && registers++ === 0
    ? fail(409, 'KEY_IN_USE')
    : path === '/tunnel/status' && !statusShowsDomain ? STATUS_WITHOUT_DOMAINS : ok(path))
  const { agent, log, tunnels, stateFile } = setup(t, api.url)
  const firstKey = agent.report().public_key!
  const done = agent.run()
  await until('connected', () => agent.report().status === 'connected', 20_000)
  const secondKey = agent.report().public_key!
  t.not(secondKey, firstKey, 'a new key pair')
  t.same(api.calls.slice(0, 2), [`/tunnel/register ${firstKey}`, `/tunnel/register ${secondKey}`])
  t.equal(JSON.parse(readFileSync(stateFile, 'utf8')).public_key, secondKey, 'kept in the state file')
  t.equal(tunnels[0].key, secondKey, 'the tunnel uses the new key')
  t.same(agent.report().custom_domains, [], 'domains from the registration')
  statusShowsDomain = true

  await until('two heartbeats', () => api.calls.filter(c => c === '/tunnel/heartbeat').length >= 2, 15_000)
  await until('a status refresh after the switch', () => agent.report().custom_domains.length > 0, 15_000)
  const report = agent.report()
  t.same(report.custom_domains, ['share.example.com'], 'refreshed from GET /tunnel/status')
  t.equal(report.cloud_status, 'connected')

  agent.stop()
  t.equal(await done, 0)
  t.equal(log[log.length - 1], 'close')
  // A status refresh that stop() aborted may still reach the server after the goodbye; nothing else may.
  const goodbye = api.calls.lastIndexOf('/tunnel/disconnect')
  t.ok(goodbye > 0, 'disconnect after the tunnel is down')
  t.same(api.calls.slice(goodbye + 1).filter(c => c !== '/tunnel/status'), [], 'no heartbeat or registration after the disconnect')
  t.equal(agent.report().status, 'disconnected')
})

t.test('402: state error with the message, retried until it clears', async t => {
  let suspended = true
  const api = await fakeApi(t, path => path === '/tunnel/register' && suspended ? fail(402, 'SUBSCRIPTION_REQUIRED') : ok(path))
  const { agent } = setup(t, api.url)
  const done = agent.run()
  await until('error', () => agent.report().status === 'error', 20_000)
  t.match(agent.report().last_error, /SUBSCRIPTION_REQUIRED message/)
  await until('two more attempts', () => api.calls.filter(c => c.startsWith('/tunnel/register')).length >= 3, 20_000)
  suspended = false
  await until('connected', () => agent.report().status === 'connected', 20_000)
  t.equal(agent.report().last_error, null)
  agent.stop()
  t.equal(await done, 0)
})

t.test('401 on a heartbeat: exit 3, state error, tunnel down, no disconnect call', async t => {
  let revoked = false
  const api = await fakeApi(t, path => revoked && path !== '/tunnel/register' ? fail(401, 'UNAUTHORIZED') : ok(path))
  const { agent, log, stateFile } = setup(t, api.url)
  const done = agent.run()
  await until('connected', () => agent.report().status === 'connected', 20_000)
  await until('first heartbeat', () => api.calls.includes('/tunnel/heartbeat'), 20_000)
  revoked = true
  t.equal(await done, 3)
  const state = JSON.parse(readFileSync(stateFile, 'utf8'))
  t.equal(state.status, 'error')
  t.match(state.last_error, /rejected the instance token/)
  t.equal(log[log.length - 1], 'close')
  t.notOk(api.calls.includes('/tunnel/disconnect'))
})

t.test('a silent tunnel: connecting, register again, reconnect; answers make it connected again', async t => {
  const api = await fakeApi(t, path => ok(path))
  const { agent, log, tunnels } = setup(t, api.url)
  const done = agent.run()
  await until('connected', () => agent.report().status === 'connected', 20_000)
  tunnels[0].alive = false
  await until('connecting', () => agent.report().status === 'connecting', 20_000)
  t.match(agent.report().last_error, /no answer from the gateway/)
  await until('reconnect', () => log.includes('reconnect'), 20_000)
  t.ok(api.calls.filter(c => c.startsWith('/tunnel/register')).length >= 2, 'registered again')
  tunnels[0].alive = true
  await until('connected again', () => agent.report().status === 'connected', 20_000)
  agent.stop()
  t.equal(await done, 0)
})

t.test('an unusable tunnel_config is refused for good (exit 4)', async t => {
  const api = await fakeApi(t, path => path === '/tunnel/register' ? { status: 200, body: { ...REGISTERED, tunnel_config: { ...REGISTERED.tunnel_config, peer: { ...REGISTERED.tunnel_config.peer, endpoint: 'nowhere' } } } } : ok(path))
  const { agent } = setup(t, api.url)
  t.equal(await agent.run(), 4)
  t.match(agent.report(), { status: 'error', last_error: /peer\.endpoint/ })
})

const KEY_B = encodeKey(publicKeyFromPrivate(generatePrivateKey()))
const KEY_C = encodeKey(publicKeyFromPrivate(generatePrivateKey()))
const PEER_A = { gateway_id: 'gw-a', role: 'primary', region: null, ...REGISTERED.tunnel_config.peer }
const PEER_B = { gateway_id: 'gw-b', role: 'backup', region: null, public_key: KEY_B, endpoint: '127.0.0.1:51821', allowed_ips: '10.100.255.254/32', persistent_keepalive: 25 }
const PEER_C = { gateway_id: 'gw-c', role: 'backup', region: null, public_key: KEY_C, endpoint: '127.0.0.1:51822', allowed_ips: '10.100.255.253/32', persistent_keepalive: 25 }
const FLEET_REGISTERED = { ...REGISTERED, tunnel_config: { ...REGISTERED.tunnel_config, peers: [PEER_A, PEER_B] } }

t.test('two gateways: status lists both; one silent stays connected with that gateway down and a fresh handshake for it only; the heartbeat\'s new set is applied, a hostile one ignored', async t => {
  let heartbeatPeers: unknown = [PEER_A, PEER_B]
  const api = await fakeApi(t, path => path === '/tunnel/register'
    ? { status: 200, body: FLEET_REGISTERED }
    : path === '/tunnel/heartbeat' ? { status: 200, body: { status: 'ok', next_heartbeat_in: 5, peers: heartbeatPeers } } : ok(path))
  const { agent, log, tunnels, stateFile } = setup(t, api.url)
  const done = agent.run()
  await until('connected', () => agent.report().status === 'connected', 20_000)
  await until('both gateways answer', () => agent.report().gateways.every(g => g.connected), 20_000)
  t.match(agent.report().gateways, [
    { id: 'gw-a', role: 'primary', endpoint: '127.0.0.1:51820', address: '10.100.0.1', public_key: GATEWAY_KEY, connected: true },
    { id: 'gw-b', role: 'backup', endpoint: '127.0.0.1:51821', address: '10.100.255.254', public_key: KEY_B, connected: true },
  ])

  tunnels[0].dead.add('10.100.0.1')
  await until('gw-a down', () => agent.report().gateways[0].connected === false, 20_000)
  await until('a fresh handshake for gw-a', () => log.includes(`reconnect ${GATEWAY_KEY}`), 20_000)
  const report = agent.report()
  t.equal(report.status, 'connected', 'the tunnel is up through the other gateway')
  t.equal(report.last_error, null)
  t.equal(report.gateways[1].connected, true)
  t.notOk(log.includes('reconnect'), 'no full reconnect while a gateway answers')
  t.equal(api.calls.filter(c => c.startsWith('/tunnel/register')).length, 1, 'no new registration')

  // A hostile heartbeat (a gateway that would route everything) changes nothing.
  heartbeatPeers = [{ ...PEER_A, allowed_ips: '0.0.0.0/0' }]
  const heartbeats = api.calls.filter(c => c === '/tunnel/heartbeat').length
  await until('a heartbeat with the hostile set', () => api.calls.filter(c => c === '/tunnel/heartbeat').length > heartbeats, 15_000)
  await new Promise(resolve => setTimeout(resolve, 100))
  t.equal(tunnels[0].plans.length, 1, 'not applied')
  t.same(agent.report().gateways.map(g => g.id), ['gw-a', 'gw-b'])

  // Re-placed: gw-a gone, gw-b primary, gw-c backup.
  heartbeatPeers = [{ ...PEER_B, role: 'primary' }, PEER_C]
  await until('the new set applied', () => tunnels[0].plans.length === 2, 15_000)
  t.same(agent.report().gateways.map(g => [g.id, g.role]), [['gw-b', 'primary'], ['gw-c', 'backup']])
  t.equal(agent.report().gateway_endpoint, '127.0.0.1:51821', 'gateway_endpoint is the new primary\'s')
  const saved = JSON.parse(readFileSync(stateFile, 'utf8'))
  t.same(saved.registration.tunnel_config.peers.map((p: { gateway_id: string }) => p.gateway_id), ['gw-b', 'gw-c'], 'the state file follows')
  t.equal(saved.registration.tunnel_config.peer.public_key, KEY_B)
  await until('gw-c answers', () => agent.report().gateways[1].connected, 20_000)
  agent.stop()
  t.equal(await done, 0)
})
