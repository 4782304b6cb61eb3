/**
 * The service container: one instance of each service, wired once per app. Routes receive it at
 * registration. A new service: write `control/services/<name>.ts` (a class taking its dependencies
 * in the constructor, methods taking an optional `db: Queryable` so callers can pass a transaction),
 * then add it to `Services` and `createServices` below.
 */
import type { Logger } from 'pino'
import type { ControlConfig } from '../config.ts'
import { isPostgres, type Db } from '../db/knex.ts'
import { aliveWindowMs } from '../rpc/placement.ts'
import { AccountService } from './accounts.ts'
import { BillingService } from './billing.ts'
import { billingSubscriptionSource } from './entitlements.ts'
import { DnsVerifier } from './dns.ts'
import { DomainService } from './domains.ts'
import { InstanceAlertService } from './instance-alerts.ts'
import { InstanceService } from './instances.ts'
import { IpamService, TunnelPool } from './ipam.ts'
import type { TokenKeys } from './keys.ts'
import { Mailer } from './mail.ts'
import { OperatorService } from './operator.ts'
import { OperatorEventService, OperatorWebhook } from './operator-events.ts'
import { PasswordHasher } from './passwords.ts'
import { PlanService, type SubscriptionSource } from './plans.ts'
import { ReadinessService } from './readiness.ts'
import { RateLimiter, type RateLimitStore } from './ratelimit.ts'
import { PostgresRateLimiter } from './ratelimit-postgres.ts'

import { SessionService } from './sessions.ts'
import { StripeClient } from './stripe-client.ts'
import { StripeWebhookProcessor } from './stripe-webhook.ts'
import { SubdomainService } from './subdomains.ts'
import { TokenService } from './tokens.ts'
import { UsageService } from './usage.ts'
import { ConfiguredGateway, TunnelService, type CustomDomainSource, type GatewayInfo } from './tunnel.ts'
import { moduleLogger } from '../../proto/log.ts'

export interface Services {
  db: Db
  config: ControlConfig
  logger: Logger
  now: () => Date
  tokens: TokenService
  passwords: PasswordHasher
  sessions: SessionService
  accounts: AccountService
  plans: PlanService
  mailer: Mailer
  rateLimiter: RateLimitStore
  gateway: GatewayInfo
  ipam: IpamService
  subdomains: SubdomainService
  tunnel: TunnelService
  instances: InstanceService
  billing: BillingService
  webhooks: StripeWebhookProcessor
  dns: DnsVerifier
  domains: DomainService
  operator: OperatorService
  readiness: ReadinessService
  usage: UsageService
  instanceAlerts: InstanceAlertService
  /** Undefined without CC_OPERATOR_WEBHOOK_URL. */
  operatorWebhook: OperatorWebhook | undefined
  operatorEvents: OperatorEventService | undefined
}

export interface ServiceDeps {
  db: Db
  config: ControlConfig
  logger: Logger
  keys: TokenKeys
  mailer: Mailer
  now?: () => Date
  subscriptions?: SubscriptionSource
  /** Default: shared buckets in the database on Postgres, this process's own on PGlite. */
  rateLimiter?: RateLimitStore
  /** Default: the key and endpoint from configuration. */
  gateway?: GatewayInfo
  /** Default: the DomainService. */
  customDomains?: CustomDomainSource
  /** Default: from config.billing.stripe (undefined there: billing is off). */
  stripe?: StripeClient
  /** Default: node's resolver over config.dns. */
  dns?: DnsVerifier
  /** What /ready expects of gateways; default: no RPC listener, CC_REPORT_INTERVAL's default of 5 s. */
  readiness?: ReadinessDeps
}

export interface ReadinessDeps {
  reportIntervalMs: number
  /** Control serves the RPC listener gateways say hello to. */
  gatewayListener: boolean
}

const DEFAULT_REPORT_INTERVAL_MS = 5_000

