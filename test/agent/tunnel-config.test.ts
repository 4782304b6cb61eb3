/**
 * tunnel_config checks, field by field: what a hostile or broken API may send and what comes out
 * (always our own formatting). The agent-level attacks, against a loopback API, are in
 * hostile-api.test.ts.
 */
import t from 'tap'
import { checkGatewayList, checkPlan, checkRegistration, formatTunnelConfig, MAX_GATEWAYS, parseTunnelConfig, planFromConfig, planGateways, planWithGateways, TunnelConfigError } from '../../agent/tunnel-config.ts'
import { wgQuickConfig } from '../../agent/kernel.ts'
import { generatePrivateKey } from '../../proto/noise/keys.ts'

const KEY = '1y8JgBgNarojHK12KYbAAy+7HqZq2HGsE0Qw24toBXo='
const GOOD = {
  interface: { address: '10.100.0.42/32' },
  peer: { public_key: KEY, endpoint: 'connect.erugo.cloud:51820', allowed_ips: '10.100.0.1/32', persistent_keepalive: 25 },
}
const INJECTED = 'PostUp = touch /tmp/x'

function withInterface (address: unknown): unknown {
  return { ...GOOD, interface: { address } }
}
function withPeer (field: string, value: unknown): unknown {
  return { ...GOOD, peer: { ...GOOD.peer, [field]: value } }
}

function refusedField (config: unknown): string | null {
  try {
    parseTunnelConfig(config)
    return null
  } catch (err) {
    if (!(err instanceof TunnelConfigError)) throw err
    return err.field
  }
}

t.test('interface.address: exactly one IPv4 address with /32', async t => {
  const bad: unknown[] = [
    '10.100.0.42', '10.100.0.42/24', '10.100.0.42/0', `10.100.0.42/32\n${INJECTED}`, ' 10.100.0.42/32', '10.100.0.42/32 ',
    '10.100.0.42/32,10.100.0.43/32', '010.100.0.42/32', '10.100.0.256/32', '10.100.0.42/032', 'fd00::2/128',
    '0.0.0.0/32', '127.0.0.1/32', '169.254.169.254/32', '224.0.0.1/32', '255.255.255.255/32',
    42, null, ['10.100.0.42/32'], { address: '10.100.0.42/32' },
  ]
  for (const value of bad) t.equal(refusedField(withInterface(value)), 'interface.address', JSON.stringify(value))
})

t.test('peer.allowed_ips: the gateway\'s single /32, nothing wider, one entry', async t => {
  const bad: unknown[] = [
    '0.0.0.0/0', '10.100.0.0/24', '10.100.0.1/31', '10.100.0.1', '10.100.0.1/32,10.100.0.2/32', '10.100.0.1/32, 0.0.0.0/0',
    `10.100.0.1/32\n${INJECTED}`, `10.100.0.1/32\r\n${INJECTED}`, '10.100.0.1/32\n[Interface]', '::/0', '0.0.0.0/32',
    '169.254.169.254/32', '127.0.0.53/32', '255.255.255.255/32', '10.100.0.42/32', ['10.100.0.1/32'], 1, null,
  ]
  for (const value of bad) t.equal(refusedField(withPeer('allowed_ips', value)), 'peer.allowed_ips', JSON.stringify(value))
  t.throws(() => parseTunnelConfig(withPeer('allowed_ips', '0.0.0.0/0')), new TunnelConfigError('peer.allowed_ips', 'must be the gateway\'s single address with /32 (nothing wider, one entry) (got "0.0.0.0/0")'))
  t.throws(() => parseTunnelConfig(withPeer('allowed_ips', '10.100.0.42/32')), new TunnelConfigError('peer.allowed_ips', 'the gateway\'s address is our own interface.address'))
})

