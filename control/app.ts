/**
 * The control API as a Hapi server (created, not started): `createApp(config, deps)`.
 *
 * Layout
 *   control/config.ts      CC_ environment -> ControlConfig (joi, one line naming a bad variable)
 *   control/errors.ts      apiError(code, message, details) and the one onPreResponse that shapes
 *                          every error as {"error":{"code","message","details"}}
 *   control/auth.ts        `user` bearer strategy (default on every route), `app.verifiedEmail`
 *   control/ratelimit.ts   per-IP / per-account / per-token buckets, `app.rateLimit: 'auth'`
 *   control/routes/*.ts    one Hapi plugin per spec section; thin handlers, joi next to the route
 *   control/routes/web.ts  the dashboard: control/web/ (static files) at the page paths and /assets
 *   control/services/*.ts  the logic; built once in services/index.ts and handed to every plugin
 *   control/db/            knex (Postgres or PGlite), migrate.ts, migrations/<timestamp>_<name>.ts
 *   proto/api/             the public contract: error codes and request/response types
 *
 * Adding a route plugin (e.g. instances):
 *   1. control/routes/instances.ts exporting `instanceRoutes: Plugin<Services>` whose `register`
 *      calls server.route(...) with paths relative to /v1 ('/instances/{instance_id}').
 *   2. Every route: `options.validate.{params,query,payload}` as joi objects (unknown keys are
 *      refused -> 422 VALIDATION_ERROR with details.fields), `options.response.status` with joi
 *      shapes (they feed /v1/openapi.json and are enforced in tests), `description` and `tags`.
 *      Routes need an access token by default; `auth: false` for public ones, `auth: 'instance'`
 *      once that strategy exists. `app: { verifiedEmail: true }` on routes that create resources.
 *   3. Handlers call services and return plain objects; failures `throw apiError('SUBDOMAIN_TAKEN',
 *      message, details)` with a code from proto/api/errors.ts (add the code there first if new).
 *   4. Add the plugin to ROUTE_PLUGINS below, and request/response types to proto/api/<section>.ts.
 * Adding a service: control/services/<name>.ts, a class taking its dependencies in the
 *   constructor; methods take `db: Queryable = this.#db` so a caller can pass a transaction
 *   (`services.db.transaction(trx => ...)`). Register it in services/index.ts (Services + createServices).
 * Adding a migration: control/db/migrations/<YYYYMMDDHHMMSS>_<name>.ts exporting `up(knex)` and
 *   `down(knex)`; picked up by name order (`cloud-connect migrate up|down|status`; `control` runs
 *   pending ones at start unless CC_AUTO_MIGRATE=0). Use timestamptz and text ids with our prefixes.
 * Adding a test: test/control/routes/<name>.test.ts. `forEachDatabase(t, async (t, db) => ...)` from
 *   test/control/harness.ts runs the body against in-memory PGlite and, when CC_TEST_DATABASE_URL is
 *   set, against Postgres in a fresh schema (CC_REQUIRE_INTEROP=1 turns a missing URL into a
 *   failure); `startApp(t, db, overrides)` builds the app with cheap argon2, high rate limits,
 *   response validation on and a capturing mailer, and `inject` requests go through server.inject.
 */
import Hapi, { type Plugin } from '@hapi/hapi'
import Inert from '@hapi/inert'
import { Joi } from './schemas.ts'
import { join } from 'node:path'
import type { Logger } from 'pino'
import type { Registry } from 'prom-client'
import { API_PREFIX } from '../proto/api/index.ts'
import { authPlugin } from './auth.ts'
import type { ControlConfig } from './config.ts'
import type { Db } from './db/knex.ts'
import { errorsPlugin, failValidation } from './errors.ts'
import { apiListenHost } from './listen-host.ts'
import { ControlMetrics, metricsPlugin } from './metrics.ts'
import { openApiRoutes } from './openapi.ts'
import { rateLimitPlugin } from './ratelimit.ts'
import { startAlerts } from './jobs/alerts.ts'
import { startBillingEnforcement } from './jobs/billing.ts'
import { startDomainRecheck } from './jobs/domains.ts'
import { startPeriodicJob } from './jobs/periodic.ts'
import { startTrafficRetention } from './jobs/traffic.ts'
import { adminRoutes } from './routes/admin.ts'
import { authRoutes } from './routes/auth.ts'
import { billingRoutes } from './routes/billing.ts'
import { domainRoutes } from './routes/domains.ts'
import { healthRoutes } from './routes/health.ts'
import { instanceRoutes } from './routes/instances.ts'
import { subdomainRoutes } from './routes/subdomains.ts'
import { usageRoutes } from './routes/usage.ts'
import { tunnelRoutes } from './routes/tunnel.ts'
import { userRoutes } from './routes/user.ts'
import { webRoutes } from './routes/web.ts'
import { createServices, type ReadinessDeps, type Services } from './services/index.ts'
import { loadTokenKeys, type TokenKeys } from './services/keys.ts'
import { Mailer, OutboxTransport, SmtpTransport, type MailTransport } from './services/mail.ts'
import type { SubscriptionSource } from './services/plans.ts'
import type { RateLimitStore } from './services/ratelimit.ts'
import { PostgresRateLimiter } from './services/ratelimit-postgres.ts'
import type { GatewayInfo } from './services/tunnel.ts'
import { moduleLogger } from '../proto/log.ts'

declare module '@hapi/hapi' {
  interface ServerApplicationState {
    services: Services
    metrics: ControlMetrics
  }
}

/** Route plugins mounted under /v1, one per spec section. */
const ROUTE_PLUGINS: Array<Plugin<Services>> = [authRoutes, userRoutes, billingRoutes, instanceRoutes, usageRoutes, domainRoutes, subdomainRoutes, tunnelRoutes, adminRoutes]

