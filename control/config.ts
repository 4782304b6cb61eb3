/**
 * Control API configuration: environment variables (prefix CC_, plus DATABASE_URL), validated once
 * at start-up. A bad value raises ConfigError whose message is one line naming the variable.
 */
import Joi from 'joi'
import { parseIPv4Address, parseIPv4Prefix } from '../proto/wire/ipv4.ts'
import { BRACKETED_IPV6, DUAL_STACK_ANY } from '../proto/net/address.ts'
import { WIREGUARD_KEY } from '../proto/rpc/schemas.ts'
import { parseTrustedProxies, type ProxyMatcher } from './trusted-proxies.ts'
import { ConfigError, describeEnv, loadEnv } from '../proto/config-env.ts'

export interface RateLimitRule {
  /** Bucket size: how many requests may arrive at once. */
  burst: number
  /** Sustained rate: tokens added per minute. */
  perMinute: number
}

export interface ControlConfig {
  apiHost: string
  apiPort: number
  /** Postgres connection string; unset means the embedded PGlite database in dataDir. */
  databaseUrl: string | undefined
  dataDir: string
  autoMigrate: boolean
  /** Base of every link we send (verification, reset); never taken from the Host header. */
  publicUrl: string
  /** Page that receives `?token=` from a password reset mail. */
  passwordResetUrl: string
  smtpUrl: string | undefined
  mailFrom: string
  tokens: {
    issuer: string
    accessTtlSeconds: number
    refreshTtlSeconds: number
    /** base64url secrets, one per token kind (RFC 8725 3.9); unset: generated into dataDir. */
    accessSecret: string | undefined
    refreshSecret: string | undefined
    instanceSecret: string | undefined
  }
  /** argon2id cost; defaults are OWASP's minimum for argon2id: m=19 MiB, t=2, p=1. */
  argon2: { memoryKiB: number, timeCost: number, parallelism: number }
  rateLimits: {
    /** Every /auth request, per client address. */
    authPerIp: RateLimitRule
    /** Failed sign-ins (wrong password, unknown account) per account and client address. */
    loginFailuresPerAddress: RateLimitRule
    /** Failed sign-ins per account from all addresses: the ceiling for distributed guessing. */
    loginFailuresPerAccount: RateLimitRule
    /** Mails one auth route may trigger per account (register, forgot-password, resend: one bucket each). */
    mailPerAccount: RateLimitRule
    /** Requests whose bearer token fails to authenticate, per client address. */
    authFailuresPerIp: RateLimitRule
    perToken: RateLimitRule
    perIp: RateLimitRule
    /** The dashboard's page shells and files, per client address (a page load asks for a dozen). */
    staticPerIp: RateLimitRule
  }
  /** Number of reverse proxies in front of us whose X-Forwarded-For we believe. */
  trustProxyHops: number
  /** CC_TRUSTED_PROXIES: peers whose X-Forwarded-For is read (trusted-proxies.ts); null: none. */
  trustedProxies: ProxyMatcher | null
  maxBodyBytes: number
  verifyEmailTtlSeconds: number
  resetPasswordTtlSeconds: number
  logLevel: string
  /** Instances are served at <subdomain>.<baseDomain>. */
  baseDomain: string
  /** A subdomain given up (rename, delete) stays reserved for its previous owner this long. */
  subdomainQuarantineSeconds: number
  tunnel: {
    /** IPv4 prefix tunnel addresses come from; its first host is the gateway's own address. */
    pool: string
    /** A released tunnel address is not handed out again for this long. */
    ipQuarantineSeconds: number
    /** How recent a reported handshake must be for an instance to read `connected` (services/tunnel.ts). */
    statusWindowSeconds: number
  }
  /** What instances are told about the gateway until the gateway RPC reports it. */
  gateway: {
    /** WireGuard public key (base64); unset: instance creation and registration answer 503. */
    publicKey: string | undefined
    /** host:port clients send WireGuard to. */
    endpoint: string
  }
  billing: BillingConfig
  dns: DnsConfig
  traffic: TrafficConfig
  alerts: AlertsConfig
  /** CC_METRICS_LISTEN: where GET /metrics (Prometheus) is served; null: nowhere. */
  metricsListen: { host: string, port: number } | null
}

