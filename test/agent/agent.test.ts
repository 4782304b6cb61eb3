/**
 * The Agent's state machine against a scripted in-process API and a fake tunnel: key rotation on
 * KEY_IN_USE, 402 as state error with retries, heartbeats at the interval the API asks for, 401 on
 * a heartbeat as a fatal error without goodbye, an unusable tunnel_config as EXIT_REFUSED, and the
 * order of a graceful stop (tunnel down first, then disconnect). The agent runs on a fake clock:
 * its waits (heartbeat interval, backoff, dead-after) take no real time.
 */
import t, { type Test } from 'tap'
import { FakeClock } from '../helpers/fake-clock.ts'
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

interface Reply { status: number, body: unknown, headers?: Record<string, string> }
type Script = (path: string, body: any) => Reply // eslint-disable-line @typescript-eslint/no-explicit-any

/** `at[i]`: the agent's clock when `calls[i]` arrived. */
async function fakeApi (t: Test, script: Script, clock: FakeClock): Promise<{ url: string, calls: string[], at: number[] }> {
  const calls: string[] = []
  const at: number[] = []
  const server = http.createServer((req, res) => {
    let text = ''
    req.on('data', (c: Buffer) => { text += c.toString() })
    req.on('end', () => {
      const path = (req.url ?? '').replace(/^\/v1/, '')
      const body = text === '' ? undefined : JSON.parse(text)
      calls.push(`${path}${body?.public_key === undefined ? '' : ` ${body.public_key as string}`}`)
      at.push(clock.now())
      const reply = script(path, body)
      res.writeHead(reply.status, { 'content-type': 'application/json', ...reply.headers }).end(JSON.stringify(reply.body))
    })
  })
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, calls, at }
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
  /** The clock's time of the latest probe answered. */
  lastAnswerAt: number | null = null
  constructor (readonly key: string, readonly log: string[], private readonly clock: FakeClock) {}
  async apply (plan: TunnelPlan): Promise<void> {
    this.log.push(`apply ${plan.address}`)
    this.plans.push(plan)
  }

  async reconnect (gatewayPublicKey?: string): Promise<void> { this.log.push(gatewayPublicKey === undefined ? 'reconnect' : `reconnect ${gatewayPublicKey}`) }
  async probe (_timeoutMs: number, gatewayAddress?: string): Promise<number | null> {
    await new Promise(resolve => setImmediate(resolve))
    const answers = this.alive && (gatewayAddress === undefined || !this.dead.has(gatewayAddress))
    if (answers) this.lastAnswerAt = this.clock.now()
    return answers ? 1 : null
  }

  health (): TunnelHealth { return { lastHandshakeAt: Date.now(), lastReceiveAt: null, endpoint: '127.0.0.1:51820', rxBytes: 0, txBytes: 0 } }
  gateways (): GatewayHealth[] { return [] }
  async close (): Promise<void> { this.log.push('close') }
}

