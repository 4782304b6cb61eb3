import t from 'tap'
import { ConfigError, describeVariables, loadConfig } from '../../control/config.ts'

t.test('defaults', async t => {
  const c = loadConfig({})
  t.equal(c.apiPort, 3000)
  t.equal(c.apiHost, '::', 'dual-stack: IPv4 and IPv6 clients')
  t.equal(c.databaseUrl, undefined)
  t.equal(c.dataDir, './data')
  t.equal(c.autoMigrate, true)
  t.equal(c.publicUrl, 'http://localhost:3000')
  t.equal(c.passwordResetUrl, 'http://localhost:3000/reset-password')
  t.same(c.argon2, { memoryKiB: 19 * 1024, timeCost: 2, parallelism: 1 }, 'OWASP argon2id minimum')
  t.equal(c.tokens.accessTtlSeconds, 900)
  t.equal(c.tokens.refreshTtlSeconds, 604800)
  t.equal(c.verifyEmailTtlSeconds, 86400)
  t.equal(c.resetPasswordTtlSeconds, 3600)
  t.same(c.rateLimits.authPerIp, { burst: 20, perMinute: 10 })
  t.same(c.rateLimits.loginFailuresPerAddress, { burst: 5, perMinute: 1 })
  t.same(c.rateLimits.loginFailuresPerAccount, { burst: 50, perMinute: 5 })
  t.same(c.rateLimits.mailPerAccount, { burst: 3, perMinute: 1 })
  t.same(c.rateLimits.authFailuresPerIp, { burst: 20, perMinute: 10 })
  t.equal(c.tunnel.statusWindowSeconds, 180, 'status window: REJECT_AFTER_TIME')
})

t.test('CC_API_HOST: a name, an IPv4 or IPv6 address, IPv6 with or without brackets', async t => {
  t.equal(loadConfig({ CC_API_HOST: '[::]' }).apiHost, '::')
  t.equal(loadConfig({ CC_API_HOST: '[::1]' }).apiHost, '::1')
  t.equal(loadConfig({ CC_API_HOST: '2001:db8::1' }).apiHost, '2001:db8::1')
  t.equal(loadConfig({ CC_API_HOST: '0.0.0.0' }).apiHost, '0.0.0.0')
  t.equal(loadConfig({ CC_API_HOST: 'localhost' }).apiHost, 'localhost')
  for (const bad of ['[::1', '[::1]:3000', '[localhost]', 'not a host!']) {
    t.throws(() => loadConfig({ CC_API_HOST: bad }), /^CC_API_HOST: /, bad)
  }
})

t.test('CC_TUNNEL_STATUS_WINDOW: seconds, 1 to 3600', async t => {
  t.equal(loadConfig({ CC_TUNNEL_STATUS_WINDOW: '8' }).tunnel.statusWindowSeconds, 8)
  for (const bad of ['0', '-5', '1.5', 'soon', '3601']) {
    t.throws(() => loadConfig({ CC_TUNNEL_STATUS_WINDOW: bad }), /^CC_TUNNEL_STATUS_WINDOW: /, bad)
  }
})

t.test('CC_SUBDOMAIN_QUARANTINE: seconds, default 30 days, 0 turns it off', async t => {
  t.equal(loadConfig({}).subdomainQuarantineSeconds, 30 * 86400)
  t.equal(loadConfig({ CC_SUBDOMAIN_QUARANTINE: '0' }).subdomainQuarantineSeconds, 0)
  for (const bad of ['-1', '1.5', 'month']) {
    t.throws(() => loadConfig({ CC_SUBDOMAIN_QUARANTINE: bad }), /^CC_SUBDOMAIN_QUARANTINE: /, bad)
  }
})

t.test('CC_DOMAIN_PENDING_TTL: seconds, default 7 days', async t => {
  t.equal(loadConfig({}).dns.pendingTtlSeconds, 7 * 86400)
  t.equal(loadConfig({ CC_DOMAIN_PENDING_TTL: '3600' }).dns.pendingTtlSeconds, 3600)
  for (const bad of ['0', '-1', 'week']) {
    t.throws(() => loadConfig({ CC_DOMAIN_PENDING_TTL: bad }), /^CC_DOMAIN_PENDING_TTL: /, bad)
  }
})

