/**
 * Kernel mode without root: the wg-quick configuration it writes, and the commands it runs (a
 * recording runner stands in for wg-quick, wg, ip and ping). The real thing runs in kernel.test.ts.
 */
import t, { type Test } from 'tap'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { KernelTunnel, wgQuickConfig, wgSyncConfig, type CommandResult } from '../../agent/kernel.ts'
import { planFromConfig, TunnelConfigError, TunnelUnavailableError } from '../../agent/tunnel.ts'
import { encodeKey, generatePrivateKey } from '../../proto/noise/keys.ts'

// The spec's POST /tunnel/register example, allowed_ips as the API sends it (the gateway's /32).
const PLAN = planFromConfig({
  interface: { address: '10.100.0.42/32' },
  peer: { public_key: '1y8JgBgNarojHK12KYbAAy+7HqZq2HGsE0Qw24toBXo=', endpoint: 'connect.erugo.cloud:51820', allowed_ips: '10.100.0.1/32', persistent_keepalive: 25 },
})

t.test('wgQuickConfig: the spec\'s tunnel_config in wg-quick(8) form', async t => {
  const key = generatePrivateKey()
  t.equal(wgQuickConfig(key, PLAN), [
    '# Written by cloud-connect agent (kernel mode) from POST /tunnel/register; rewritten on every registration.',
    '[Interface]',
    `PrivateKey = ${encodeKey(key)}`,
    'Address = 10.100.0.42/32',
    '',
    '[Peer]',
    'PublicKey = 1y8JgBgNarojHK12KYbAAy+7HqZq2HGsE0Qw24toBXo=',
    'Endpoint = connect.erugo.cloud:51820',
    'AllowedIPs = 10.100.0.1/32',
    'PersistentKeepalive = 25',
    '',
  ].join('\n'))
  t.match(wgQuickConfig(key, { ...PLAN, endpointHost: '2001:db8::1', persistentKeepalive: 0 }), /^Endpoint = \[2001:db8::1\]:51820$/m)
  t.notMatch(wgQuickConfig(key, { ...PLAN, persistentKeepalive: 0 }), /PersistentKeepalive/)
})