t.test('peer.public_key: canonical base64 of exactly 32 bytes', async t => {
  const bad: unknown[] = [
    'nope', KEY.slice(0, 43), `${KEY}\n${INJECTED}`, ` ${KEY}`, `${KEY} `,
    // The last character's low bits are padding: a non-canonical spelling of the same key.
    `${KEY.slice(0, 42)}p=`,
    KEY.replace('+', '-'), Buffer.alloc(33).toString('base64'), Buffer.alloc(31).toString('base64'), `${KEY}${KEY}`,
    null, 32, { key: KEY },
  ]
  for (const value of bad) t.equal(refusedField(withPeer('public_key', value)), 'peer.public_key', JSON.stringify(value))
})

t.test('peer.endpoint: host:port, host an RFC 1123 name, an IPv4 address or a bracketed IPv6 address', async t => {
  const bad: unknown[] = [
    `connect.erugo.cloud:51820\n${INJECTED}`, 'connect.erugo.cloud:51820\n', 'connect.erugo.cloud', 'connect.erugo.cloud:', ':51820',
    'connect.erugo.cloud:0', 'connect.erugo.cloud:65536', 'connect.erugo.cloud:051820', 'connect.erugo.cloud:+5',
    'connect.erugo.cloud:51820:1', ' connect.erugo.cloud:51820', 'connect erugo cloud:51820', 'user@connect.erugo.cloud:51820',
    '-bad.example:51820', 'bad-.example:51820', 'a..b:51820', '.example:51820', 'example.:51820', 'under_score.example:51820',
    `${'a'.repeat(64)}.example:51820`, `${'a.'.repeat(127)}com:51820`, 'ex\u00e4mple.com:51820',
    '1.2.3:51820', '256.1.1.1:51820', '0.0.0.0:51820', '10.1:51820',
    '2001:db8::1:51820', '[10.0.0.1]:51820', '[fe80::1%eth0]:51820', '[::]:51820', '[1::2::3]:51820', '[1:2:3:4:5:6:7:8:9]:51820',
    '[1:2:3:4:5:6:7]:51820', '[12345::1]:51820', '[1.2.3.4::1]:51820', '[2001:db8::1]', '[2001:db8::1]:51820\n',
    51820, null, ['connect.erugo.cloud:51820'],
  ]
  for (const value of bad) t.equal(refusedField(withPeer('endpoint', value)), 'peer.endpoint', JSON.stringify(value))
})

t.test('peer.persistent_keepalive: an integer 0-65535; absent means off', async t => {
  for (const value of [-1, 65536, 25.5, '25', '25\nPostUp = x', null, true, [25], {}]) {
    t.equal(refusedField(withPeer('persistent_keepalive', value)), 'peer.persistent_keepalive', JSON.stringify(value))
  }
  const { persistent_keepalive: _, ...withoutKeepalive } = GOOD.peer
  t.equal(planFromConfig({ ...GOOD, peer: withoutKeepalive }).persistentKeepalive, 0)
  t.equal(planFromConfig(withPeer('persistent_keepalive', 65535)).persistentKeepalive, 65535)
})

t.test('control characters anywhere, even in fields that are otherwise ignored, refuse the whole configuration', async t => {
  const cases: Array<[unknown, string]> = [
    [{ ...GOOD, note: 'a\u0000b' }, 'note'],
    [{ ...GOOD, peer: { ...GOOD.peer, description: `x\n${INJECTED}` } }, 'peer.description'],
    [{ ...GOOD, extra: { deeper: ['ok', 'tab\there'] } }, 'extra.deeper[1]'],
    [{ ...GOOD, peer: { ...GOOD.peer, 'PostUp\n': 'x' } }, 'peer.?'],
    [withPeer('endpoint', 'connect.erugo.cloud\u2028:51820'), 'peer.endpoint'],
    [withPeer('endpoint', 'connect.erugo.cloud:51820\u0085'), 'peer.endpoint'],
    [withPeer('endpoint', 'connect.erugo.cloud\u007f:51820'), 'peer.endpoint'],
  ]
  for (const [config, field] of cases) t.equal(refusedField(config), field, field)
})