t.test('alert settings: defaults, bounds, the webhook URL', async t => {
  const d = loadConfig({})
  t.same(d.alerts, { offlineAfterSeconds: 300, intervalSeconds: 60, certificateFailingAfterSeconds: 3600, operatorWebhookUrl: undefined, operatorWebhookTimeoutMs: 5000 })
  const set = loadConfig({ CC_ALERT_OFFLINE_AFTER: '60', CC_ALERT_INTERVAL: '5', CC_ALERT_CERTIFICATE_FAILING_AFTER: '600', CC_OPERATOR_WEBHOOK_URL: 'https://ops.example.test/hooks/cc', CC_OPERATOR_WEBHOOK_TIMEOUT_MS: '2000' })
  t.same(set.alerts, { offlineAfterSeconds: 60, intervalSeconds: 5, certificateFailingAfterSeconds: 600, operatorWebhookUrl: 'https://ops.example.test/hooks/cc', operatorWebhookTimeoutMs: 2000 })
  for (const [name, bad] of [['CC_ALERT_OFFLINE_AFTER', '0'], ['CC_ALERT_OFFLINE_AFTER', 'soon'], ['CC_ALERT_INTERVAL', '3601'], ['CC_ALERT_CERTIFICATE_FAILING_AFTER', '-1'], ['CC_OPERATOR_WEBHOOK_URL', 'ftp://ops.example.test/'], ['CC_OPERATOR_WEBHOOK_URL', 'not a url'], ['CC_OPERATOR_WEBHOOK_TIMEOUT_MS', '0']]) {
    t.throws(() => loadConfig({ [name]: bad }), new RegExp(`^${name}: `), `${name}=${bad}`)
  }
})

t.test('values from the environment', async t => {
  const c = loadConfig({
    CC_API_PORT: '8081',
    DATABASE_URL: 'postgres://u:p@db:5432/cc',
    CC_PUBLIC_URL: 'https://api.erugo.cloud/',
    CC_AUTO_MIGRATE: '0',
    CC_RATE_PER_TOKEN: '5/30',
    CC_ACCESS_TOKEN_SECRET: 'a'.repeat(43),
    CC_EXTRA_UNRELATED: 'ignored',
    CC_SMTP_URL: '',
  })
  t.equal(c.apiPort, 8081)
  t.equal(c.databaseUrl, 'postgres://u:p@db:5432/cc')
  t.equal(c.publicUrl, 'https://api.erugo.cloud', 'trailing slash dropped')
  t.equal(c.autoMigrate, false)
  t.same(c.rateLimits.perToken, { burst: 5, perMinute: 30 })
  t.equal(c.tokens.accessSecret, 'a'.repeat(43))
  t.equal(c.smtpUrl, undefined, 'empty means unset')
})