export function createServices (deps: ServiceDeps): Services {
  const now = deps.now ?? (() => new Date())
  const { db, config, logger, mailer } = deps
  const tokens = new TokenService({
    keys: deps.keys,
    issuer: config.tokens.issuer,
    accessTtlSeconds: config.tokens.accessTtlSeconds,
    refreshTtlSeconds: config.tokens.refreshTtlSeconds,
    now,
  })
  const passwords = new PasswordHasher(config.argon2)
  const sessions = new SessionService(db, tokens, now)
  const accounts = new AccountService({
    db,
    passwords,
    sessions,
    mailer,
    publicUrl: config.publicUrl,
    passwordResetUrl: config.passwordResetUrl,
    verifyEmailTtlSeconds: config.verifyEmailTtlSeconds,
    resetPasswordTtlSeconds: config.resetPasswordTtlSeconds,
    now,
    logger,
  })
  // Plans come from Stripe's subscriptions (billing.ts) unless a test supplies its own source.
  const plans = new PlanService(db, deps.subscriptions ?? billingSubscriptionSource(config.billing.pastDueGraceSeconds, now))
  const stripe = deps.stripe ?? (config.billing.stripe === undefined ? undefined : new StripeClient(config.billing.stripe, moduleLogger(logger, 'stripe')))
  const billing = new BillingService({ db, config: config.billing, publicUrl: config.publicUrl, plans, stripe, now, logger })
  const webhooks = new StripeWebhookProcessor({ db, stripe, config: config.billing, plans, mailer, now, logger })
  const dns = deps.dns ?? new DnsVerifier({ servers: config.dns.resolvers, timeoutMs: config.dns.timeoutMs, tries: config.dns.tries, gatewayAddresses: config.dns.gatewayAddresses })
  const domains = new DomainService({
    db,
    plans,
    dns,
    mailer,
    baseDomain: config.baseDomain,
    recheckIntervalSeconds: config.dns.recheckIntervalSeconds,
    lapseGraceSeconds: config.dns.lapseGraceSeconds,
    pendingTtlSeconds: config.dns.pendingTtlSeconds,
    takeoverKey: deps.keys.instance,
    now,
    logger,
  })
  const rateLimiter = deps.rateLimiter ?? (isPostgres(db)
    ? new PostgresRateLimiter({ db, now: () => now().getTime(), logger: moduleLogger(logger, 'ratelimit') })
    : new RateLimiter({ now: () => now().getTime() }))
  const gateway = deps.gateway ?? new ConfiguredGateway(config.gateway.publicKey, config.gateway.endpoint)
  const customDomains = deps.customDomains ?? domains
  const ipam = new IpamService({ pool: new TunnelPool(config.tunnel.pool), quarantineSeconds: config.tunnel.ipQuarantineSeconds, now })
  const subdomains = new SubdomainService({ db, now, quarantineSeconds: config.subdomainQuarantineSeconds })
  const tunnel = new TunnelService({ db, ipam, gateway, customDomains, baseDomain: config.baseDomain, now, statusWindowSeconds: config.tunnel.statusWindowSeconds })
  const instances = new InstanceService({ db, ipam, subdomains, plans, tokens, tunnel, gateway, customDomains, now })
  const operator = new OperatorService({ db, now, statusWindowSeconds: config.tunnel.statusWindowSeconds })
  const readiness = new ReadinessService({
    db,
    now,
    logger: moduleLogger(logger, 'readiness'),
    stripeConfigured: stripe !== undefined,
    gatewayAliveWindowMs: aliveWindowMs(deps.readiness?.reportIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS),
    gatewayListener: deps.readiness?.gatewayListener ?? false,
  })
  const usage = new UsageService({ db, config: config.traffic, now })
  const alertLogger = moduleLogger(logger, 'alerts')
  const instanceAlerts = new InstanceAlertService({
    db,
    mailer,
    now,
    logger: alertLogger,
    offlineAfterSeconds: config.alerts.offlineAfterSeconds,
    statusWindowSeconds: config.tunnel.statusWindowSeconds,
    publicUrl: config.publicUrl,
    fullDomain: subdomain => tunnel.fullDomain(subdomain),
  })
  const webhookUrl = config.alerts.operatorWebhookUrl
  const operatorWebhook = webhookUrl === undefined ? undefined : new OperatorWebhook({ url: webhookUrl, timeoutMs: config.alerts.operatorWebhookTimeoutMs, logger: alertLogger })
  const operatorEvents = operatorWebhook === undefined
    ? undefined
    : new OperatorEventService({
      db,
      webhook: operatorWebhook,
      now,
      logger: alertLogger,
      gatewayAliveWindowMs: aliveWindowMs(deps.readiness?.reportIntervalMs ?? DEFAULT_REPORT_INTERVAL_MS),
      certificateFailingAfterMs: config.alerts.certificateFailingAfterSeconds * 1000,
    })
  return { db, config, logger, now, tokens, passwords, sessions, accounts, plans, mailer, rateLimiter, gateway, ipam, subdomains, tunnel, instances, billing, webhooks, dns, domains, operator, readiness, instanceAlerts, operatorWebhook, operatorEvents, usage }
}