function setup (t: Test, api: string, clock: FakeClock): { agent: Agent, log: string[], tunnels: FakeTunnel[], stateFile: string } {
  const dir = mkdtempSync(join(tmpdir(), 'cc-agent-unit-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const stateFile = join(dir, 'agent.json')
  const settings = loadSettings({ api, token: 'eyJ0eXAiOiJpbnN0YW5jZSJ9.e30.sig', state: stateFile, 'status-listen': 'off', 'probe-interval': '0.05', 'dead-after': '0.5', 'backoff-initial': '0.02', 'backoff-max': '0.1' }, {}, { requireToken: true })
  const log: string[] = []
  const tunnels: FakeTunnel[] = []
  const agent = new Agent({
    settings,
    logger: pino({ level: 'silent' }),
    clock,
    createTunnel: key => {
      const tunnel = new FakeTunnel(encodeKey(publicKeyFromPrivate(key)), log, clock)
      tunnels.push(tunnel)
      return tunnel
    },
  })
  return { agent, log, tunnels, stateFile }
}

/** The exit status once run() resolved, else null. */
function exitOf (run: Promise<number>): () => number | null {
  let code: number | null = null
  void run.then(c => { code = c })
  return () => code
}


t.test('KEY_IN_USE: a new key pair, registered at once; heartbeats follow next_heartbeat_in; stop: tunnel down, then disconnect', async t => {
  let registers = 0
  // GET /tunnel/status answers with the custom domain only once the registration's view is checked.
  let statusShowsDomain = false
  const clock = new FakeClock()
  const api = await fakeApi(t, path => path === '/tunnel/register' && registers++ === 0
    ? fail(409, 'KEY_IN_USE')
    : path === '/tunnel/status' && !statusShowsDomain ? STATUS_WITHOUT_DOMAINS : ok(path), clock)
  const { agent, log, tunnels, stateFile } = setup(t, api.url, clock)
  const firstKey = agent.report().public_key!
  const done = agent.run()
  await clock.until('connected', () => agent.report().status === 'connected')
  const secondKey = agent.report().public_key!
  t.not(secondKey, firstKey, 'a new key pair')
  t.same(api.calls.slice(0, 2), [`/tunnel/register ${firstKey}`, `/tunnel/register ${secondKey}`])
  t.equal(clock.requested[0], 0, 'the new key registered at once, no backoff')
  t.equal(JSON.parse(readFileSync(stateFile, 'utf8')).public_key, secondKey, 'kept in the state file')
  t.equal(tunnels[0].key, secondKey, 'the tunnel uses the new key')
  t.same(agent.report().custom_domains, [], 'domains from the registration')
  statusShowsDomain = true

  await clock.until('two heartbeats', () => api.calls.filter(c => c === '/tunnel/heartbeat').length >= 2, { maxMs: 15_000 })
  const beats = api.at.filter((_, i) => api.calls[i] === '/tunnel/heartbeat')
  t.ok(beats[1] - beats[0] >= 5_000, `the second heartbeat next_heartbeat_in (5 s) after the first (${beats[1] - beats[0]} ms)`)
  await clock.until('a status refresh after the switch', () => agent.report().custom_domains.length > 0, { maxMs: 15_000 })
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
  const clock = new FakeClock()
  const api = await fakeApi(t, path => path === '/tunnel/register' && suspended ? fail(402, 'SUBSCRIPTION_REQUIRED') : ok(path), clock)
  const { agent } = setup(t, api.url, clock)
  const done = agent.run()
  await clock.until('error', () => agent.report().status === 'error')
  t.match(agent.report().last_error, /SUBSCRIPTION_REQUIRED message/)
  await clock.until('two more attempts', () => api.calls.filter(c => c.startsWith('/tunnel/register')).length >= 3)
  const attempts = api.at.filter((_, i) => api.calls[i].startsWith('/tunnel/register'))
  t.ok(attempts[1] - attempts[0] >= 100 && attempts[2] - attempts[1] >= 100, 'each retry after the longest backoff (0.1 s)')
  suspended = false
  await clock.until('connected', () => agent.report().status === 'connected')
  t.equal(agent.report().last_error, null)
  agent.stop()
  t.equal(await done, 0)
})

t.test('401 on a heartbeat: exit 3, state error, tunnel down, no disconnect call', async t => {
  let revoked = false
  const clock = new FakeClock()
  const api = await fakeApi(t, path => revoked && path !== '/tunnel/register' ? fail(401, 'UNAUTHORIZED') : ok(path), clock)
  const { agent, log, stateFile } = setup(t, api.url, clock)
  const exit = exitOf(agent.run())
  await clock.until('connected', () => agent.report().status === 'connected')
  await clock.until('first heartbeat', () => api.calls.includes('/tunnel/heartbeat'))
  revoked = true
  await clock.until('the agent exits', () => exit() !== null, { maxMs: 15_000 })
  t.equal(exit(), 3)
  const state = JSON.parse(readFileSync(stateFile, 'utf8'))
  t.equal(state.status, 'error')
  t.match(state.last_error, /rejected the instance token/)
  t.equal(log[log.length - 1], 'close')
  t.notOk(api.calls.includes('/tunnel/disconnect'))
})

t.test('heartbeats: next_heartbeat_in 0 waits the 5 s minimum, not a busy loop; a 503 with Retry-After waits as long as it says', async t => {
  let beats = 0
  const clock = new FakeClock()
  const api = await fakeApi(t, path => {
    if (path !== '/tunnel/heartbeat') return ok(path)
    return ++beats === 2
      ? { ...fail(503, 'SERVICE_UNAVAILABLE'), headers: { 'retry-after': '30' } }
      : { status: 200, body: { status: 'ok', next_heartbeat_in: 0 } }
  }, clock)
  const { agent } = setup(t, api.url, clock)
  const done = agent.run()
  await clock.until('three heartbeats', () => beats >= 3, { stepMs: 100, maxMs: 60_000 })
  const at = api.at.filter((_, i) => api.calls[i] === '/tunnel/heartbeat')
  t.ok(at[1] - at[0] >= 5_000, `5 s after an answer asking for 0 (${at[1] - at[0]} ms)`)
  t.ok(at[2] - at[1] >= 30_000, `Retry-After 30 s over the backoff of at most 0.1 s (${at[2] - at[1]} ms)`)
  agent.stop()
  t.equal(await done, 0)
})

t.test('a silent tunnel: connecting, register again, reconnect; answers make it connected again', async t => {
  const clock = new FakeClock()
  const api = await fakeApi(t, path => ok(path), clock)
  const { agent, log, tunnels } = setup(t, api.url, clock)
  const done = agent.run()
  await clock.until('connected', () => agent.report().status === 'connected')
  tunnels[0].alive = false
  await clock.until('connecting', () => agent.report().status === 'connecting')
  t.ok(clock.now() - tunnels[0].lastAnswerAt! > 500, 'not before dead-after (0.5 s) of silence')
  t.match(agent.report().last_error, /no answer from the gateway/)
  await clock.until('reconnect', () => log.includes('reconnect'))
  t.ok(api.calls.filter(c => c.startsWith('/tunnel/register')).length >= 2, 'registered again')
  tunnels[0].alive = true
  await clock.until('connected again', () => agent.report().status === 'connected')
  agent.stop()
  t.equal(await done, 0)
})

t.test('an unusable tunnel_config is refused for good (exit 4)', async t => {
  const clock = new FakeClock()
  const api = await fakeApi(t, path => path === '/tunnel/register' ? { status: 200, body: { ...REGISTERED, tunnel_config: { ...REGISTERED.tunnel_config, peer: { ...REGISTERED.tunnel_config.peer, endpoint: 'nowhere' } } } } : ok(path), clock)
  const { agent } = setup(t, api.url, clock)
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
  const clock = new FakeClock()
  const api = await fakeApi(t, path => path === '/tunnel/register'
    ? { status: 200, body: FLEET_REGISTERED }
    : path === '/tunnel/heartbeat' ? { status: 200, body: { status: 'ok', next_heartbeat_in: 5, peers: heartbeatPeers } } : ok(path), clock)
  const { agent, log, tunnels, stateFile } = setup(t, api.url, clock)
  const done = agent.run()
  await clock.until('connected', () => agent.report().status === 'connected')
  await clock.until('both gateways answer', () => agent.report().gateways.every(g => g.connected))
  t.match(agent.report().gateways, [
    { id: 'gw-a', role: 'primary', endpoint: '127.0.0.1:51820', address: '10.100.0.1', public_key: GATEWAY_KEY, connected: true },
    { id: 'gw-b', role: 'backup', endpoint: '127.0.0.1:51821', address: '10.100.255.254', public_key: KEY_B, connected: true },
  ])

  tunnels[0].dead.add('10.100.0.1')
  await clock.until('gw-a down', () => agent.report().gateways[0].connected === false)
  await clock.until('a fresh handshake for gw-a', () => log.includes(`reconnect ${GATEWAY_KEY}`))
  const report = agent.report()
  t.equal(report.status, 'connected', 'the tunnel is up through the other gateway')
  t.equal(report.last_error, null)
  t.equal(report.gateways[1].connected, true)
  t.notOk(log.includes('reconnect'), 'no full reconnect while a gateway answers')
  t.equal(api.calls.filter(c => c.startsWith('/tunnel/register')).length, 1, 'no new registration')

  // A hostile heartbeat (a gateway that would route everything) changes nothing.
  heartbeatPeers = [{ ...PEER_A, allowed_ips: '0.0.0.0/0' }]
  const heartbeats = api.calls.filter(c => c === '/tunnel/heartbeat').length
  await clock.until('a heartbeat with the hostile set', () => api.calls.filter(c => c === '/tunnel/heartbeat').length > heartbeats, { maxMs: 15_000 })
  // The status refresh follows the heartbeat's gateways being handled.
  const hostileBeat = api.calls.lastIndexOf('/tunnel/heartbeat')
  await clock.until('the status refresh after it', () => api.calls.indexOf('/tunnel/status', hostileBeat) > hostileBeat)
  t.equal(tunnels[0].plans.length, 1, 'not applied')
  t.same(agent.report().gateways.map(g => g.id), ['gw-a', 'gw-b'])

  // Re-placed: gw-a gone, gw-b primary, gw-c backup.
  heartbeatPeers = [{ ...PEER_B, role: 'primary' }, PEER_C]
  await clock.until('the new set applied', () => tunnels[0].plans.length === 2, { maxMs: 15_000 })
  t.same(agent.report().gateways.map(g => [g.id, g.role]), [['gw-b', 'primary'], ['gw-c', 'backup']])
  t.equal(agent.report().gateway_endpoint, '127.0.0.1:51821', 'gateway_endpoint is the new primary\'s')
  const saved = JSON.parse(readFileSync(stateFile, 'utf8'))
  t.same(saved.registration.tunnel_config.peers.map((p: { gateway_id: string }) => p.gateway_id), ['gw-b', 'gw-c'], 'the state file follows')
  t.equal(saved.registration.tunnel_config.peer.public_key, KEY_B)
  await clock.until('gw-c answers', () => agent.report().gateways[1].connected)
  agent.stop()
  t.equal(await done, 0)
})