/** Per-instance usage and access log (services/usage.ts). */
export interface TrafficConfig {
  /** Hourly usage rows older than this are pruned. */
  usageRetentionDays: number
  /** Access-log rows older than this are pruned. */
  accessLogRetentionDays: number
  /** Store client addresses whole; false (default): truncated to /24 (IPv4) or /48 (IPv6) before storing. */
  accessLogFullAddresses: boolean
}

/** Owner mails and the operator webhook (services/instance-alerts.ts, services/operator-events.ts). */
export interface AlertsConfig {
  /** An instance offline this long gets its owner one mail; also the least time between two mails. */
  offlineAfterSeconds: number
  /** How often the alert job looks (once per period across replicas). */
  intervalSeconds: number
  /** A hostname whose certificate issuance has failed this long raises `certificate.failing`. */
  certificateFailingAfterSeconds: number
  /** Where operator events are POSTed; undefined: not sent. */
  operatorWebhookUrl: string | undefined
  /** Per delivery attempt. */
  operatorWebhookTimeoutMs: number
}

/** Stripe account settings; all four values or none (then billing is off: everyone is on Free). */
export interface StripeConfig {
  secretKey: string
  webhookSecret: string
  prices: { pro: string, business: string }
  /** Where the SDK sends requests (https://api.stripe.com; tests point it at a local fake). */
  apiBase: string
}

export interface BillingConfig {
  /** undefined: billing is not configured. */
  stripe: StripeConfig | undefined
  /** Webhook signatures whose timestamp is further than this from now are refused (either way). */
  webhookToleranceSeconds: number
  /** A past_due subscription keeps its plan this long after its unpaid period began. */
  pastDueGraceSeconds: number
  /** POST /billing/portal return_url must start with one of these (same origin, path prefix). */
  portalReturnUrls: string[]
}

export interface DnsConfig {
  /** Resolvers for custom-domain checks (`ip` or `ip:port`); empty: the system's. */
  resolvers: string[]
  timeoutMs: number
  tries: number
  /** The gateway's public addresses, for apex domains' A/AAAA records; empty: resolve the tunnel target. */
  gatewayAddresses: string[]
  /** How often a verified domain's record is checked again. */
  recheckIntervalSeconds: number
  /** A verified domain whose record is gone keeps being served this long, then stops. */
  lapseGraceSeconds: number
  /** A domain nobody verifies is dropped this long after it was added (or lapsed). */
  pendingTtlSeconds: number
}

export { ConfigError }

const secret = Joi.string().pattern(/^[A-Za-z0-9_-]{43,}$/).message('must be base64url of at least 32 bytes')
const rule = Joi.string().pattern(/^\d+\/\d+$/).message('must be BURST/PER_MINUTE, e.g. 10/5')
const positiveInt = Joi.number().integer().min(1)

