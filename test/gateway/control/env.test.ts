/**
 * gateway/control/env.ts settings added for ACME in a fleet: CC_CERT_STORE and the DNS-01 provider
 * (CC_ACME_DNS_PROVIDER + its own variables), and the WireGuard socket (CC_WG_UDP_IO), each bad
 * value a one-line error naming the variable.
 */
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError, validateConfig } from '../../../gateway/config/schema.ts'
import { describeGatewayVariables, gatewayConfigFrom, loadGatewayEnv } from '../../../gateway/control/env.ts'
import { DNS_PROVIDERS, createDnsProvider, ChalltestsrvDnsProvider } from '../../../gateway/edge/acme/dns-provider.ts'
import { encodeKey, generatePrivateKey } from '../../../proto/noise/keys.ts'

const dir = mkdtempSync(join(tmpdir(), 'cc-env-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
const ACME = { CC_DATA_DIR: dir, CC_ACME_DIRECTORY: 'https://acme.example.test/dir' }

function configError (env: Record<string, string>): ConfigError {
  try {
    loadGatewayEnv(env)
  } catch (err) {
    if (err instanceof ConfigError) return err
    throw err
  }
  throw new Error(`accepted: ${JSON.stringify(env)}`)
}

t.test('CC_CERT_STORE: control by default, file on request, nothing else', async t => {
  t.equal(loadGatewayEnv({ CC_DATA_DIR: dir }).certStore, 'control')
  t.equal(loadGatewayEnv({ CC_DATA_DIR: dir, CC_CERT_STORE: 'file' }).certStore, 'file')
  const err = configError({ CC_DATA_DIR: dir, CC_CERT_STORE: 'disk' })
  t.equal(err.message, 'CC_CERT_STORE: must be control or file (got "disk")')
})

t.test('CC_WG_UDP_IO: auto by default, batched or dgram on request, carried into the gateway config', async t => {
  t.equal(loadGatewayEnv({ CC_DATA_DIR: dir }).udpIo, 'auto')
  const env = loadGatewayEnv({ CC_DATA_DIR: dir, CC_WG_UDP_IO: 'dgram' })
  t.equal(env.udpIo, 'dgram')
  t.equal(gatewayConfigFrom(env, encodeKey(generatePrivateKey()), '10.100.0.1').udpIo, 'dgram')
  t.equal(configError({ CC_DATA_DIR: dir, CC_WG_UDP_IO: 'epoll' }).message, 'CC_WG_UDP_IO: must be auto, batched or dgram (got "epoll")')
})

t.test('CC_WG_RESUME_RATE: 2000 by default, 0 turns resuming off, carried into the gateway config; a bad value names the variable', async t => {
  t.equal(loadGatewayEnv({ CC_DATA_DIR: dir }).resumeRate, 2000)
  const off = loadGatewayEnv({ CC_DATA_DIR: dir, CC_WG_RESUME_RATE: '0' })
  const config = validateConfig(gatewayConfigFrom(off, encodeKey(generatePrivateKey()), '10.100.0.1'))
  t.equal(config.dos.resumeInitiationsPerSecond, 0)
  t.match(configError({ CC_DATA_DIR: dir, CC_WG_RESUME_RATE: 'fast' }).message, /^CC_WG_RESUME_RATE: /)
  t.match(configError({ CC_DATA_DIR: dir, CC_WG_RESUME_RATE: '-1' }).message, /^CC_WG_RESUME_RATE: /)
})

t.test('CC_ACME_DNS_PROVIDER with its settings', async t => {
  const env = loadGatewayEnv({ ...ACME, CC_ACME_DNS_PROVIDER: 'challtestsrv', CC_ACME_DNS_CHALLTESTSRV_URL: 'http://127.0.0.1:8055' })
  t.same(env.acme?.dns, { provider: 'challtestsrv', settings: { CC_ACME_DNS_CHALLTESTSRV_URL: 'http://127.0.0.1:8055' } })
  t.equal(loadGatewayEnv(ACME).acme?.dns, undefined, 'unset: no DNS-01')
  t.ok(createDnsProvider(env.acme!.dns!.provider, env.acme!.dns!.settings) instanceof ChalltestsrvDnsProvider)
  t.throws(() => createDnsProvider('constructor', {}), /unknown DNS provider/, 'only the table\'s own entries')
  // The file config's schema knows no DNS provider: it is handed to Gateway.start built.
  const raw = gatewayConfigFrom(env, encodeKey(generatePrivateKey()), '10.100.0.1') as { edge: { acme: Record<string, unknown> } }
  t.notOk('dns' in raw.edge.acme)
  t.equal(validateConfig(raw).edge?.acme?.directory, ACME.CC_ACME_DIRECTORY)
})

t.test('DNS provider errors: one line naming the variable', async t => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ ...ACME, CC_ACME_DNS_PROVIDER: 'route53' }, 'CC_ACME_DNS_PROVIDER: must be one of challtestsrv (got "route53")'],
    [{ ...ACME, CC_ACME_DNS_PROVIDER: 'challtestsrv' }, 'CC_ACME_DNS_CHALLTESTSRV_URL: required by CC_ACME_DNS_PROVIDER=challtestsrv'],
    [{ ...ACME, CC_ACME_DNS_PROVIDER: 'challtestsrv', CC_ACME_DNS_CHALLTESTSRV_URL: 'ftp://x' }, 'CC_ACME_DNS_CHALLTESTSRV_URL: must be the http(s) URL of the management API (got "ftp://x")'],
    [{ ...ACME, CC_ACME_DNS_CHALLTESTSRV_URL: 'http://127.0.0.1:8055' }, 'CC_ACME_DNS_CHALLTESTSRV_URL: needs CC_ACME_DNS_PROVIDER=challtestsrv'],
    [{ CC_DATA_DIR: dir, CC_ACME_DNS_PROVIDER: 'challtestsrv', CC_ACME_DNS_CHALLTESTSRV_URL: 'http://127.0.0.1:8055' }, 'CC_ACME_DNS_PROVIDER: needs CC_ACME_DIRECTORY'],
    [{ CC_DATA_DIR: dir, CC_ACME_DNS_CHALLTESTSRV_URL: 'http://127.0.0.1:8055' }, 'CC_ACME_DNS_CHALLTESTSRV_URL: needs CC_ACME_DNS_PROVIDER=challtestsrv'],
  ]
  for (const [env, message] of cases) {
    const err = configError(env)
    t.equal(err.message, message)
    t.equal(err.field, message.slice(0, message.indexOf(':')))
    t.notMatch(err.message, /\n/, 'one line')
  }
})