t.test('shapes that are not a tunnel_config are refused by name', async t => {
  let nested: unknown = 'x'
  for (let i = 0; i < 50; i++) nested = { nested }
  const cases: Array<[unknown, string]> = [
    [null, 'tunnel_config'], [[], 'tunnel_config'], ['config', 'tunnel_config'], [42, 'tunnel_config'],
    [{ peer: GOOD.peer }, 'interface'], [{ ...GOOD, interface: [GOOD.interface] }, 'interface'],
    [{ interface: GOOD.interface }, 'peer'], [{ ...GOOD, peer: 'peer' }, 'peer'],
    [{ ...GOOD, extra: nested }, 'extra.nested.nested.nested.nested.nested.nested.nested'],
  ]
  for (const [config, field] of cases) t.equal(refusedField(config), field, JSON.stringify(config).slice(0, 60))
  t.throws(() => checkRegistration(null), new TunnelConfigError('answer', 'not a JSON object'))
  t.throws(() => checkRegistration({ tunnel_config: GOOD }), new TunnelConfigError('domains', 'not a JSON object'))
  t.throws(() => checkRegistration({ tunnel_config: GOOD, domains: { subdomain: 'box.erugo.cloud', custom_domains: 'x' } }), new TunnelConfigError('domains.custom_domains', 'must be a list of domain names'))
  t.throws(() => checkRegistration({ tunnel_config: GOOD, domains: { subdomain: 'box\r\n.erugo.cloud', custom_domains: [] } }), new TunnelConfigError('domains.subdomain', 'holds a control character'))
})

t.test('accepted values come back in our own formatting; other keys are dropped', async t => {
  const plan = planFromConfig({ ...GOOD, PostUp: 'touch /tmp/x', interface: { ...GOOD.interface, PostUp: 'touch /tmp/x' }, peer: { ...GOOD.peer, endpoint: 'Connect.ERUGO.cloud:51820', PreDown: 'x' } })
  t.same(plan, {
    address: '10.100.0.42',
    addressCidr: '10.100.0.42/32',
    gatewayAddress: '10.100.0.1',
    allowedIps: '10.100.0.1/32',
    peerPublicKey: KEY,
    endpointHost: 'connect.erugo.cloud',
    endpointPort: 51820,
    persistentKeepalive: 25,
  })
  const endpoints: Array<[string, string]> = [
    ['[2001:DB8:0:0:0:0:0:1]:51820', '2001:db8::1'],
    ['[2001:db8:0:1:0:0:0:1]:51820', '2001:db8:0:1::1'],
    ['[1:0:0:2:0:0:3:4]:51820', '1::2:0:0:3:4'],
    ['[2001:db8:0:0:1:0:0:0]:51820', '2001:db8:0:0:1::'],
    ['[2001:db8:1:2:3:4:5:0]:51820', '2001:db8:1:2:3:4:5:0'],
    ['[::ffff:192.0.2.1]:51820', '::ffff:c000:201'],
    ['[::1]:51820', '::1'],
    ['[0001:0db8::0001]:51820', '1:db8::1'],
    ['127.0.0.1:51820', '127.0.0.1'],
    ['1e100.net:1', '1e100.net'],
    ['localhost:65535', 'localhost'],
  ]
  for (const [endpoint, host] of endpoints) t.equal(planFromConfig(withPeer('endpoint', endpoint)).endpointHost, host, endpoint)
  t.same(formatTunnelConfig(parseTunnelConfig({ ...GOOD, PostUp: 'x', peer: { ...GOOD.peer, endpoint: '[2001:DB8::0001]:51820' } })), {
    interface: { address: '10.100.0.42/32' },
    peer: { public_key: KEY, endpoint: '[2001:db8::1]:51820', allowed_ips: '10.100.0.1/32', persistent_keepalive: 25 },
  }, 'the state file keeps the canonical form only')
})

