import t from 'tap'
import { planFromConfig, resolveEndpoint, samePlan, TunnelConfigError } from '../../agent/tunnel.ts'
import type { TunnelConfig } from '../../proto/api/tunnel.ts'

// The spec's POST /tunnel/register example.
const SPEC: TunnelConfig = {
  interface: { address: '10.100.0.42/32' },
  peer: { public_key: '1y8JgBgNarojHK12KYbAAy+7HqZq2HGsE0Qw24toBXo=', endpoint: 'connect.erugo.cloud:51820', allowed_ips: '10.100.0.0/24', persistent_keepalive: 25 },
}

t.test('the spec\'s example becomes a plan', async t => {
  t.same(planFromConfig(SPEC), {
    address: '10.100.0.42',
    addressCidr: '10.100.0.42/32',
    gatewayAddress: '10.100.0.1',
    allowedIps: '10.100.0.0/24',
    peerPublicKey: SPEC.peer.public_key,
    endpointHost: 'connect.erugo.cloud',
    endpointPort: 51820,
    persistentKeepalive: 25,
  })
  t.equal(planFromConfig({ ...SPEC, peer: { ...SPEC.peer, allowed_ips: '10.100.0.1/32' } }).gatewayAddress, '10.100.0.1', 'a /32 is the gateway itself')
  t.equal(planFromConfig({ ...SPEC, peer: { ...SPEC.peer, endpoint: '[2001:db8::1]:51820' } }).endpointHost, '2001:db8::1')
})

t.test('every unusable field is named', async t => {
  const cases: Array<[string, TunnelConfig]> = [
    ['interface.address', { ...SPEC, interface: { address: '10.100.0/32' } }],
    ['peer.public_key', { ...SPEC, peer: { ...SPEC.peer, public_key: 'nope' } }],
    ['peer.allowed_ips', { ...SPEC, peer: { ...SPEC.peer, allowed_ips: 'everything' } }],
    ['peer.endpoint', { ...SPEC, peer: { ...SPEC.peer, endpoint: 'connect.erugo.cloud' } }],
    ['peer.endpoint', { ...SPEC, peer: { ...SPEC.peer, endpoint: 'connect.erugo.cloud:70000' } }],
    ['peer.persistent_keepalive', { ...SPEC, peer: { ...SPEC.peer, persistent_keepalive: -1 } }],
  ]
  for (const [field, config] of cases) t.throws(() => planFromConfig(config), new TunnelConfigError(`the API's tunnel_config has an unusable ${field}`), field)
  t.throws(() => planFromConfig({} as TunnelConfig), TunnelConfigError)
})

t.test('samePlan and resolveEndpoint', async t => {
  const a = planFromConfig(SPEC)
  t.ok(samePlan(a, planFromConfig(SPEC)))
  t.notOk(samePlan(a, planFromConfig({ ...SPEC, peer: { ...SPEC.peer, endpoint: 'connect.erugo.cloud:51821' } })))
  t.notOk(samePlan(null, a))
  t.same(await resolveEndpoint('127.0.0.1'), { address: '127.0.0.1', family: 4 })
  t.equal((await resolveEndpoint('localhost')).family, 4, 'IPv4 first')
})