t.test('--help lists every provider setting', async t => {
  const help = describeGatewayVariables()
  t.match(help, /CC_ACME_DNS_PROVIDER/)
  t.match(help, /CC_CERT_STORE \(default control\)/)
  for (const [provider, definition] of Object.entries(DNS_PROVIDERS)) {
    for (const variable of Object.keys(definition.settings)) t.match(help, `${variable} (CC_ACME_DNS_PROVIDER=${provider}:`)
  }
})

t.test('CC_EDGE_* limits: defaults from the config schema, set ones carried into the edge config', async t => {
  const key = encodeKey(generatePrivateKey())
  const defaults = validateConfig(gatewayConfigFrom(loadGatewayEnv({ CC_DATA_DIR: dir }), key, '10.100.0.1')).edge?.limits
  t.same(defaults, {
    maxConnectionsPerClient: 256, clientSlotShare: 0.25, maxConcurrentStreams: 32, tlsHandshakeTimeoutMs: 10_000,
    scarceSlotShare: 0.75, minUploadBytesPerSecond: 1_024, uploadProgressWindowMs: 10_000, tlsContextCache: 1_000,
    wireguardStreamsPerClient: 8, wireguardStreamIdleMs: 185_000,
  })
  const env = loadGatewayEnv({
    CC_DATA_DIR: dir, CC_EDGE_MAX_CONNECTIONS_PER_CLIENT: '64', CC_EDGE_CLIENT_SLOT_SHARE: '0.5', CC_EDGE_H2_MAX_STREAMS: '16',
    CC_EDGE_TLS_HANDSHAKE_TIMEOUT_MS: '5000', CC_EDGE_SLOTS_SCARCE_ABOVE: '0.9', CC_EDGE_MIN_UPLOAD_RATE: '0', CC_EDGE_UPLOAD_PROGRESS_WINDOW_MS: '30000',
    CC_TLS_CONTEXT_CACHE: '50',
    CC_EDGE_WG_STREAMS_PER_CLIENT: '2', CC_EDGE_WG_STREAM_IDLE_MS: '60000',
  })
  t.same(validateConfig(gatewayConfigFrom(env, key, '10.100.0.1')).edge?.limits, {
    maxConnectionsPerClient: 64, clientSlotShare: 0.5, maxConcurrentStreams: 16, tlsHandshakeTimeoutMs: 5_000,
    scarceSlotShare: 0.9, minUploadBytesPerSecond: 0, uploadProgressWindowMs: 30_000, tlsContextCache: 50,
    wireguardStreamsPerClient: 2, wireguardStreamIdleMs: 60_000,
  })
  const only = validateConfig(gatewayConfigFrom(loadGatewayEnv({ CC_DATA_DIR: dir, CC_EDGE_H2_MAX_STREAMS: '8' }), key, '10.100.0.1')).edge?.limits
  t.equal(only?.maxConcurrentStreams, 8)
  t.equal(only?.clientSlotShare, 0.25, 'the others keep their defaults')
  const help = describeGatewayVariables()
  t.match(help, 'CC_EDGE_CLIENT_SLOT_SHARE (default 0.25)')
  t.match(help, 'CC_EDGE_TLS_HANDSHAKE_TIMEOUT_MS (default 10000)')
  t.match(help, 'CC_TLS_CONTEXT_CACHE (default 1000)')
})