/** Each variable: its joi rule and default (string form, as it would appear in the environment). */
const VARIABLES = {
  CC_API_HOST: Joi.string().replace(BRACKETED_IPV6, '$1').hostname().default(DUAL_STACK_ANY),
  CC_API_PORT: Joi.number().integer().min(0).max(65535).default(3000),
  DATABASE_URL: Joi.string().uri({ scheme: ['postgres', 'postgresql'] }),
  CC_DATA_DIR: Joi.string().default('./data'),
  CC_AUTO_MIGRATE: Joi.boolean().truthy('1').falsy('0').default(true),
  CC_PUBLIC_URL: Joi.string().uri({ scheme: ['http', 'https'] }).default('http://localhost:3000'),
  CC_PASSWORD_RESET_URL: Joi.string().uri({ scheme: ['http', 'https'] }),
  CC_SMTP_URL: Joi.string().uri({ scheme: ['smtp', 'smtps'] }),
  CC_MAIL_FROM: Joi.string().default('Erugo Cloud <no-reply@localhost>'),
  CC_TOKEN_ISSUER: Joi.string().max(200).default('erugo-cloud-connect'),
  CC_ACCESS_TOKEN_TTL: positiveInt.default(900),
  CC_REFRESH_TOKEN_TTL: positiveInt.default(7 * 24 * 3600),
  CC_ACCESS_TOKEN_SECRET: secret,
  CC_REFRESH_TOKEN_SECRET: secret,
  CC_INSTANCE_TOKEN_SECRET: secret,
  CC_ARGON2_MEMORY_KIB: Joi.number().integer().min(8).max(4 * 1024 * 1024).default(19 * 1024),
  CC_ARGON2_TIME_COST: positiveInt.max(20).default(2),
  CC_ARGON2_PARALLELISM: positiveInt.max(16).default(1),
  CC_RATE_AUTH_PER_IP: rule.default('20/10'),
  CC_RATE_LOGIN_FAILURES_PER_ADDRESS: rule.default('5/1'),
  CC_RATE_LOGIN_FAILURES_PER_ACCOUNT: rule.default('50/5'),
  CC_RATE_MAIL_PER_ACCOUNT: rule.default('3/1'),
  CC_RATE_AUTH_FAILURES_PER_IP: rule.default('20/10'),
  CC_RATE_PER_TOKEN: rule.default('120/120'),
  CC_RATE_PER_IP: rule.default('300/300'),
  CC_RATE_STATIC_PER_IP: rule.default('2000/1000'),
  CC_TRUST_PROXY_HOPS: Joi.number().integer().min(0).max(10).default(0),
  CC_TRUSTED_PROXIES: Joi.string().max(4096),
  CC_MAX_BODY_BYTES: positiveInt.max(64 * 1024 * 1024).default(1024 * 1024),
  CC_VERIFY_EMAIL_TTL: positiveInt.default(24 * 3600),
  CC_RESET_PASSWORD_TTL: positiveInt.default(3600),
  CC_LOG_LEVEL: Joi.string().valid('fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent').default('info'),
  CC_BASE_DOMAIN: Joi.string().hostname().lowercase().default('erugo.cloud'),
  CC_TUNNEL_POOL: Joi.string().pattern(/^\d{1,3}(\.\d{1,3}){3}\/\d{1,2}$/).message('must be an IPv4 prefix such as 10.100.0.0/16').default('10.100.0.0/16'),
  CC_TUNNEL_IP_QUARANTINE: Joi.number().integer().min(0).default(24 * 3600),
  CC_SUBDOMAIN_QUARANTINE: Joi.number().integer().min(0).default(30 * 24 * 3600),
  // Below ~150 s a live but idle tunnel reads disconnected between rekeys: lower it only for tests.
  CC_TUNNEL_STATUS_WINDOW: positiveInt.max(3600).default(180),
  CC_GATEWAY_PUBLIC_KEY: Joi.string().pattern(WIREGUARD_KEY).message('must be a WireGuard public key (44 characters of base64)'),
  CC_GATEWAY_ENDPOINT: Joi.string().pattern(/^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9A-Fa-f:.]+\]:\d{1,5}$/).message('must be host:port'),
  CC_STRIPE_SECRET_KEY: Joi.string().pattern(/^(sk|rk)_(test|live)_[A-Za-z0-9]+$/).message('must be a Stripe secret key (sk_live_... or sk_test_...)'),
  CC_STRIPE_WEBHOOK_SECRET: Joi.string().pattern(/^whsec_[A-Za-z0-9+/=]+$/).message('must be a Stripe webhook signing secret (whsec_...)'),
  CC_STRIPE_PRICE_PRO: Joi.string().pattern(/^price_[A-Za-z0-9]+$/).message('must be a Stripe price id (price_...)'),
  CC_STRIPE_PRICE_BUSINESS: Joi.string().pattern(/^price_[A-Za-z0-9]+$/).message('must be a Stripe price id (price_...)'),
  CC_STRIPE_API_BASE: Joi.string().uri({ scheme: ['http', 'https'] }).default('https://api.stripe.com'),
  CC_STRIPE_WEBHOOK_TOLERANCE: positiveInt.max(3600).default(300),
  CC_BILLING_PAST_DUE_GRACE: Joi.number().integer().min(0).default(7 * 24 * 3600),
  CC_BILLING_PORTAL_RETURN_URLS: Joi.string(),
  CC_DNS_RESOLVERS: Joi.string(),
  CC_DNS_TIMEOUT_MS: positiveInt.max(60_000).default(3000),
  CC_DNS_TRIES: positiveInt.max(10).default(2),
  CC_DNS_GATEWAY_ADDRESSES: Joi.string(),
  CC_DOMAIN_RECHECK_INTERVAL: positiveInt.default(3600),
  CC_DOMAIN_LAPSE_GRACE: Joi.number().integer().min(0).default(72 * 3600),
  CC_DOMAIN_PENDING_TTL: positiveInt.default(7 * 24 * 3600),
  CC_USAGE_RETENTION_DAYS: positiveInt.max(3650).default(90),
  CC_ACCESS_LOG_RETENTION_DAYS: positiveInt.max(365).default(7),
  CC_ACCESS_LOG_FULL_ADDRESSES: Joi.boolean().truthy('1').falsy('0').default(false),
  CC_ALERT_OFFLINE_AFTER: positiveInt.max(7 * 24 * 3600).default(300),
  CC_ALERT_INTERVAL: positiveInt.max(3600).default(60),
  CC_ALERT_CERTIFICATE_FAILING_AFTER: positiveInt.max(30 * 24 * 3600).default(3600),
  CC_OPERATOR_WEBHOOK_URL: Joi.string().uri({ scheme: ['http', 'https'] }),
  CC_OPERATOR_WEBHOOK_TIMEOUT_MS: positiveInt.max(60_000).default(5000),
  CC_METRICS_LISTEN: Joi.string().pattern(/^(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/).message('must be address:port, e.g. 127.0.0.1:9091 or [::1]:9091'),
} as const