t.test('a plan not made by planFromConfig is checked again before it is written', async t => {
  const plan = planFromConfig(GOOD)
  const key = generatePrivateKey()
  const tampered: Array<[Partial<typeof plan>, string]> = [
    [{ endpointHost: `connect.erugo.cloud\n${INJECTED}` }, 'peer.endpoint'],
    [{ allowedIps: '0.0.0.0/0' }, 'peer.allowed_ips'],
    [{ allowedIps: '10.100.0.2/32' }, 'peer.allowed_ips'],
    [{ addressCidr: `10.100.0.42/32\n${INJECTED}` }, 'interface.address'],
    [{ address: '10.100.0.43' }, 'interface.address'],
    [{ peerPublicKey: `${KEY}\n${INJECTED}` }, 'peer.public_key'],
    [{ endpointPort: 51820.5 }, 'peer.endpoint'],
    [{ persistentKeepalive: Number.NaN }, 'peer.persistent_keepalive'],
  ]
  for (const [change, field] of tampered) {
    t.throws(() => checkPlan({ ...plan, ...change }), { name: 'TunnelConfigError', field }, JSON.stringify(change))
    t.throws(() => wgQuickConfig(key, { ...plan, ...change }), { name: 'TunnelConfigError', field })
  }
})

// ---- the fleet: tunnel_config.peers and the heartbeat's peers ----

const KEY_B = 'HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw='
const KEY_C = 'xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg='
const PRIMARY = { gateway_id: 'gw-a', role: 'primary', region: 'eu-west', ...GOOD.peer }
const BACKUP = { gateway_id: 'gw-b', role: 'backup', region: null, public_key: KEY_B, endpoint: 'gw-b.erugo.cloud:51820', allowed_ips: '10.100.255.254/32', persistent_keepalive: 25 }
const FLEET = { ...GOOD, peers: [PRIMARY, BACKUP] }

function withGateway (index: number, field: string, value: unknown): unknown {
  const peers: Array<Record<string, unknown>> = [{ ...PRIMARY }, { ...BACKUP }]
  if (value === undefined) delete peers[index][field]
  else peers[index][field] = value
  return { ...GOOD, peers }
}

t.test('peers: every gateway as a plan, primary first; the state file keeps the list in our formatting', async t => {
  const plan = planFromConfig({ ...FLEET, peers: [{ ...PRIMARY, PostUp: 'x' }, { ...BACKUP, endpoint: 'GW-B.erugo.cloud:51820' }] })
  t.equal(plan.gatewayAddress, '10.100.0.1', 'the top-level fields are the primary\'s')
  t.equal(plan.gatewayId, 'gw-a')
  t.same(planGateways(plan).map(g => [g.gatewayId, g.role, g.region, g.gatewayAddress, g.allowedIps, g.peerPublicKey, g.endpointHost]), [
    ['gw-a', 'primary', 'eu-west', '10.100.0.1', '10.100.0.1/32', KEY, 'connect.erugo.cloud'],
    ['gw-b', 'backup', null, '10.100.255.254', '10.100.255.254/32', KEY_B, 'gw-b.erugo.cloud'],
  ])
  t.same(formatTunnelConfig(parseTunnelConfig(FLEET)).peers, [
    { gateway_id: 'gw-a', role: 'primary', region: 'eu-west', public_key: KEY, endpoint: 'connect.erugo.cloud:51820', allowed_ips: '10.100.0.1/32', persistent_keepalive: 25 },
    { gateway_id: 'gw-b', role: 'backup', region: null, public_key: KEY_B, endpoint: 'gw-b.erugo.cloud:51820', allowed_ips: '10.100.255.254/32', persistent_keepalive: 25 },
  ])
  t.same(checkPlan(plan).gateways.length, 2, 'a fleet plan passes the writers\' check')
  t.equal(planGateways(planFromConfig({ ...FLEET, peers: [{ ...PRIMARY, region: undefined }] })).length, 1, 'one gateway in peers')
  t.equal(planGateways(planFromConfig(FLEET)).length, 2)
})

t.test('an older control plane sends only peer: that is the only gateway, and the plan is what it always was', async t => {
  const plan = planFromConfig(GOOD)
  t.same(planGateways(plan).map(g => [g.gatewayId, g.role, g.peerPublicKey]), [[null, 'primary', KEY]])
  t.equal(plan.backups, undefined)
  t.equal(formatTunnelConfig(parseTunnelConfig(GOOD)).peers, undefined, 'no peers invented for the state file')
  t.equal(planGateways(planFromConfig({ ...GOOD, peers: null })).length, 1, 'null is absent')
})