export interface AppDeps {
  db: Db
  logger: Logger
  /** Default: SMTP when config.smtpUrl is set, else files in <dataDir>/outbox. */
  mailTransport?: MailTransport
  /** Default: from config, else generated into dataDir. */
  keys?: TokenKeys
  now?: () => Date
  rateLimiter?: RateLimitStore
  subscriptions?: SubscriptionSource
  /** Where the gateway's key and endpoint come from; default: configuration (control/rpc feeds the real one). */
  gateway?: GatewayInfo
  /** Check every response against its route's joi schema (tests). */
  validateResponses?: boolean
  /** What /ready expects of gateways (control/rpc passes its report interval and listener). */
  readiness?: ReadinessDeps
  /** Prometheus metrics: the registry to add them to (`start` shares the gateway's), the business query's cache time. */
  metrics?: { registry?: Registry, businessCacheMs?: number }
}

export type ControlApp = Hapi.Server

export async function createApp (config: ControlConfig, deps: AppDeps): Promise<ControlApp> {
  const { logger } = deps
  const transport = deps.mailTransport ?? (config.smtpUrl !== undefined ? new SmtpTransport(config.smtpUrl) : new OutboxTransport(join(config.dataDir, 'outbox'), logger))
  const services = createServices({
    db: deps.db,
    config,
    logger,
    keys: deps.keys ?? loadTokenKeys({ access: config.tokens.accessSecret, refresh: config.tokens.refreshSecret, instance: config.tokens.instanceSecret }, config.dataDir, logger),
    mailer: new Mailer(config.mailFrom, transport, logger),
    now: deps.now,
    rateLimiter: deps.rateLimiter,
    subscriptions: deps.subscriptions,
    gateway: deps.gateway,
    readiness: deps.readiness,
  })

  const server = Hapi.server({
    host: await apiListenHost(config.apiHost, logger),
    port: config.apiPort,
    router: { stripTrailingSlash: true },
    routes: {
      validate: {
        failAction: failValidation,
        options: { abortEarly: false, errors: { wrap: { label: false } } },
      },
      payload: { maxBytes: config.maxBodyBytes, allow: ['application/json'] },
      response: { sample: deps.validateResponses === true ? 100 : 0, failAction: 'error', emptyStatusCode: 204 },
      security: { hsts: false, xframe: true, noSniff: true, referrer: 'no-referrer' },
      // No hapi cookie parsing: a malformed cookie from another app on this host must not fail
      // requests; the one cookie we read is parsed by control/session-cookie.ts.
      state: { parse: false, failAction: 'ignore' },
    },
  })
  server.validator(Joi)
  server.app.services = services
  server.app.metrics = new ControlMetrics({
    db: services.db,
    now: services.now,
    pastDueGraceSeconds: config.billing.pastDueGraceSeconds,
    logger: moduleLogger(logger, 'metrics'),
    ...deps.metrics,
  })

  server.events.on('log', (event, tags) => {
    if (tags.error === true) logger.error({ err: event.error ?? event.data, tags: event.tags }, 'control error')
    else if (tags.warn === true) logger.warn({ data: event.data, tags: event.tags }, 'control warning')
  })
  // request.log(...) from extensions: unexpected errors (with stack) and database outages.
  server.events.on({ name: 'request', channels: 'app' }, (request, event, tags) => {
    const where = { method: request.method, path: request.path }
    if (tags.error === true) logger.error({ ...where, err: event.error ?? event.data, tags: event.tags }, 'request failed')
    else if (tags.warn === true) logger.warn({ ...where, data: event.data, tags: event.tags }, 'request warning')
  })
  server.events.on('response', request => {
    const status = 'statusCode' in request.response ? request.response.statusCode : undefined
    logger.debug({ method: request.method, path: request.path, status, ms: Date.now() - request.info.received }, 'request')
  })
  server.ext('onPostStop', async () => { await services.mailer.drain(); await services.operatorWebhook?.drain() })
  // Periodic work runs while the server is started (not after initialize() alone, as in tests).
  let jobs: Array<{ stop (): void }> = []
  const jobLogger = moduleLogger(logger, 'jobs')
  server.ext('onPostStart', () => {
    jobs = [
      startDomainRecheck({ db: services.db, domains: services.domains, logger: jobLogger }),
      startBillingEnforcement({ db: services.db, billing: services.billing, logger: jobLogger }),
      startTrafficRetention({ db: services.db, usage: services.usage, logger: jobLogger }),
      startAlerts({ db: services.db, instanceAlerts: services.instanceAlerts, operatorEvents: services.operatorEvents, logger: jobLogger, intervalMs: config.alerts.intervalSeconds * 1000 }),
    ]
    const limiter = services.rateLimiter
    if (limiter instanceof PostgresRateLimiter) {
      jobs.push(startPeriodicJob({ name: 'rate-limit-sweep', db: services.db, intervalMs: 10 * 60_000, logger: jobLogger, run: async () => { await limiter.sweep() } }))
    }
  })
  server.ext('onPreStop', () => {
    for (const job of jobs) job.stop()
    jobs = []
  })

  await server.register({ plugin: errorsPlugin })
  await server.register({ plugin: metricsPlugin, options: server.app.metrics })
  await server.register({ plugin: rateLimitPlugin, options: services })
  await server.register({ plugin: authPlugin, options: services })
  await server.register({ plugin: healthRoutes, options: services })
  await server.register(Inert)
  await server.register({ plugin: webRoutes, options: services })
  for (const plugin of ROUTE_PLUGINS) {
    await server.register({ plugin, options: services }, { routes: { prefix: API_PREFIX } })
  }
  await server.register({ plugin: openApiRoutes, options: services }, { routes: { prefix: API_PREFIX } })
  return server
}
