/**
 * ACME from configuration: CC_ACME_* variables and the static config's edge.acme block are
 * validated with one-line errors naming the setting, and a gateway built from them (the path
 * `gateway --control` and `start` take: loadGatewayEnv -> gatewayConfigFrom -> validateConfig ->
 * Gateway.start) gets its certificates from pebble instead of the local CA.
 */
import t, { type Test } from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { startPebble } from '../../../helpers/pebble.ts'
import { freePort } from '../../../helpers/ports.ts'
import { tempDir, captureLogger, waitFor } from '../helpers.ts'
import { acmeGatewayEnv, handshake } from './lab.ts'
import { describeGatewayVariables, gatewayConfigFrom, loadGatewayEnv } from '../../../../gateway/control/env.ts'
import { ConfigError, validateConfig } from '../../../../gateway/config/schema.ts'
import { Gateway } from '../../../../gateway/index.ts'
import { encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../../../../proto/noise/keys.ts'

function configError (fn: () => unknown): ConfigError {
  try {
    fn()
  } catch (err) {
    if (err instanceof ConfigError) return err
    throw err
  }
  throw new Error('no ConfigError thrown')
}

t.test('CC_ACME_* errors are one line naming the variable', async t => {
  const dir = tempDir(t)
  const notPem = path.join(dir, 'not-a-bundle.txt')
  fs.writeFileSync(notPem, 'hello\n')
  const cases: Array<[Record<string, string>, string, RegExp]> = [
    [{ CC_ACME_DIRECTORY: 'http://acme.example.test/dir' }, 'CC_ACME_DIRECTORY', /https/],
    [{ CC_ACME_DIRECTORY: 'not a url' }, 'CC_ACME_DIRECTORY', /https/],
    [{ CC_ACME_DIRECTORY: 'https://acme.example.test/dir', CC_ACME_CA_BUNDLE: path.join(dir, 'missing.pem') }, 'CC_ACME_CA_BUNDLE', /cannot read .*missing\.pem \(ENOENT\)/],
    [{ CC_ACME_DIRECTORY: 'https://acme.example.test/dir', CC_ACME_CA_BUNDLE: notPem }, 'CC_ACME_CA_BUNDLE', /no PEM certificate/],
    [{ CC_ACME_DIRECTORY: 'https://acme.example.test/dir', CC_ACME_EMAIL: 'nobody' }, 'CC_ACME_EMAIL', /email/],
    [{ CC_ACME_DIRECTORY: 'https://acme.example.test/dir', CC_ACME_CHALLENGES: 'http-01,dns-01' }, 'CC_ACME_CHALLENGES', /http-01, tls-alpn-01/],
    [{ CC_ACME_EMAIL: 'ops@example.test' }, 'CC_ACME_EMAIL', /needs CC_ACME_DIRECTORY/],
  ]
  for (const [env, variable, detail] of cases) {
    const err = configError(() => loadGatewayEnv({ CC_DATA_DIR: dir, ...env }))
    t.equal(err.field, variable, JSON.stringify(env))
    t.ok(err.message.startsWith(`${variable}: `), err.message)
    t.match(err.message, detail)
    t.notMatch(err.message, /\n/, 'one line')
  }
})

t.test('CC_ACME_* values reach the edge config; unset means the local CA', async t => {
  const dir = tempDir(t)
  const bundle = path.join(dir, 'roots.pem')
  fs.writeFileSync(bundle, '-----BEGIN CERTIFICATE-----\nMAA=\n-----END CERTIFICATE-----\n')
  const key = encodeKey(generatePrivateKey())

  const local = loadGatewayEnv({ CC_DATA_DIR: dir })
  t.equal(local.acme, null)
  t.equal(validateConfig(gatewayConfigFrom(local, key, '10.100.0.1')).edge?.acme, undefined)

  const env = loadGatewayEnv({ CC_DATA_DIR: dir, CC_ACME_DIRECTORY: 'https://acme.example.test/dir', CC_ACME_EMAIL: 'ops@example.test', CC_ACME_CA_BUNDLE: bundle })
  t.same(env.acme, { directory: 'https://acme.example.test/dir', email: 'ops@example.test', caBundle: bundle, challenges: ['http-01', 'tls-alpn-01'] })
  const acme = validateConfig(gatewayConfigFrom(env, key, '10.100.0.1')).edge?.acme
  t.equal(acme?.directory, 'https://acme.example.test/dir')
  t.equal(acme?.caBundlePem, fs.readFileSync(bundle, 'utf8'))
  t.same(acme?.challenges, ['http-01', 'tls-alpn-01'])

  const only = loadGatewayEnv({ CC_DATA_DIR: dir, CC_ACME_DIRECTORY: 'https://acme.example.test/dir', CC_ACME_CHALLENGES: 'tls-alpn-01' })
  t.same(only.acme?.challenges, ['tls-alpn-01'])

  const help = describeGatewayVariables()
  for (const name of ['CC_ACME_DIRECTORY', 'CC_ACME_EMAIL', 'CC_ACME_CA_BUNDLE', 'CC_ACME_CHALLENGES']) t.match(help, name)
})

t.test('static config edge.acme: bad fields are named', async t => {
  const dir = tempDir(t)
  const base = (acme: unknown): unknown => ({ privateKey: encodeKey(generatePrivateKey()), edge: { dataDir: dir, acme } })
  const cases: Array<[unknown, string]> = [
    [{}, 'edge.acme.directory'],
    [{ directory: 'http://acme.example.test/dir' }, 'edge.acme.directory'],
    [{ directory: 'https://acme.example.test/dir', challenges: ['dns-01'] }, 'edge.acme.challenges[0]'],
    [{ directory: 'https://acme.example.test/dir', caBundle: path.join(dir, 'missing.pem') }, 'edge.acme.caBundle'],
  ]
  for (const [acme, field] of cases) {
    const err = configError(() => validateConfig(base(acme)))
    t.equal(err.field, field, JSON.stringify(acme))
    t.notMatch(err.message, /\n/)
  }
  t.same(validateConfig(base({ directory: 'https://acme.example.test/dir', challenges: ['tls-alpn-01'] })).edge?.acme,
    { directory: 'https://acme.example.test/dir', challenges: ['tls-alpn-01'] })
})

/** A gateway from CC_ variables (the control path's conversion) with one peer routing `hostname`. */
async function gatewayFromEnv (t: Test, challenges: string, hostname: string): Promise<void> {
  const [httpsPort, httpPort] = await Promise.all([freePort(), freePort()])
  const pebble = await startPebble(t, { httpPort, tlsPort: httpsPort })
  const settings = loadGatewayEnv(acmeGatewayEnv(t, pebble, { https: httpsPort, http: httpPort }, {
    CC_ACME_EMAIL: 'ops@example.test',
    CC_ACME_CHALLENGES: challenges,
  }))
  const raw = gatewayConfigFrom(settings, encodeKey(generatePrivateKey()), '10.100.0.1')
  raw.peers = [{ publicKey: encodeKey(publicKeyFromPrivate(generatePrivateKey())), allowedIPs: ['10.100.0.2/32'], hostnames: [hostname] }]
  const { logger, lines } = captureLogger()
  const gateway = await Gateway.start(validateConfig(raw), logger)
  t.teardown(() => gateway.close(0))
  const edge = gateway.edge!
  t.equal(edge.caCertificatePath, undefined, 'no local CA')
  t.ok(lines.some(l => l.msg === 'certificates from ACME' && l.directory === pebble.directoryUrl), 'logs the CA in use')

  t.ok(await waitFor(() => edge.certificateStates().some(s => s.status !== 'pending'), 30_000), 'issuance finished')
  const [state] = edge.certificateStates()
  t.equal(state?.hostname, hostname)
  t.equal(state?.status, 'active', JSON.stringify(state))
  t.equal(state?.issuer, `acme:${pebble.directoryUrl}`)
  const hs = await handshake(httpsPort, hostname, await pebble.root())
  t.ok(hs.authorized, `verifies against pebble's root: ${hs.error ?? ''}`)
  t.match(hs.peerCertificate?.subjectaltname, new RegExp(`DNS:${hostname.replace(/\./g, '\\.')}`))
  // The edge's own store holds it (what a restart serves from).
  t.ok(fs.existsSync(path.join(settings.dataDir, 'tls', 'certificates', hostname, 'private-key.pem')))
}

t.test('a gateway built from CC_ACME_* gets a certificate from pebble by HTTP-01', async t => {
  await gatewayFromEnv(t, 'http-01', 'files.example.test')
})

t.test('CC_ACME_CHALLENGES=tls-alpn-01: the certificate comes by TLS-ALPN-01 on the HTTPS listener', async t => {
  await gatewayFromEnv(t, 'tls-alpn-01', 'alpn.example.test')
})