type Raw = { [K in keyof typeof VARIABLES]: unknown }

const RATE_VARIABLES = [
  'CC_RATE_AUTH_PER_IP', 'CC_RATE_LOGIN_FAILURES_PER_ADDRESS', 'CC_RATE_LOGIN_FAILURES_PER_ACCOUNT', 'CC_RATE_MAIL_PER_ACCOUNT',
  'CC_RATE_AUTH_FAILURES_PER_IP', 'CC_RATE_PER_TOKEN', 'CC_RATE_PER_IP', 'CC_RATE_STATIC_PER_IP',
] as const

/** Variables that no longer exist: refused, so a deployment does not silently lose a setting. */
const RETIRED_VARIABLES: Record<string, string> = {
  CC_RATE_AUTH_PER_ACCOUNT: 'replaced by CC_RATE_LOGIN_FAILURES_PER_ADDRESS, CC_RATE_LOGIN_FAILURES_PER_ACCOUNT and CC_RATE_MAIL_PER_ACCOUNT',
}

function loadTrustedProxies (v: Raw): ProxyMatcher | null {
  const list = v.CC_TRUSTED_PROXIES as string | undefined
  if (list === undefined) return null
  if ((v.CC_TRUST_PROXY_HOPS as number) > 0) throw new ConfigError('CC_TRUSTED_PROXIES', 'set it or CC_TRUST_PROXY_HOPS, not both')
  try {
    return parseTrustedProxies(list)
  } catch (err) {
    throw new ConfigError('CC_TRUSTED_PROXIES', `${(err as Error).message} (got ${JSON.stringify(list)})`)
  }
}

function parseRule (value: string): RateLimitRule {
  const [burst, perMinute] = value.split('/').map(Number)
  return { burst, perMinute }
}

/** The documented variables and their defaults, for `--help` output. */
export function describeVariables (): string {
  return describeEnv(VARIABLES).join('\n')
}

/**
 * Reads the configuration from `env`. Unknown CC_ variables are ignored (other programs share the
 * prefix). Throws ConfigError naming the first bad variable.
 */