t.test('a bad CC_EDGE_* limit stops start-up with one line naming the variable', async t => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ CC_EDGE_CLIENT_SLOT_SHARE: '2' }, 'CC_EDGE_CLIENT_SLOT_SHARE: must be less than or equal to 1 (got "2")'],
    [{ CC_EDGE_CLIENT_SLOT_SHARE: '0' }, 'CC_EDGE_CLIENT_SLOT_SHARE: must be greater than 0 (got "0")'],
    [{ CC_EDGE_MAX_CONNECTIONS_PER_CLIENT: 'lots' }, 'CC_EDGE_MAX_CONNECTIONS_PER_CLIENT: must be a number (got "lots")'],
    [{ CC_EDGE_H2_MAX_STREAMS: '0' }, 'CC_EDGE_H2_MAX_STREAMS: must be greater than or equal to 1 (got "0")'],
    [{ CC_EDGE_TLS_HANDSHAKE_TIMEOUT_MS: '1.5' }, 'CC_EDGE_TLS_HANDSHAKE_TIMEOUT_MS: must be an integer (got "1.5")'],
    [{ CC_EDGE_SLOTS_SCARCE_ABOVE: '-1' }, 'CC_EDGE_SLOTS_SCARCE_ABOVE: must be greater than or equal to 0 (got "-1")'],
    [{ CC_EDGE_MIN_UPLOAD_RATE: '-5' }, 'CC_EDGE_MIN_UPLOAD_RATE: must be greater than or equal to 0 (got "-5")'],
    [{ CC_EDGE_UPLOAD_PROGRESS_WINDOW_MS: '10' }, 'CC_EDGE_UPLOAD_PROGRESS_WINDOW_MS: must be greater than or equal to 100 (got "10")'],
    [{ CC_TLS_CONTEXT_CACHE: '0' }, 'CC_TLS_CONTEXT_CACHE: must be greater than or equal to 1 (got "0")'],
  ]
  for (const [env, message] of cases) {
    const err = configError({ CC_DATA_DIR: dir, ...env })
    t.equal(err.message, message)
    t.equal(err.field, Object.keys(env)[0])
  }
})

