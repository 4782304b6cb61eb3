/**
 * The service container: one instance of each service, wired once per app. Routes receive it at
 * registration. A new service: write `control/services/<name>.ts` (a class taking its dependencies
 * in the constructor, methods taking an optional `db: Queryable` so callers can pass a transaction),
 * then add it to `Services` and `createServices` below.
 */
import type { Logger } from 'pino'
import type { ControlConfig } from '../config.ts'
import type { Db } from '../db/knex.ts'
import { AccountService } from './accounts.ts'
import { InstanceService } from './instances.ts'
import { IpamService, TunnelPool } from './ipam.ts'
import type { TokenKeys } from './keys.ts'
import { Mailer } from './mail.ts'
import { PasswordHasher } from './passwords.ts'
import { PlanService, type SubscriptionSource } from './plans.ts'
import { RateLimiter } from './ratelimit.ts'
import { SessionService } from './sessions.ts'
import { SubdomainService } from './subdomains.ts'
import { TokenService } from './tokens.ts'
import { ConfiguredGateway, noCustomDomains, TunnelService, type CustomDomainSource, type GatewayInfo } from './tunnel.ts'

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
  rateLimiter: RateLimiter
  gateway: GatewayInfo
  ipam: IpamService
  subdomains: SubdomainService
  tunnel: TunnelService
  instances: InstanceService
}

export interface ServiceDeps {
  db: Db
  config: ControlConfig
  logger: Logger
  keys: TokenKeys
  mailer: Mailer
  now?: () => Date
  subscriptions?: SubscriptionSource
  rateLimiter?: RateLimiter
  /** Default: the key and endpoint from configuration. */
  gateway?: GatewayInfo
  /** Default: none (custom domains are not built yet). */
  customDomains?: CustomDomainSource
}

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
  const plans = new PlanService(db, deps.subscriptions)
  const rateLimiter = deps.rateLimiter ?? new RateLimiter({ now: () => now().getTime() })
  const gateway = deps.gateway ?? new ConfiguredGateway(config.gateway.publicKey, config.gateway.endpoint)
  const customDomains = deps.customDomains ?? noCustomDomains
  const ipam = new IpamService({ pool: new TunnelPool(config.tunnel.pool), quarantineSeconds: config.tunnel.ipQuarantineSeconds, now })
  const subdomains = new SubdomainService(db, now)
  const tunnel = new TunnelService({ db, ipam, gateway, customDomains, baseDomain: config.baseDomain, now })
  const instances = new InstanceService({ db, ipam, subdomains, plans, tokens, tunnel, gateway, customDomains, now })
  return { db, config, logger, now, tokens, passwords, sessions, accounts, plans, mailer, rateLimiter, gateway, ipam, subdomains, tunnel, instances }
}