export function loadConfig (env: NodeJS.ProcessEnv = process.env): ControlConfig {
  for (const [name, why] of Object.entries(RETIRED_VARIABLES)) {
    if (env[name] !== undefined && env[name] !== '') throw new ConfigError(name, `no longer read, ${why} (unset it)`)
  }
  const raw = loadEnv(VARIABLES, env)
  const v = raw as Raw
  const publicUrl = String(v.CC_PUBLIC_URL).replace(/\/+$/, '')
  for (const name of RATE_VARIABLES) {
    const r = parseRule(String(v[name]))
    if (r.burst < 1 || r.perMinute < 1) throw new ConfigError(name, `both numbers must be at least 1 (got "${String(v[name])}")`)
  }
  const pool = String(v.CC_TUNNEL_POOL)
  try {
    const prefix = parseIPv4Prefix(pool)
    if (prefix.network !== parseIPv4Address(pool.split('/')[0])) throw new Error('host bits set')
    // Network, gateway, at least one instance and broadcast: /30 is the smallest usable pool.
    if (prefix.prefixLength < 8 || prefix.prefixLength > 30) throw new Error('prefix length')
  } catch {
    throw new ConfigError('CC_TUNNEL_POOL', `must be an IPv4 network /8 to /30 with no host bits set (got "${pool}")`)
  }
  const baseDomain = v.CC_BASE_DOMAIN as string
  const trustedProxies = loadTrustedProxies(v)
  const billing = loadBilling(v, publicUrl)
  const dns = loadDns(v)
  return {
    apiHost: v.CC_API_HOST as string,
    apiPort: v.CC_API_PORT as number,
    databaseUrl: v.DATABASE_URL as string | undefined,
    dataDir: v.CC_DATA_DIR as string,
    autoMigrate: v.CC_AUTO_MIGRATE as boolean,
    publicUrl,
    passwordResetUrl: (v.CC_PASSWORD_RESET_URL as string | undefined) ?? `${publicUrl}/reset-password`,
    smtpUrl: v.CC_SMTP_URL as string | undefined,
    mailFrom: v.CC_MAIL_FROM as string,
    tokens: {
      issuer: v.CC_TOKEN_ISSUER as string,
      accessTtlSeconds: v.CC_ACCESS_TOKEN_TTL as number,
      refreshTtlSeconds: v.CC_REFRESH_TOKEN_TTL as number,
      accessSecret: v.CC_ACCESS_TOKEN_SECRET as string | undefined,
      refreshSecret: v.CC_REFRESH_TOKEN_SECRET as string | undefined,
      instanceSecret: v.CC_INSTANCE_TOKEN_SECRET as string | undefined,
    },
    argon2: {
      memoryKiB: v.CC_ARGON2_MEMORY_KIB as number,
      timeCost: v.CC_ARGON2_TIME_COST as number,
      parallelism: v.CC_ARGON2_PARALLELISM as number,
    },
    rateLimits: {
      authPerIp: parseRule(v.CC_RATE_AUTH_PER_IP as string),
      loginFailuresPerAddress: parseRule(v.CC_RATE_LOGIN_FAILURES_PER_ADDRESS as string),
      loginFailuresPerAccount: parseRule(v.CC_RATE_LOGIN_FAILURES_PER_ACCOUNT as string),
      mailPerAccount: parseRule(v.CC_RATE_MAIL_PER_ACCOUNT as string),
      authFailuresPerIp: parseRule(v.CC_RATE_AUTH_FAILURES_PER_IP as string),
      perToken: parseRule(v.CC_RATE_PER_TOKEN as string),
      perIp: parseRule(v.CC_RATE_PER_IP as string),
      staticPerIp: parseRule(v.CC_RATE_STATIC_PER_IP as string),
    },
    trustProxyHops: v.CC_TRUST_PROXY_HOPS as number,
    trustedProxies,
    maxBodyBytes: v.CC_MAX_BODY_BYTES as number,
    verifyEmailTtlSeconds: v.CC_VERIFY_EMAIL_TTL as number,
    resetPasswordTtlSeconds: v.CC_RESET_PASSWORD_TTL as number,
    logLevel: v.CC_LOG_LEVEL as string,
    baseDomain,
    subdomainQuarantineSeconds: v.CC_SUBDOMAIN_QUARANTINE as number,
    tunnel: { pool, ipQuarantineSeconds: v.CC_TUNNEL_IP_QUARANTINE as number, statusWindowSeconds: v.CC_TUNNEL_STATUS_WINDOW as number },
    gateway: {
      publicKey: v.CC_GATEWAY_PUBLIC_KEY as string | undefined,
      endpoint: (v.CC_GATEWAY_ENDPOINT as string | undefined) ?? `connect.${baseDomain}:51820`,
    },
    billing,
    dns,
    traffic: {
      usageRetentionDays: v.CC_USAGE_RETENTION_DAYS as number,
      accessLogRetentionDays: v.CC_ACCESS_LOG_RETENTION_DAYS as number,
      accessLogFullAddresses: v.CC_ACCESS_LOG_FULL_ADDRESSES as boolean,
    },
    alerts: {
      offlineAfterSeconds: v.CC_ALERT_OFFLINE_AFTER as number,
      intervalSeconds: v.CC_ALERT_INTERVAL as number,
      certificateFailingAfterSeconds: v.CC_ALERT_CERTIFICATE_FAILING_AFTER as number,
      operatorWebhookUrl: v.CC_OPERATOR_WEBHOOK_URL as string | undefined,
      operatorWebhookTimeoutMs: v.CC_OPERATOR_WEBHOOK_TIMEOUT_MS as number,
    },
    metricsListen: loadMetricsListen(v.CC_METRICS_LISTEN as string | undefined),
  }
}