t.test('a bad edge.limits field in the static config is named by its path', async t => {
  const raw = gatewayConfigFrom(loadGatewayEnv({ CC_DATA_DIR: dir }), encodeKey(generatePrivateKey()), '10.100.0.1') as { edge: Record<string, unknown> }
  raw.edge.limits = { clientSlotShare: 1.5 }
  t.throws(() => validateConfig(raw), { name: 'ConfigError', field: 'edge.limits.clientSlotShare', message: 'edge.limits.clientSlotShare: must be less than or equal to 1' })
  raw.edge.limits = { maxConnectionsPerClient: 10, slotShare: 0.5 }
  t.throws(() => validateConfig(raw), { field: 'edge.limits.slotShare', message: /is not allowed/ })
})

t.test('CC_CONTROL_PUBLIC_ORIGIN: control\'s API listener for app.<base> and api.<base>', async t => {
  t.equal(loadGatewayEnv({ CC_DATA_DIR: dir }).controlOrigin, null, 'unset: none')
  t.same(loadGatewayEnv({ CC_DATA_DIR: dir, CC_CONTROL_PUBLIC_ORIGIN: 'http://control:8080' }).controlOrigin, { host: 'control', port: 8080 })
  t.same(loadGatewayEnv({ CC_DATA_DIR: dir, CC_CONTROL_PUBLIC_ORIGIN: 'http://[::1]:8080/' }).controlOrigin, { host: '::1', port: 8080 })
  t.same(loadGatewayEnv({ CC_DATA_DIR: dir, CC_CONTROL_PUBLIC_ORIGIN: 'http://10.0.0.5' }).controlOrigin, { host: '10.0.0.5', port: 80 })
  for (const bad of ['https://control:8080', 'control:8080', 'http://control:8080/v1', 'http://u:p@control:8080', 'http://control:8080/?x=1']) {
    const err = configError({ CC_DATA_DIR: dir, CC_CONTROL_PUBLIC_ORIGIN: bad })
    t.equal(err.field, 'CC_CONTROL_PUBLIC_ORIGIN', bad)
    t.notMatch(err.message, /\n/, 'one line')
  }
  t.match(describeGatewayVariables(), /CC_CONTROL_PUBLIC_ORIGIN/, 'listed in --help')
})

t.test('listeners default to dual-stack [::]; host settings take IPv6 with or without brackets', async t => {
  const defaults = loadGatewayEnv({ CC_DATA_DIR: dir })
  t.equal(defaults.wgHost, '::')
  t.equal(defaults.edgeHost, '::')
  const config = validateConfig(gatewayConfigFrom(defaults, encodeKey(generatePrivateKey()), '10.100.0.1'))
  t.equal(config.listenAddress, '::', 'WireGuard UDP on ::')
  t.same(config.edge?.httpsListen, { address: '::', port: 8443 })
  t.same(config.edge?.httpListen, { address: '::', port: 8000 })
  const set = loadGatewayEnv({ CC_DATA_DIR: dir, CC_WG_HOST: '[::1]', CC_EDGE_HOST: '[2001:db8::1]', CC_METRICS_LISTEN: '[::1]:9091', CC_GATEWAY_ENDPOINT: '[2001:db8::1]:51820' })
  t.same([set.wgHost, set.edgeHost, set.metricsListen, set.endpoint], ['::1', '2001:db8::1', '[::1]:9091', '[2001:db8::1]:51820'])
  const written = validateConfig(gatewayConfigFrom(set, encodeKey(generatePrivateKey()), '10.100.0.1'))
  t.same(written.edge?.httpsListen, { address: '2001:db8::1', port: 8443 }, 'written back as [addr]:port')
  t.same(written.metricsListen, { address: '::1', port: 9091 })
  t.equal(loadGatewayEnv({ CC_DATA_DIR: dir, CC_WG_HOST: '0.0.0.0' }).wgHost, '0.0.0.0', 'IPv4 only on request')
  for (const [name, bad] of [['CC_WG_HOST', '[::1'], ['CC_EDGE_HOST', '[::]:443'], ['CC_METRICS_LISTEN', '[::1]'], ['CC_GATEWAY_ENDPOINT', '2001:db8::1:51820']]) {
    t.match(configError({ CC_DATA_DIR: dir, [name]: bad }).message, new RegExp(`^${name}: `), `${name}=${bad}`)
  }
})

