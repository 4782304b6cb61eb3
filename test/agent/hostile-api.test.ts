/**
 * A hostile (or broken) API against the kernel-mode agent. wg-quick runs `PostUp` lines as root, so
 * a register answer that smuggles one into the wg-quick file is root command execution in the
 * container. An HTTP server on loopback answers POST /tunnel/register with injected lines, wide
 * allowed IPs, bad keys, control characters and oversized bodies; the real Agent with the real
 * KernelTunnel (its commands recorded instead of run) must exit 4 before any file is written or
 * any command runs, and a good answer must still give the exact wg-quick file. The last test runs
 * `cloud-connect agent --mode kernel` itself.
 */
import t, { type Test } from 'tap'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { pino } from 'pino'
import { Agent } from '../../agent/agent.ts'
import { EXIT_OK, EXIT_REFUSED } from '../../agent/exit-codes.ts'
import { KernelTunnel, type CommandResult } from '../../agent/kernel.ts'
import { loadSettings } from '../../agent/settings.ts'
import { encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../../proto/noise/keys.ts'
import { startAgent, tempDir } from './service.ts'
import { until } from '../helpers/until.ts'

const GATEWAY_KEY = encodeKey(publicKeyFromPrivate(generatePrivateKey()))
const TOKEN = 'eyJ0eXAiOiJpbnN0YW5jZSJ9.e30.sig'
const GOOD_CONFIG = {
  interface: { address: '10.100.0.7/32' },
  peer: { public_key: GATEWAY_KEY, endpoint: 'gw.erugo.test:51820', allowed_ips: '10.100.0.1/32', persistent_keepalive: 25 },
}
const DOMAINS = { subdomain: 'box.erugo.test', custom_domains: [] }

type Answer = (res: http.ServerResponse) => void

const json = (body: unknown): Answer => res => { res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body)) }
const registered = (tunnelConfig: unknown): Answer => json({ status: 'registered', tunnel_config: tunnelConfig, domains: DOMAINS })
const peer = (field: string, value: unknown): Answer => registered({ ...GOOD_CONFIG, peer: { ...GOOD_CONFIG.peer, [field]: value } })

/** The API: `register` answers POST /tunnel/register; the rest answer as the spec says. */
async function hostileApi (t: Test, register: Answer): Promise<{ url: string, calls: string[] }> {
  const calls: string[] = []
  const server = http.createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      const path = (req.url ?? '').replace(/^\/v1/, '')
      calls.push(path)
      if (path === '/tunnel/register') register(res)
      else if (path === '/tunnel/heartbeat') json({ status: 'ok', next_heartbeat_in: 60 })(res)
      else if (path === '/tunnel/disconnect') json({ status: 'disconnected' })(res)
      else json({ tunnel_status: 'connected', domains: { subdomain: { domain: DOMAINS.subdomain, status: 'active' }, custom_domains: [] } })(res)
    })
  })
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  t.teardown(() => { server.closeAllConnections(); server.close() })
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, calls }
}

interface KernelAgent { agent: Agent, dir: string, commands: string[], tunnelsMade: () => number }

/** The agent in kernel mode: the real KernelTunnel writing into `dir`, its commands recorded. */
function kernelAgent (t: Test, api: string): KernelAgent {
  const dir = tempDir(t, 'cc-agent-hostile-')
  const settings = loadSettings({ api, token: TOKEN, mode: 'kernel', state: join(dir, 'agent.json'), 'status-listen': 'off', 'probe-interval': '0.05', 'dead-after': '5', 'backoff-initial': '0.02', 'backoff-max': '0.1' }, {}, { requireToken: true })
  const commands: string[] = []
  let made = 0
  let linkUp = false
  const run = async (cmd: string, args: string[]): Promise<CommandResult> => {
    commands.push([cmd, ...args].join(' '))
    if (cmd === 'ip' && args[1] === 'show') return { code: linkUp ? 0 : 1, stdout: '', stderr: '' }
    if (cmd === 'wg-quick') linkUp = args[0] === 'up'
    if (cmd === 'ping') return { code: 0, stdout: '64 bytes from 10.100.0.1: icmp_seq=1 ttl=64 time=0.40 ms\n', stderr: '' }
    return { code: 0, stdout: '', stderr: '' }
  }
  const logger = pino({ level: 'silent' })
  const agent = new Agent({
    settings,
    logger,
    createTunnel: key => {
      made++
      return new KernelTunnel({ privateKey: key, interfaceName: settings.interfaceName, stateFile: settings.stateFile, logger, run })
    },
  })
  return { agent, dir, commands, tunnelsMade: () => made }
}

