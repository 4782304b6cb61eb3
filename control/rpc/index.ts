/**
 * The control program with its gateway side: the public API (control/app.ts), the RPC service
 * gateways talk to (service.ts) with, optionally, its own HTTP listener (server.ts), and the
 * housekeeping job. Used by `cloud-connect control` (listener on) and `cloud-connect start`
 * (listener off: the in-process gateway calls the service directly).
 *
 * The gateways handed to containers come from the GatewayRegistry: the two an instance is placed
 * on (rpc/placement.ts), else the newest gateway hello, else configuration. A periodic sweep
 * (jobs/fleet.ts) keeps placements on alive gateways and publishes which sessions are live. The service also keeps the certificate store gateways
 * share (services/cert-store.ts; its key from CC_CERT_STORE_KEY or generated into the data dir).
 */
import type http from 'node:http'
import type { Logger } from 'pino'
import { createApp, type AppDeps, type ControlApp } from '../app.ts'
import type { ControlConfig } from '../config.ts'
import type { Db } from '../db/knex.ts'
import { migrateLatest } from '../db/migrate.ts'
import { CONFIG_CHANNEL, NotificationListener } from '../db/notify.ts'
import { startFleetSweep } from '../jobs/fleet.ts'
import { startSweep } from '../jobs/sweep.ts'
import { boundAddress, serveMetrics } from '../metrics.ts'
import { openDatabase } from '../server.ts'
import type { Services } from '../services/index.ts'
import { CertStoreService, loadCertStoreKey } from '../services/cert-store.ts'
import { IpamService, TunnelPool } from '../services/ipam.ts'
import { ConfiguredGateway } from '../services/tunnel.ts'
import type { RpcConfig } from './config.ts'
import { GatewayRegistry } from './registry.ts'
import { loadGatewaySecret } from './secret.ts'
import { RpcServer } from './server.ts'
import { RpcService } from './service.ts'
import { moduleLogger } from '../../proto/log.ts'
import { listeningUrl } from '../listen-host.ts'

export { RpcService } from './service.ts'
export { RpcServer } from './server.ts'
export { GatewayRegistry } from './registry.ts'
export { loadRpcConfig, describeRpcVariables, type RpcConfig } from './config.ts'

export interface RunningControlPlane {
  app: ControlApp
  db: Db
  services: Services
  registry: GatewayRegistry
  rpc: RpcService
  /** The internal listener, when started. */
  rpcServer: RpcServer | null
  /** On Postgres: the LISTEN connection that wakes long-polls on any replica's change. */
  configListener: NotificationListener | null
  /** CC_METRICS_LISTEN's GET /metrics, when started (with `listen`; under `start` the gateway serves it). */
  metricsServer: http.Server | null
  /** Stops the RPC listener, the API (in-flight requests get `graceMs`), jobs, then the database. */
  stop (graceMs?: number): Promise<void>
}

export interface ControlPlaneOptions {
  config: ControlConfig
  rpc: RpcConfig
  /** Serve the internal HTTP listener (false for the all-in-one process). */
  listen: boolean
  logger: Logger
  extra?: Partial<AppDeps>
  /** The long-poll's version rereads (RpcServiceOptions pollMs / listeningPollMs; tests). */
  watchPolling?: { pollMs?: number, listeningPollMs?: number }
}

export async function startControlPlane (options: ControlPlaneOptions): Promise<RunningControlPlane> {
  const { config, logger } = options
  const now = options.extra?.now ?? (() => new Date())
  const db = openDatabase(config)
  let app: ControlApp | null = null
  let rpcServer: RpcServer | null = null
  let configListener: NotificationListener | null = null
  let metricsServer: http.Server | null = null
  try {
    if (config.autoMigrate) {
      const applied = await migrateLatest(db)
      if (applied.length > 0) logger.info({ applied }, 'migrations applied')
    }
    const registry = new GatewayRegistry({
      db,
      ipam: new IpamService({ pool: new TunnelPool(config.tunnel.pool), quarantineSeconds: config.tunnel.ipQuarantineSeconds, now }),
      fallback: new ConfiguredGateway(config.gateway.publicKey, config.gateway.endpoint),
      configuredEndpoint: config.gateway.endpoint,
      reportIntervalMs: options.rpc.reportIntervalMs,
      now,
    })
    app = await createApp(config, { db, logger, gateway: registry, readiness: { reportIntervalMs: options.rpc.reportIntervalMs, gatewayListener: options.listen }, ...options.extra })
    const services = app.app.services
    const certificates = new CertStoreService({ db, key: loadCertStoreKey(options.rpc.certStoreKey, config.dataDir, logger), now })
    const rpc = new RpcService({
      db,
      tunnel: services.tunnel,
      ipam: services.ipam,
      registry,
      waitMs: options.rpc.waitMs,
      reportIntervalMs: options.rpc.reportIntervalMs,
      now,
      logger: moduleLogger(logger, 'rpc'),
      certificates,
      baseDomain: config.baseDomain,
      usage: services.usage,
      ...options.watchPolling,
    })
    if (config.databaseUrl !== undefined) {
      configListener = new NotificationListener({
        url: config.databaseUrl,
        channel: CONFIG_CHANNEL,
        onNotify: () => { rpc.watcher.poke() },
        onListening: listening => { rpc.watcher.listening = listening },
        logger: moduleLogger(logger, 'rpc'),
      })
      configListener.start()
    }
    await app.start()
    logger.info({ url: listeningUrl(app.info), database: config.databaseUrl !== undefined ? 'postgres' : 'pglite' }, 'control API listening')
    if (options.listen) {
      const secret = loadGatewaySecret(options.rpc.secret, config.dataDir, logger)
      rpcServer = await RpcServer.start({ service: rpc, secret, host: options.rpc.host, port: options.rpc.port, logger: moduleLogger(logger, 'rpc') })
      logger.info({ url: rpcServer.url }, 'gateway RPC listening')
      if (config.metricsListen !== null) {
        metricsServer = await serveMetrics(app.app.metrics.registry, config.metricsListen, moduleLogger(logger, 'metrics'))
        logger.info({ url: `http://${boundAddress(metricsServer)}/metrics` }, 'metrics listening')
      }
    }
    const sweep = startSweep({ db, tunnel: services.tunnel, logger: moduleLogger(logger, 'jobs'), now })
    const fleetSweep = startFleetSweep({ db, rpc, intervalMs: options.rpc.reportIntervalMs, logger: moduleLogger(logger, 'jobs') })
    const started = app
    const listener = rpcServer
    const changes = configListener
    const metrics = metricsServer
    return {
      app: started,
      db,
      services,
      registry,
      rpc,
      rpcServer: listener,
      configListener: changes,
      metricsServer: metrics,
      async stop (graceMs = 10_000) {
        if (metrics !== null) await closeServer(metrics)
        sweep.stop()
        fleetSweep.stop()
        await changes?.close()
        rpc.close()
        if (listener !== null) await listener.close(Math.min(graceMs, 2_000))
        await started.stop({ timeout: graceMs })
        await db.destroy()
      },
    }
  } catch (err) {
    if (metricsServer !== null) await closeServer(metricsServer)
    await configListener?.close()
    if (rpcServer !== null) await rpcServer.close(0)
    if (app !== null) await app.stop({ timeout: 0 })
    await db.destroy()
    throw err
  }
}

async function closeServer (server: http.Server): Promise<void> {
  server.closeAllConnections()
  await new Promise<void>(resolve => { server.close(() => { resolve() }) })
}