t.test('fleet settings: region, relay port and URL (defaulting to the endpoint\'s host), control replicas', async t => {
  const none = loadGatewayEnv({ CC_DATA_DIR: dir })
  t.same([none.region, none.relayPort, none.relayUrl, none.controlUrls], [null, null, null, []], 'unset: no region, no relay listener')
  t.notOk('relayListen' in (gatewayConfigFrom(none, encodeKey(generatePrivateKey()), '10.100.0.1').edge as object), 'no relay listener in the gateway config')

  const fleet = loadGatewayEnv({ CC_DATA_DIR: dir, CC_GATEWAY_REGION: 'eu-west', CC_RELAY_PORT: '8444', CC_GATEWAY_ENDPOINT: 'gw1.example.com:51820', CC_CONTROL_URL: 'http://c1:8081, http://c2:8081' })
  t.equal(fleet.region, 'eu-west')
  t.equal(fleet.relayPort, 8444)
  t.equal(fleet.relayUrl, 'https://gw1.example.com:8444', 'https://<host of CC_GATEWAY_ENDPOINT>:<CC_RELAY_PORT>')
  t.same(fleet.controlUrls, ['http://c1:8081', 'http://c2:8081'])
  const config = validateConfig(gatewayConfigFrom(fleet, encodeKey(generatePrivateKey()), '10.100.0.1'))
  t.same(config.edge?.relayListen, { address: '::', port: 8444 }, 'the relay listens on the edge host')
  t.equal(config.edge?.relayMode, 'stream', 'relayed connections are streams unless CC_RELAY_MODE says otherwise')
  const passthrough = loadGatewayEnv({ CC_DATA_DIR: dir, CC_RELAY_PORT: '8444', CC_GATEWAY_ENDPOINT: 'gw1.example.com:51820', CC_RELAY_MODE: 'passthrough' })
  t.equal(validateConfig(gatewayConfigFrom(passthrough, encodeKey(generatePrivateKey()), '10.100.0.1')).edge?.relayMode, 'passthrough')

  t.equal(loadGatewayEnv({ CC_DATA_DIR: dir, CC_RELAY_PORT: '8444', CC_GATEWAY_ENDPOINT: '[2001:db8::1]:51820' }).relayUrl, 'https://[2001:db8::1]:8444')
  t.equal(loadGatewayEnv({ CC_DATA_DIR: dir, CC_RELAY_PORT: '8444', CC_RELAY_URL: 'https://relay.gw1.example.com:443' }).relayUrl, 'https://relay.gw1.example.com:443', 'CC_RELAY_URL wins')
  t.match(describeGatewayVariables(), /CC_RELAY_PORT\n/)
  t.match(describeGatewayVariables(), /CC_RELAY_URL\n/)
  t.match(describeGatewayVariables(), /CC_RELAY_MODE/)
  t.match(describeGatewayVariables(), /CC_GATEWAY_REGION\n/)
})