const INJECTED = 'PostUp = touch /tmp/cc-agent-hostile-pwned'
const PAD = 'x'.repeat(70 * 1024)

const HOSTILE: Array<[string, Answer, RegExp]> = [
  ['a PostUp line after allowed_ips', peer('allowed_ips', `10.100.0.1/32\n${INJECTED}`), /unusable peer\.allowed_ips: holds a control character/],
  ['a PostUp line after a comma in allowed_ips', peer('allowed_ips', `10.100.0.1/32,\n${INJECTED}`), /unusable peer\.allowed_ips: holds a control character/],
  ['a PostUp line after allowed_ips, no line break', peer('allowed_ips', `10.100.0.1/32, 10.100.0.2/32 ${INJECTED}`), /unusable peer\.allowed_ips: must be the gateway's single address/],
  ['a PostUp line after the address', registered({ ...GOOD_CONFIG, interface: { address: `10.100.0.7/32\n${INJECTED}` } }), /unusable interface\.address: holds a control character/],
  ['a PostUp line after the endpoint (CRLF)', peer('endpoint', `gw.erugo.test:51820\r\n${INJECTED}`), /unusable peer\.endpoint: holds a control character/],
  ['a PostUp line after the public key', peer('public_key', `${GATEWAY_KEY}\n${INJECTED}`), /unusable peer\.public_key: holds a control character/],
  ['a new [Interface] section after the keepalive', peer('persistent_keepalive', `25\n[Interface]\n${INJECTED}`), /unusable peer\.persistent_keepalive: holds a control character/],
  ['a PostUp line in an unknown field', registered({ ...GOOD_CONFIG, peer: { ...GOOD_CONFIG.peer, comment: `x\n${INJECTED}` } }), /unusable peer\.comment: holds a control character/],
  ['a NUL in the endpoint', peer('endpoint', 'gw.erugo.test\u0000:51820'), /unusable peer\.endpoint: holds a control character/],
  ['a Unicode line separator in the endpoint', peer('endpoint', 'gw.erugo.test:51820\u2028PostUp=id'), /unusable peer\.endpoint: holds a control character/],
  ['allowed_ips 0.0.0.0/0 (every route into the tunnel)', peer('allowed_ips', '0.0.0.0/0'), /unusable peer\.allowed_ips: must be the gateway's single address with \/32/],
  ['allowed_ips the whole pool', peer('allowed_ips', '10.100.0.0/16'), /unusable peer\.allowed_ips: must be the gateway's single address/],
  ['allowed_ips with a second entry', peer('allowed_ips', '10.100.0.1/32, 0.0.0.0/0'), /unusable peer\.allowed_ips: must be the gateway's single address/],
  ['allowed_ips the cloud metadata address', peer('allowed_ips', '169.254.169.254/32'), /unusable peer\.allowed_ips: is a link-local address/],
  ['an interface address wider than /32', registered({ ...GOOD_CONFIG, interface: { address: '10.100.0.7/8' } }), /unusable interface\.address: must be one IPv4 address with \/32/],
  ['a key that is not 32 bytes', peer('public_key', Buffer.alloc(48, 1).toString('base64')), /unusable peer\.public_key: must be 32 bytes in canonical base64/],
  ['a key with a space (an option for wg)', peer('public_key', `${GATEWAY_KEY} PostUp`), /unusable peer\.public_key/],
  ['an endpoint with a space', peer('endpoint', 'gw.erugo.test:51820 PostUp=id'), /unusable peer\.endpoint: must be host:port/],
  ['a keepalive that is not an integer', peer('persistent_keepalive', 2.5), /unusable peer\.persistent_keepalive: must be an integer 0-65535/],
  ['no tunnel_config at all', json({ status: 'registered', domains: DOMAINS }), /unusable tunnel_config: not a JSON object/],
  ['peer as an array', registered({ ...GOOD_CONFIG, peer: [GOOD_CONFIG.peer] }), /unusable peer: not a JSON object/],
  ['an oversized answer (declared length)', json({ status: 'registered', tunnel_config: GOOD_CONFIG, domains: DOMAINS, padding: PAD }), /the answer is larger than 65536 bytes/],
  ['an oversized answer (chunked)', res => {
    res.writeHead(200, { 'content-type': 'application/json' })
    res.write(`{"status":"registered","tunnel_config":${JSON.stringify(GOOD_CONFIG)},"padding":"`)
    for (let i = 0; i < 10; i++) res.write('y'.repeat(16 * 1024))
    res.end('"}')
  }, /the answer is larger than 65536 bytes/],
]

for (const [name, answer, message] of HOSTILE) {
  t.test(`register answers ${name}: exit 4, no tunnel, no file, no command`, async t => {
    const api = await hostileApi(t, answer)
    const { agent, dir, commands, tunnelsMade } = kernelAgent(t, api.url)
    // Bounded: an agent that accepted the answer would run until stopped.
    const timer = setTimeout(() => { agent.stop() }, 5_000)
    const code = await agent.run()
    clearTimeout(timer)
    t.equal(code, EXIT_REFUSED)
    const report = agent.report()
    t.equal(report.status, 'error')
    t.match(report.last_error, message)
    t.equal(tunnelsMade(), 0, 'the config writer is never reached')
    t.same(commands, [], 'no command ran')
    t.same(readdirSync(dir), ['agent.json'], 'only the state file: no wg-quick configuration')
    const state = readFileSync(join(dir, 'agent.json'), 'utf8')
    t.notMatch(state, /PostUp|\[Interface\]/, 'no injected line is kept')
    t.equal(JSON.parse(state).registration, null)
    t.notOk(api.calls.includes('/tunnel/disconnect'), 'no goodbye to an API that was refused')
  })
}

t.test('register answers a good tunnel_config with unknown extra fields: the exact wg-quick file, none of the extras', async t => {
  const api = await hostileApi(t, registered({
    ...GOOD_CONFIG,
    PostUp: 'touch /tmp/x',
    interface: { ...GOOD_CONFIG.interface, PostUp: 'touch /tmp/x', DNS: '203.0.113.53' },
    peer: { ...GOOD_CONFIG.peer, endpoint: 'GW.Erugo.TEST:51820', PreDown: 'touch /tmp/x', preshared_key: GATEWAY_KEY },
  }))
  const { agent, dir, commands } = kernelAgent(t, api.url)
  const done = agent.run()
  await until('connected', () => agent.report().status === 'connected', 10_000, 20)
  const config = join(dir, 'erugo-cc.conf')
  const privateKey = JSON.parse(readFileSync(join(dir, 'agent.json'), 'utf8')).private_key as string
  t.equal(readFileSync(config, 'utf8'), [
    '# Written by cloud-connect agent (kernel mode) from POST /tunnel/register; rewritten on every registration.',
    '[Interface]',
    `PrivateKey = ${privateKey}`,
    'Address = 10.100.0.7/32',
    '',
    '[Peer]',
    `PublicKey = ${GATEWAY_KEY}`,
    'Endpoint = gw.erugo.test:51820',
    'AllowedIPs = 10.100.0.1/32',
    'PersistentKeepalive = 25',
    '',
  ].join('\n'))
  t.same(commands.slice(0, 2), ['ip link show dev erugo-cc', `wg-quick up ${config}`])
  t.same(JSON.parse(readFileSync(join(dir, 'agent.json'), 'utf8')).registration.tunnel_config, {
    interface: { address: '10.100.0.7/32' },
    peer: { public_key: GATEWAY_KEY, endpoint: 'gw.erugo.test:51820', allowed_ips: '10.100.0.1/32', persistent_keepalive: 25 },
  }, 'the state file keeps only our formatting')
  agent.stop()
  t.equal(await done, EXIT_OK)
  t.notOk(existsSync(config), 'removed on stop')
})

t.test('cloud-connect agent --mode kernel: a PostUp injection exits 4 with the field named and writes no configuration', async t => {
  const dir = tempDir(t, 'cc-agent-hostile-cli-')
  const marker = join(dir, 'pwned')
  const api = await hostileApi(t, peer('allowed_ips', `10.100.0.1/32\nPostUp = touch ${marker}`))
  const proc = startAgent(t, { api: api.url, token: TOKEN, dir, extra: ['--mode', 'kernel', '--interface', 'cc-hostile'] })
  const timer = setTimeout(() => { proc.child.kill('SIGKILL') }, 60_000)
  const code = await proc.exited
  clearTimeout(timer)
  t.equal(code, EXIT_REFUSED, proc.output.slice(-2000))
  t.match(proc.output, /the API's tunnel_config has an unusable peer\.allowed_ips: holds a control character/)
  t.same(readdirSync(dir).sort(), ['agent.json', 'token'], 'no cc-hostile.conf')
  t.notOk(existsSync(marker), 'the injected command never ran')
})