function loadMetricsListen (value: string | undefined): ControlConfig['metricsListen'] {
  if (value === undefined) return null
  const colon = value.lastIndexOf(':')
  const host = value.slice(0, colon).replace(/^\[(.*)\]$/, '$1')
  const port = Number(value.slice(colon + 1))
  if (port > 65535 || Joi.string().ip({ cidr: 'forbidden' }).validate(host).error !== undefined) {
    throw new ConfigError('CC_METRICS_LISTEN', `must be address:port with an IP address and a port up to 65535 (got ${JSON.stringify(value)})`)
  }
  return { host, port }
}

function list (value: unknown): string[] {
  return typeof value === 'string' ? value.split(',').map(s => s.trim()).filter(s => s !== '') : []
}

const STRIPE_VARIABLES = ['CC_STRIPE_SECRET_KEY', 'CC_STRIPE_WEBHOOK_SECRET', 'CC_STRIPE_PRICE_PRO', 'CC_STRIPE_PRICE_BUSINESS'] as const

function loadBilling (v: Raw, publicUrl: string): BillingConfig {
  const set = STRIPE_VARIABLES.filter(name => v[name] !== undefined)
  if (set.length > 0 && set.length < STRIPE_VARIABLES.length) {
    const missing = STRIPE_VARIABLES.find(name => v[name] === undefined)!
    throw new ConfigError(missing, `required when ${set.join(', ')} ${set.length === 1 ? 'is' : 'are'} set (billing needs all of ${STRIPE_VARIABLES.join(', ')})`)
  }
  const portalReturnUrls = list(v.CC_BILLING_PORTAL_RETURN_URLS)
  for (const url of portalReturnUrls) {
    let parsed: URL | undefined
    try { parsed = new URL(url) } catch {}
    if (parsed === undefined || !['http:', 'https:'].includes(parsed.protocol) || parsed.username !== '' || parsed.password !== '') {
      throw new ConfigError('CC_BILLING_PORTAL_RETURN_URLS', `each entry must be an http(s) URL without credentials (got ${JSON.stringify(url)})`)
    }
  }
  return {
    stripe: set.length === 0
      ? undefined
      : {
          secretKey: v.CC_STRIPE_SECRET_KEY as string,
          webhookSecret: v.CC_STRIPE_WEBHOOK_SECRET as string,
          prices: { pro: v.CC_STRIPE_PRICE_PRO as string, business: v.CC_STRIPE_PRICE_BUSINESS as string },
          apiBase: (v.CC_STRIPE_API_BASE as string).replace(/\/+$/, ''),
        },
    webhookToleranceSeconds: v.CC_STRIPE_WEBHOOK_TOLERANCE as number,
    pastDueGraceSeconds: v.CC_BILLING_PAST_DUE_GRACE as number,
    portalReturnUrls: portalReturnUrls.length > 0 ? portalReturnUrls : [publicUrl],
  }
}

/** `ip` or `ip:port` or `[ipv6]:port`, as dns.Resolver#setServers takes them. */
const RESOLVER = /^(\d{1,3}(\.\d{1,3}){3}(:\d{1,5})?|[0-9A-Fa-f:]+|\[[0-9A-Fa-f:]+\](:\d{1,5})?)$/

function loadDns (v: Raw): DnsConfig {
  const resolvers = list(v.CC_DNS_RESOLVERS)
  for (const r of resolvers) {
    if (!RESOLVER.test(r)) throw new ConfigError('CC_DNS_RESOLVERS', `each entry must be an IP address, optionally with :port (got ${JSON.stringify(r)})`)
  }
  const gatewayAddresses = list(v.CC_DNS_GATEWAY_ADDRESSES)
  for (const a of gatewayAddresses) {
    if (Joi.string().ip({ cidr: 'forbidden' }).validate(a).error !== undefined) {
      throw new ConfigError('CC_DNS_GATEWAY_ADDRESSES', `each entry must be an IPv4 or IPv6 address (got ${JSON.stringify(a)})`)
    }
  }
  return {
    resolvers,
    timeoutMs: v.CC_DNS_TIMEOUT_MS as number,
    tries: v.CC_DNS_TRIES as number,
    gatewayAddresses: gatewayAddresses.map(a => a.toLowerCase()),
    recheckIntervalSeconds: v.CC_DOMAIN_RECHECK_INTERVAL as number,
    lapseGraceSeconds: v.CC_DOMAIN_LAPSE_GRACE as number,
    pendingTtlSeconds: v.CC_DOMAIN_PENDING_TTL as number,
  }
}