t.test('a bad fleet setting stops start-up with one line naming the variable', async t => {
  const cases: Array<[Record<string, string>, string, RegExp]> = [
    [{ CC_GATEWAY_REGION: 'EU West' }, 'CC_GATEWAY_REGION', /lower-case/],
    [{ CC_RELAY_PORT: '0' }, 'CC_RELAY_PORT', /greater than or equal to 1/],
    [{ CC_RELAY_PORT: '70000' }, 'CC_RELAY_PORT', /less than or equal to 65535/],
    [{ CC_RELAY_PORT: 'https' }, 'CC_RELAY_PORT', /must be a number/],
    [{ CC_RELAY_PORT: '8444' }, 'CC_RELAY_URL', /CC_GATEWAY_ENDPOINT/],
    [{ CC_RELAY_URL: 'https://gw1.example.com:8444' }, 'CC_RELAY_URL', /needs CC_RELAY_PORT/],
    [{ CC_RELAY_PORT: '8444', CC_RELAY_URL: 'http://gw1.example.com:8444' }, 'CC_RELAY_URL', /https:\/\/host:port/],
    [{ CC_RELAY_PORT: '8444', CC_RELAY_URL: 'https://gw1.example.com:8444/relay' }, 'CC_RELAY_URL', /https:\/\/host:port/],
    [{ CC_RELAY_PORT: '8444', CC_RELAY_URL: 'https://gw1.example.com:99999' }, 'CC_RELAY_URL', /port out of range/],
    [{ CC_RELAY_PORT: '8444', CC_GATEWAY_ENDPOINT: 'gw1:51820', CC_EDGE: '0' }, 'CC_RELAY_PORT', /needs the edge/],
    [{ CC_CONTROL_URL: 'http://c1:8081,ftp://c2' }, 'CC_CONTROL_URL', /comma-separated list/],
    [{ CC_CONTROL_URL: 'http://c1:8081,' }, 'CC_CONTROL_URL', /comma-separated list/],
    [{ CC_RELAY_MODE: 'tunnel' }, 'CC_RELAY_MODE', /must be one of stream, passthrough, request/],
  ]
  for (const [env, field, message] of cases) {
    const err = configError({ CC_DATA_DIR: dir, ...env })
    t.equal(err.field, field, JSON.stringify(env))
    t.match(err.message, message)
    t.notMatch(err.message, /\n/, 'one line')
  }
})

t.test('a bad fleet or routes entry in the static config is named by its path', async t => {
  const raw = gatewayConfigFrom(loadGatewayEnv({ CC_DATA_DIR: dir }), encodeKey(generatePrivateKey()), '10.100.0.1')
  const fingerprint = 'a'.repeat(64)
  t.same(validateConfig({ ...raw, fleet: [{ id: 'gw-a', relayUrl: 'https://127.0.0.1:8444', relayFingerprint: fingerprint }] }).fleet[0].id, 'gw-a')
  t.throws(() => validateConfig({ ...raw, fleet: [{ id: 'gw-a', relayUrl: 'https://127.0.0.1:8444', relayFingerprint: 'A'.repeat(64) }] }), { name: 'ConfigError', field: 'fleet[0].relayFingerprint' })
  t.throws(() => validateConfig({ ...raw, fleet: [{ id: 'gw-a', relayUrl: 'http://127.0.0.1:8444', relayFingerprint: fingerprint }] }), { name: 'ConfigError', field: 'fleet[0].relayUrl' })
  t.throws(() => validateConfig({ ...raw, routes: [{ instanceId: 'i1', hostnames: ['Files.Example.com'], gateways: [] }] }), { name: 'ConfigError', field: 'routes[0].hostnames[0]' })
  t.throws(() => validateConfig({ ...raw, routes: [{ instanceId: 'i1', hostnames: [] }] }), { name: 'ConfigError', field: 'routes[0].gateways' })
})
