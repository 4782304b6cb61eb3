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