t.test('a bad value: one line naming the variable', async t => {
  const cases: Array<[Record<string, string>, string]> = [
    [{ CC_API_PORT: 'eighty' }, 'CC_API_PORT'],
    [{ CC_API_PORT: '70000' }, 'CC_API_PORT'],
    [{ DATABASE_URL: 'mysql://x' }, 'DATABASE_URL'],
    [{ CC_PUBLIC_URL: 'not a url' }, 'CC_PUBLIC_URL'],
    [{ CC_SMTP_URL: 'http://mail' }, 'CC_SMTP_URL'],
    [{ CC_ACCESS_TOKEN_SECRET: 'short' }, 'CC_ACCESS_TOKEN_SECRET'],
    [{ CC_RATE_AUTH_PER_IP: 'lots' }, 'CC_RATE_AUTH_PER_IP'],
    [{ CC_RATE_AUTH_PER_IP: '0/5' }, 'CC_RATE_AUTH_PER_IP'],
    [{ CC_RATE_LOGIN_FAILURES_PER_ADDRESS: '5' }, 'CC_RATE_LOGIN_FAILURES_PER_ADDRESS'],
    [{ CC_RATE_LOGIN_FAILURES_PER_ACCOUNT: '50/0' }, 'CC_RATE_LOGIN_FAILURES_PER_ACCOUNT'],
    [{ CC_RATE_MAIL_PER_ACCOUNT: '-1/1' }, 'CC_RATE_MAIL_PER_ACCOUNT'],
    [{ CC_RATE_AUTH_FAILURES_PER_IP: '1.5/2' }, 'CC_RATE_AUTH_FAILURES_PER_IP'],
    [{ CC_RATE_AUTH_PER_ACCOUNT: '5/2' }, 'CC_RATE_AUTH_PER_ACCOUNT'],
    [{ CC_ARGON2_MEMORY_KIB: '1' }, 'CC_ARGON2_MEMORY_KIB'],
    [{ CC_LOG_LEVEL: 'loud' }, 'CC_LOG_LEVEL'],
    [{ CC_AUTO_MIGRATE: 'perhaps' }, 'CC_AUTO_MIGRATE'],
    [{ CC_TRUSTED_PROXIES: '127.0.0.1,proxy.local' }, 'CC_TRUSTED_PROXIES'],
    [{ CC_TRUSTED_PROXIES: '10.0.0.0/33' }, 'CC_TRUSTED_PROXIES'],
    [{ CC_TRUSTED_PROXIES: '127.0.0.1', CC_TRUST_PROXY_HOPS: '1' }, 'CC_TRUSTED_PROXIES'],
  ]
  for (const [env, name] of cases) {
    try {
      loadConfig(env)
      t.fail(`${name} accepted ${JSON.stringify(env)}`)
    } catch (err) {
      t.ok(err instanceof ConfigError, name)
      t.match((err as Error).message, new RegExp(`^${name}: `), `names ${name}`)
      t.notMatch((err as Error).message, /\n/, 'one line')
    }
  }
})

t.test('help lists every variable', async t => {
  const text = describeVariables()
  for (const name of ['CC_API_PORT', 'DATABASE_URL', 'CC_DATA_DIR', 'CC_SMTP_URL', 'CC_ARGON2_MEMORY_KIB']) t.match(text, name)
  t.match(text, 'CC_API_PORT (default 3000)')
  for (const line of ['CC_RATE_LOGIN_FAILURES_PER_ADDRESS (default 5/1)', 'CC_RATE_LOGIN_FAILURES_PER_ACCOUNT (default 50/5)', 'CC_RATE_MAIL_PER_ACCOUNT (default 3/1)', 'CC_RATE_AUTH_FAILURES_PER_IP (default 20/10)']) t.match(text, line)
  t.notMatch(text, 'CC_RATE_AUTH_PER_ACCOUNT', 'the retired variable is not offered')
})

t.test('traffic retention and client addresses: days, defaults 90 and 7, addresses truncated unless opted out', async t => {
  t.same(loadConfig({}).traffic, { usageRetentionDays: 90, accessLogRetentionDays: 7, accessLogFullAddresses: false })
  t.same(loadConfig({ CC_USAGE_RETENTION_DAYS: '30', CC_ACCESS_LOG_RETENTION_DAYS: '1', CC_ACCESS_LOG_FULL_ADDRESSES: 'true' }).traffic,
    { usageRetentionDays: 30, accessLogRetentionDays: 1, accessLogFullAddresses: true })
  for (const [name, bad] of [['CC_USAGE_RETENTION_DAYS', '0'], ['CC_USAGE_RETENTION_DAYS', 'forever'], ['CC_ACCESS_LOG_RETENTION_DAYS', '-1'], ['CC_ACCESS_LOG_RETENTION_DAYS', '366'], ['CC_ACCESS_LOG_FULL_ADDRESSES', 'maybe']]) {
    t.throws(() => loadConfig({ [name]: bad }), new RegExp(`^${name}: `), `${name}=${bad}`)
  }
})