t.test('peers: each gateway\'s fields are checked like peer\'s, named by index', async t => {
  const cases: Array<[unknown, string]> = [
    [withGateway(1, 'allowed_ips', '0.0.0.0/0'), 'peers[1].allowed_ips'],
    [withGateway(1, 'allowed_ips', '10.100.0.0/16'), 'peers[1].allowed_ips'],
    [withGateway(1, 'allowed_ips', '10.100.0.42/32'), 'peers[1].allowed_ips'],
    [withGateway(1, 'allowed_ips', '169.254.169.254/32'), 'peers[1].allowed_ips'],
    [withGateway(1, 'allowed_ips', `10.100.255.254/32\n${INJECTED}`), 'peers[1].allowed_ips'],
    [withGateway(1, 'public_key', `${KEY_B}\n${INJECTED}`), 'peers[1].public_key'],
    [withGateway(1, 'public_key', 'nope'), 'peers[1].public_key'],
    [withGateway(1, 'endpoint', 'gw-b.erugo.cloud:51820\nPostUp = x'), 'peers[1].endpoint'],
    [withGateway(1, 'endpoint', '[::]:51820'), 'peers[1].endpoint'],
    [withGateway(1, 'persistent_keepalive', -1), 'peers[1].persistent_keepalive'],
    [withGateway(1, 'gateway_id', undefined), 'peers[1].gateway_id'],
    [withGateway(1, 'gateway_id', ''), 'peers[1].gateway_id'],
    [withGateway(1, 'gateway_id', 'gw b'), 'peers[1].gateway_id'],
    [withGateway(1, 'gateway_id', 'x'.repeat(129)), 'peers[1].gateway_id'],
    [withGateway(1, 'gateway_id', 7), 'peers[1].gateway_id'],
    [withGateway(1, 'region', 'EU'), 'peers[1].region'],
    [withGateway(1, 'region', 'eu/west'), 'peers[1].region'],
    [withGateway(1, 'region', 3), 'peers[1].region'],
    [withGateway(1, 'role', 'primary'), 'peers[1].role'],
    [withGateway(1, 'role', 'Backup'), 'peers[1].role'],
    [withGateway(0, 'role', 'backup'), 'peers[0].role'],
    [withGateway(0, 'role', undefined), 'peers[0].role'],
    [{ ...FLEET, peers: [PRIMARY, 'gw-b'] }, 'peers[1]'],
    [{ ...FLEET, peers: [PRIMARY, [BACKUP]] }, 'peers[1]'],
  ]
  for (const [config, field] of cases) t.equal(refusedField(config), field, JSON.stringify(config).slice(-80))
})

t.test('peers: keys, addresses and ids distinct; one list, 1 to MAX_GATEWAYS long; peers[0] is peer', async t => {
  const many = Array.from({ length: MAX_GATEWAYS + 1 }, (_, i) => ({ ...BACKUP, gateway_id: `gw-${i}`, role: i === 0 ? 'primary' : 'backup', public_key: i === 0 ? KEY : Buffer.alloc(32, i).toString('base64'), allowed_ips: i === 0 ? '10.100.0.1/32' : `10.100.255.${i}/32` }))
  const cases: Array<[unknown, string]> = [
    [withGateway(1, 'public_key', KEY), 'peers[1].public_key'],
    [withGateway(1, 'allowed_ips', '10.100.0.1/32'), 'peers[1].allowed_ips'],
    [withGateway(1, 'gateway_id', 'gw-a'), 'peers[1].gateway_id'],
    [{ ...FLEET, peers: [] }, 'peers'],
    [{ ...FLEET, peers: {} }, 'peers'],
    [{ ...FLEET, peers: 'gw-a' }, 'peers'],
    [{ ...FLEET, peers: many }, 'peers'],
    // The spec's peer and the list must describe the same primary.
    [{ ...FLEET, peers: [{ ...BACKUP, role: 'primary' }, { ...PRIMARY, role: 'backup' }] }, 'peers[0]'],
    [{ ...FLEET, peer: { ...GOOD.peer, allowed_ips: '10.100.0.9/32' } }, 'peers[0]'],
    // A control character in a gateway refuses the lot.
    [withGateway(1, 'note', 'a\u0000b'), 'peers[1].note'],
  ]
  for (const [config, field] of cases) t.equal(refusedField(config), field, field)
  t.equal(planGateways(planFromConfig({ ...FLEET, peers: many.slice(0, MAX_GATEWAYS) })).length, MAX_GATEWAYS, 'MAX_GATEWAYS is accepted')
})

