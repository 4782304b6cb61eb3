import t from 'tap'
import { planFromConfig, resolveEndpoint, samePlan, TunnelConfigError } from '../../agent/tunnel.ts'
import type { TunnelConfig } from '../../proto/api/tunnel.ts'

// The spec's POST /tunnel/register example, with allowed_ips as the API sends it: the gateway's /32.
const SPEC: TunnelConfig = {
  interface: { address: '10.100.0.42/32' },
  peer: { public_key: '1y8JgBgNarojHK12KYbAAy+7HqZq2HGsE0Qw24toBXo=', endpoint: 'connect.erugo.cloud:51820', allowed_ips: '10.100.0.1/32', persistent_keepalive: 25 },
}

t.test('the spec\'s example becomes a plan', async t => {
  t.same(planFromConfig(SPEC), {
    address: '10.100.0.42',
    addressCidr: '10.100.0.42/32',
    gatewayAddress: '10.100.0.1',
    allowedIps: '10.100.0.1/32',
    peerPublicKey: SPEC.peer.public_key,
    endpointHost: 'connect.erugo.cloud',
    endpointPort: 51820,
    persistentKeepalive: 25,
  })
  t.throws(() => planFromConfig({ ...SPEC, peer: { ...SPEC.peer, allowed_ips: '10.100.0.0/24' } }), new TunnelConfigError('peer.allowed_ips', 'must be the gateway\'s single address with /32 (nothing wider, one entry) (got "10.100.0.0/24")'), 'the spec example\'s /24 is wider than the gateway')
  t.equal(planFromConfig({ ...SPEC, peer: { ...SPEC.peer, endpoint: '[2001:db8::1]:51820' } }).endpointHost, '2001:db8::1')
})

t.test('every unusable field is named', async t => {
  const cases: Array<[string, TunnelConfig, string]> = [
    ['interface.address', { ...SPEC, interface: { address: '10.100.0/32' } }, 'must be one IPv4 address with /32 (got "10.100.0/32")'],
    ['peer.public_key', { ...SPEC, peer: { ...SPEC.peer, public_key: 'nope' } }, 'must be 32 bytes in canonical base64 (44 characters)'],
    ['peer.allowed_ips', { ...SPEC, peer: { ...SPEC.peer, allowed_ips: 'everything' } }, 'must be the gateway\'s single address with /32 (nothing wider, one entry) (got "everything")'],
    ['peer.endpoint', { ...SPEC, peer: { ...SPEC.peer, endpoint: 'connect.erugo.cloud' } }, 'must be host:port (an RFC 1123 name, an IPv4 address or a bracketed IPv6 address; port 1-65535) (got "connect.erugo.cloud")'],
    ['peer.endpoint', { ...SPEC, peer: { ...SPEC.peer, endpoint: 'connect.erugo.cloud:70000' } }, 'must be host:port (an RFC 1123 name, an IPv4 address or a bracketed IPv6 address; port 1-65535) (got "connect.erugo.cloud:70000")'],
    ['peer.persistent_keepalive', { ...SPEC, peer: { ...SPEC.peer, persistent_keepalive: -1 } }, 'must be an integer 0-65535 (got "-1")'],
  ]
  for (const [field, config, reason] of cases) t.throws(() => planFromConfig(config), new TunnelConfigError(field, reason), field)
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
