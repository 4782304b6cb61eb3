/** RPC listener settings and the gateway secret's storage. */
import t from 'tap'
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ConfigError } from '../../../control/config.ts'
import { loadRpcConfig } from '../../../control/rpc/config.ts'
import { GATEWAY_SECRET_FILE, loadGatewaySecret } from '../../../control/rpc/secret.ts'

t.test('loadRpcConfig: defaults bind loopback; each bad variable is named, a secret never shown', async t => {
  t.strictSame(loadRpcConfig({}), { host: '127.0.0.1', port: 8081, secret: undefined, waitMs: 30_000, reportIntervalMs: 5_000, certStoreKey: undefined })
  const secret = 'a'.repeat(43)
  const certStoreKey = 'k'.repeat(43)
  t.strictSame(loadRpcConfig({ CC_RPC_HOST: '0.0.0.0', CC_RPC_PORT: '0', CC_GATEWAY_SECRET: secret, CC_RPC_WAIT: '0.5', CC_REPORT_INTERVAL: '1', CC_CERT_STORE_KEY: certStoreKey }), { host: '0.0.0.0', port: 0, secret, waitMs: 500, reportIntervalMs: 1_000, certStoreKey })
  t.equal(loadRpcConfig({ CC_RPC_HOST: '[::1]' }).host, '::1', 'IPv6 in brackets')
  t.equal(loadRpcConfig({ CC_RPC_HOST: '::' }).host, '::', 'every address, IPv4 and IPv6')
  const cases: Array<[Record<string, string>, string]> = [
    [{ CC_RPC_PORT: '65536' }, 'CC_RPC_PORT'],
    [{ CC_RPC_HOST: 'not a host!' }, 'CC_RPC_HOST'],
    [{ CC_RPC_HOST: '[::1]:8081' }, 'CC_RPC_HOST'],
    [{ CC_RPC_WAIT: '61' }, 'CC_RPC_WAIT'],
    [{ CC_REPORT_INTERVAL: '0' }, 'CC_REPORT_INTERVAL'],
    [{ CC_GATEWAY_SECRET: 'too-short-secret' }, 'CC_GATEWAY_SECRET'],
    [{ CC_CERT_STORE_KEY: 'too-short-secret' }, 'CC_CERT_STORE_KEY'],
    [{ CC_CERT_STORE_KEY: 'too-short-secret'.padEnd(44, 'x') }, 'CC_CERT_STORE_KEY'],
  ]
  for (const [env, name] of cases) {
    try {
      loadRpcConfig(env)
      t.fail(`${name}: accepted`)
    } catch (err) {
      t.ok(err instanceof ConfigError, name)
      t.match((err as Error).message, new RegExp(`^${name}: `))
      t.notMatch((err as Error).message, /too-short-secret/, 'the secret is not echoed')
      t.notMatch((err as Error).message, /\n/, 'one line')
    }
  }
})

t.test('loadGatewaySecret: generated once (0600), then reused; a configured one wins', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'cc-secret-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const first = loadGatewaySecret(undefined, join(dir, 'data'))
  t.match(first, /^[A-Za-z0-9_-]{43}$/)
  const path = join(dir, 'data', GATEWAY_SECRET_FILE)
  t.equal(statSync(path).mode & 0o777, 0o600)
  t.equal(readFileSync(path, 'utf8').trim(), first)
  t.equal(loadGatewaySecret(undefined, join(dir, 'data')), first, 'the same secret after a restart')
  t.equal(loadGatewaySecret('b'.repeat(43), join(dir, 'data')), 'b'.repeat(43))
  writeFileSync(path, 'garbage')
  t.throws(() => loadGatewaySecret(undefined, join(dir, 'data')), /does not hold a gateway secret/, 'a damaged file is an error, not silently replaced')
})