t.test('the heartbeat\'s peers: checked the same way against our tunnel address, then a plan for the same address', async t => {
  const plan = planFromConfig(FLEET)
  const tunnelIp = checkPlan(plan).tunnelIp
  const third = { gateway_id: 'gw-c', role: 'backup', region: null, public_key: KEY_C, endpoint: '192.0.2.9:51820', allowed_ips: '10.100.255.253/32', persistent_keepalive: 25 }
  const next = planWithGateways(plan, checkGatewayList([PRIMARY, third], tunnelIp))
  t.equal(next.address, '10.100.0.42', 'the same tunnel address')
  t.same(planGateways(next).map(g => g.gatewayId), ['gw-a', 'gw-c'])
  const promoted = planWithGateways(plan, checkGatewayList([{ ...BACKUP, role: 'primary' }], tunnelIp))
  t.equal(promoted.peerPublicKey, KEY_B, 'a new primary moves into the top-level fields')
  t.equal(promoted.gatewayAddress, '10.100.255.254')
  const refused = (value: unknown): string | null => {
    try {
      checkGatewayList(value, tunnelIp)
      return null
    } catch (err) {
      if (!(err instanceof TunnelConfigError)) throw err
      return err.field
    }
  }
  t.equal(refused([{ ...PRIMARY, allowed_ips: '10.100.0.42/32' }]), 'peers[0].allowed_ips', 'our own address as a gateway\'s')
  t.equal(refused([{ ...PRIMARY, allowed_ips: '0.0.0.0/0' }]), 'peers[0].allowed_ips')
  t.equal(refused([PRIMARY, { ...BACKUP, endpoint: `x:1\n${INJECTED}` }]), 'peers[1].endpoint')
  t.equal(refused([]), 'peers')
  t.equal(refused(null), 'peers')
  t.equal(refused([PRIMARY, PRIMARY]), 'peers[1].role')
  t.equal(refused([PRIMARY, { ...BACKUP, public_key: KEY }]), 'peers[1].public_key')
})

t.test('a fleet plan not made by planFromConfig is checked again, each gateway', async t => {
  const plan = planFromConfig(FLEET)
  const key = generatePrivateKey()
  const backup = planGateways(plan)[1]
  const tampered: Array<[unknown, string]> = [
    [{ ...plan, backups: [{ ...backup, allowedIps: '0.0.0.0/0' }] }, 'peers[1].allowed_ips'],
    [{ ...plan, backups: [{ ...backup, endpointHost: `gw-b\n${INJECTED}` }] }, 'peers[1].endpoint'],
    [{ ...plan, backups: [{ ...backup, peerPublicKey: KEY }] }, 'peers[1].public_key'],
    [{ ...plan, backups: [{ ...backup, gatewayId: null }] }, 'peers[1].gateway_id'],
    [{ ...plan, gatewayId: undefined, backups: [{ ...backup, gatewayId: null }] }, 'peers'],
  ]
  for (const [change, field] of tampered) {
    t.throws(() => checkPlan(change as typeof plan), { name: 'TunnelConfigError', field }, field)
    t.throws(() => wgQuickConfig(key, change as typeof plan), { name: 'TunnelConfigError', field })
  }
})