function recorder (t: Test, answers: (cmd: string, args: string[]) => Partial<CommandResult>): { tunnel: KernelTunnel, calls: string[], dir: string } {
  const dir = mkdtempSync(join(tmpdir(), 'cc-agent-kernel-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const calls: string[] = []
  const tunnel = new KernelTunnel({
    privateKey: generatePrivateKey(),
    interfaceName: 'erugo-cc',
    stateFile: join(dir, 'agent.json'),
    logger: pino({ level: 'silent' }),
    run: async (cmd, args) => {
      calls.push([cmd, ...args].join(' '))
      return { code: 0, stdout: '', stderr: '', ...answers(cmd, args) }
    },
  })
  return { tunnel, calls, dir }
}

t.test('apply, probe, reconnect, close: the commands and the health they read', async t => {
  let linkUp = false
  const { tunnel, calls, dir } = recorder(t, (cmd, args) => {
    if (cmd === 'ip' && args[1] === 'show') return { code: linkUp ? 0 : 1 }
    if (cmd === 'wg-quick') linkUp = args[0] === 'up'
    if (cmd === 'ping') return { stdout: '64 bytes from 10.100.0.1: icmp_seq=1 ttl=64 time=0.52 ms\n' }
    if (cmd === 'wg' && args[2] === 'dump') return { stdout: `priv\tpub\t51820\toff\n${PLAN.peerPublicKey}\t(none)\t198.51.100.7:51820\t10.100.0.1/32\t1700000000\t1234\t5678\t25\n` }
    return {}
  })
  const config = join(dir, 'erugo-cc.conf')
  await tunnel.apply(PLAN)
  t.equal(statSync(config).mode & 0o777, 0o600, 'configuration 0600')
  t.same(calls, ['ip link show dev erugo-cc', `wg-quick up ${config}`], 'nothing to take down first, then up')
  await tunnel.apply(PLAN)
  t.equal(calls.length, 2, 'the same plan again changes nothing')

  t.equal(await tunnel.probe(2_000), 0.52)
  t.match(calls.slice(-2), ['ping -n -c 1 -W 2 -I erugo-cc 10.100.0.1', 'wg show erugo-cc dump'])
  t.match(tunnel.health(), { lastHandshakeAt: 1_700_000_000_000, endpoint: '198.51.100.7:51820', rxBytes: 1234, txBytes: 5678 })
  t.ok(tunnel.health().lastReceiveAt !== null)

  await tunnel.reconnect()
  t.equal(calls[calls.length - 1], `wg set erugo-cc peer ${PLAN.peerPublicKey} endpoint connect.erugo.cloud:51820`)

  await tunnel.apply({ ...PLAN, endpointPort: 51821 })
  t.same(calls.slice(-3), ['ip link show dev erugo-cc', `wg-quick down ${config}`, `wg-quick up ${config}`], 'a new plan: down, then up')
  t.match(readFileSync(config, 'utf8'), /Endpoint = connect\.erugo\.cloud:51821/)

  await tunnel.close()
  t.equal(calls[calls.length - 1], `wg-quick down ${config}`)
  t.notOk(existsSync(config), 'the configuration (it holds the private key) is removed')
})

t.test('without NET_ADMIN: TunnelUnavailableError with what to change', async t => {
  const { tunnel } = recorder(t, cmd => cmd === 'wg-quick' ? { code: 1, stderr: '[#] ip link add erugo-cc type wireguard\nRTNETLINK answers: Operation not permitted\n' } : cmd === 'ip' ? { code: 1 } : {})
  await t.rejects(tunnel.apply(PLAN), new TunnelUnavailableError('kernel mode needs NET_ADMIN (docker: cap_add: [NET_ADMIN] and devices: [/dev/net/tun]); or use --mode userspace'))
  t.equal(await tunnel.probe(1_000), null, 'no probes when not up')
})

t.test('apply with a plan holding a line break or a wide route: TunnelConfigError, nothing written, nothing run', async t => {
  const { tunnel, calls, dir } = recorder(t, () => ({}))
  const tampered = [
    { ...PLAN, allowedIps: '10.100.0.1/32,\nPostUp = touch /tmp/x' },
    { ...PLAN, allowedIps: '0.0.0.0/0' },
    { ...PLAN, endpointHost: 'connect.erugo.cloud:51820\nPostUp = touch /tmp/x\n#' },
    { ...PLAN, addressCidr: '10.100.0.42/32\nPostUp = touch /tmp/x' },
    { ...PLAN, peerPublicKey: `${PLAN.peerPublicKey}\nPostUp = touch /tmp/x` },
  ]
  for (const plan of tampered) await t.rejects(tunnel.apply(plan), TunnelConfigError, JSON.stringify(plan))
  t.same(calls, [])
  t.same(readdirSync(dir), [], 'no configuration, no temporary file')
  await tunnel.apply(PLAN)
  t.same(readdirSync(dir), ['erugo-cc.conf'], 'a good plan: the configuration only (renamed into place)')
  await t.rejects(tunnel.apply({ ...PLAN, endpointPort: 51821, allowedIps: '0.0.0.0/0' }), TunnelConfigError)
  t.match(readFileSync(join(dir, 'erugo-cc.conf'), 'utf8'), /^AllowedIPs = 10\.100\.0\.1\/32$/m, 'a refused plan leaves the last good file as it was')
})

const KEY_B = 'HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw='
const KEY_C = 'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg='
function fleet (gateways: Array<[string, string, string, string]>): typeof PLAN {
  const peers = gateways.map(([id, key, endpoint, address], i) => ({ gateway_id: id, role: i === 0 ? 'primary' : 'backup', region: null, public_key: key, endpoint, allowed_ips: `${address}/32`, persistent_keepalive: 25 }))
  const { gateway_id: _, role: _r, region: _g, ...peer } = peers[0]
  return planFromConfig({ interface: { address: '10.100.0.42/32' }, peer, peers })
}
const GW_A: [string, string, string, string] = ['gw-a', '1y8JgBgNarojHK12KYbAAy+7HqZq2HGsE0Qw24toBXo=', 'connect.erugo.cloud:51820', '10.100.0.1']
const GW_B: [string, string, string, string] = ['gw-b', KEY_B, 'gw-b.erugo.cloud:51820', '10.100.255.254']
const GW_C: [string, string, string, string] = ['gw-c', KEY_C, '192.0.2.9:51820', '10.100.255.253']

t.test('wgQuickConfig: one [Peer] per gateway, each limited to that gateway\'s address', async t => {
  const key = generatePrivateKey()
  const text = wgQuickConfig(key, fleet([GW_A, GW_B]))
  t.equal(text.match(/^\[Peer\]$/gm)?.length, 2)
  t.match(text, /PublicKey = 1y8JgBgNarojHK12KYbAAy\+7HqZq2HGsE0Qw24toBXo=\nEndpoint = connect\.erugo\.cloud:51820\nAllowedIPs = 10\.100\.0\.1\/32\n/)
  t.match(text, /PublicKey = HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=\nEndpoint = gw-b\.erugo\.cloud:51820\nAllowedIPs = 10\.100\.255\.254\/32\n/)
  t.equal(text.match(/^AllowedIPs = /gm)?.length, 2, 'nothing wider, one line each')
  const sync = wgSyncConfig(key, fleet([GW_A, GW_B]))
  t.notMatch(sync, /Address/, 'the wg(8) form has no wg-quick keys')
  t.equal(sync.match(/^\[Peer\]$/gm)?.length, 2)
})

t.test('a new set of gateways for the same address: wg syncconf and a route per added or removed gateway; no down and up', async t => {
  let linkUp = false
  let syncText = ''
  const { tunnel, calls, dir } = recorder(t, (cmd, args) => {
    if (cmd === 'ip' && args[1] === 'show') return { code: linkUp ? 0 : 1 }
    if (cmd === 'wg-quick') linkUp = args[0] === 'up'
    if (cmd === 'wg' && args[0] === 'syncconf') syncText = readFileSync(args[2], 'utf8')
    if (cmd === 'wg' && args[2] === 'dump') return { stdout: `priv\tpub\t51820\toff\n${GW_A[1]}\t(none)\t198.51.100.7:51820\t10.100.0.1/32\t1700000000\t1234\t5678\t25\n${KEY_B}\t(none)\t198.51.100.8:51820\t10.100.255.254/32\t0\t0\t148\t25\n` }
    if (cmd === 'ping') return args[args.length - 1] === '10.100.0.1' ? { stdout: 'time=0.4 ms\n' } : { code: 1 }
    return {}
  })
  const config = join(dir, 'erugo-cc.conf')
  await tunnel.apply(fleet([GW_A, GW_B]))
  t.same(calls, ['ip link show dev erugo-cc', `wg-quick up ${config}`])
  t.equal(await tunnel.probe(1_000, '10.100.255.254'), null, 'one gateway silent')
  t.equal(await tunnel.probe(1_000), 0.4, 'the tunnel answers through the other')
  t.match(tunnel.gateways(), [
    { gatewayId: 'gw-a', role: 'primary', lastHandshakeAt: 1_700_000_000_000, endpoint: '198.51.100.7:51820', rxBytes: 1234 },
    { gatewayId: 'gw-b', role: 'backup', lastHandshakeAt: null, endpoint: '198.51.100.8:51820', rxBytes: 0 },
  ])

  calls.length = 0
  await tunnel.apply(fleet([GW_A, GW_C]))
  t.same(calls, [
    `wg syncconf erugo-cc ${config}.sync`,
    'ip -4 route replace 10.100.255.253/32 dev erugo-cc',
    'ip -4 route del 10.100.255.254/32 dev erugo-cc',
  ], 'peers synced in place: gw-a untouched, gw-b out, gw-c in')
  t.match(syncText, /PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\nEndpoint = 192\.0\.2\.9:51820\nAllowedIPs = 10\.100\.255\.253\/32/)
  t.notMatch(syncText, new RegExp(KEY_B.replace(/[+/=]/g, '\\$&')))
  t.notOk(existsSync(`${config}.sync`), 'the sync file (it holds the private key) is removed')
  t.match(readFileSync(config, 'utf8'), /AllowedIPs = 10\.100\.255\.253\/32/, 'the wg-quick file says the same for the next start')
  t.same(tunnel.gateways().map(g => g.gatewayId), ['gw-a', 'gw-c'])

  calls.length = 0
  await tunnel.reconnect(KEY_C)
  t.same(calls, [`wg set erugo-cc peer ${KEY_C} endpoint 192.0.2.9:51820`], 'a fresh path to one gateway only')
})

t.test('wg syncconf failing: the interface is brought up again from the new file', async t => {
  let linkUp = false
  const { tunnel, calls, dir } = recorder(t, (cmd, args) => {
    if (cmd === 'ip' && args[1] === 'show') return { code: linkUp ? 0 : 1 }
    if (cmd === 'wg-quick') linkUp = args[0] === 'up'
    if (cmd === 'wg' && args[0] === 'syncconf') return { code: 1, stderr: 'Unable to modify interface: Protocol not supported' }
    return {}
  })
  const config = join(dir, 'erugo-cc.conf')
  await tunnel.apply(fleet([GW_A, GW_B]))
  calls.length = 0
  await tunnel.apply(fleet([GW_A]))
  t.same(calls, [`wg syncconf erugo-cc ${config}.sync`, 'ip link show dev erugo-cc', `wg-quick down ${config}`, `wg-quick up ${config}`])
})
