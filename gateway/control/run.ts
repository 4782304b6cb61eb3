/**
 * A gateway run by a control plane: key from the data dir, first snapshot (stored, else from
 * control, waited for with backoff), Gateway started on the tunnel address control assigns, then a
 * ControlClient keeping it in step. Used by `cloud-connect gateway --control` (HTTP) and
 * `cloud-connect start` (in-process).
 *
 * With ACME configured, certificates, the account key and issuance locks live in control's
 * certificate store (ControlCertStore, shared by the fleet) unless CC_CERT_STORE=file or the plane
 * offers none; a configured CC_ACME_DNS_PROVIDER adds DNS-01.
 */
import type { Logger } from 'pino'
import { RPC_PROTOCOL_VERSION, type ControlPlane, type GatewayHello } from '../../proto/rpc/index.ts'
import { decodeKey, publicKeyFromPrivate } from '../../proto/noise/keys.ts'
import { validateConfig } from '../config/schema.ts'
import { Gateway, type GatewayStartOptions } from '../index.ts'
import { createDnsProvider } from '../edge/acme/dns-provider.ts'
import { loadOrCreateRelayIdentity } from '../edge/relay-identity.ts'
import type { CertStore } from '../edge/cert-store.ts'
import { ControlCertStore, hasCertificateStore } from './cert-store.ts'
import { HttpControlPlane } from './http-client.ts'
import type { Metrics } from '../metrics.ts'
import { ControlClient, initialSnapshot, type BackoffOptions } from './client.ts'
import { gatewayConfigFrom, type GatewayEnv } from './env.ts'
import { loadOrCreateKey } from './keyfile.ts'
import type { SnapshotStore } from './store.ts'
import { moduleLogger } from '../../proto/log.ts'
import type { Clock } from '../../proto/clock.ts'

export interface RunningGateway {
  gateway: Gateway
  client: ControlClient
  /** Stops the control loops, then the gateway (in-flight edge requests get graceMs). */
  stop (graceMs?: number): Promise<void>
}

export interface GatewayRunOptions {
  plane: ControlPlane
  settings: GatewayEnv
  logger: Logger
  /** Where the last snapshot is kept; null: not kept (in-process control). */
  store: SnapshotStore | null
  /** Aborting gives up waiting for the first snapshot (then the result is null). */
  signal?: AbortSignal
  reportIntervalMs?: number
  backoff?: BackoffOptions
  software?: string
  metrics?: Metrics
  /** Overrides the certificate store chosen from the settings (tests). */
  certStore?: CertStore
  /** The control loops' time and waits (default: Date.now and real timers). */
  clock?: Clock
}

/** The ACME certificate store and DNS provider these settings ask for. */
export function acmeStartOptions (plane: ControlPlane, settings: GatewayEnv, logger: Logger): GatewayStartOptions {
  const acme = settings.acme
  if (acme === null || !settings.edge) return {}
  const options: GatewayStartOptions = {}
  if (settings.certStore === 'control') {
    if (hasCertificateStore(plane)) {
      options.certStore = new ControlCertStore({ plane, gatewayId: settings.gatewayId, logger: moduleLogger(logger, 'cert-store') })
    } else {
      logger.warn('the control plane keeps no certificate store: ACME certificates stay in this gateway\'s data dir')
    }
  }
  if (acme.dns !== undefined) options.dnsProvider = createDnsProvider(acme.dns.provider, acme.dns.settings)
  return options
}

export async function startGatewayWithControl (options: GatewayRunOptions): Promise<RunningGateway | null> {
  const { plane, settings, logger } = options
  const privateKey = loadOrCreateKey(settings.keyFile, logger)
  // The long-poll names this gateway: control answers with its own peers, fleet and routes.
  if (plane instanceof HttpControlPlane && plane.gatewayId === undefined) plane.gatewayId = settings.gatewayId
  // Control allocates this gateway's tunnel address at its first hello and answers the config
  // long-poll only for gateways it has heard from: introduce it before asking for a first snapshot.
  const relayIdentity = settings.relayPort === null ? null : await loadOrCreateRelayIdentity(settings.dataDir)
  const earlyHello: GatewayHello = {
    protocol: RPC_PROTOCOL_VERSION,
    gatewayId: settings.gatewayId,
    publicKey: publicKeyFromPrivate(decodeKey(privateKey)).toString('base64'),
    endpoint: settings.endpoint,
    listenPort: settings.wgPort,
    ...(options.software === undefined ? {} : { software: options.software }),
    region: settings.region,
    relayUrl: relayIdentity === null ? null : settings.relayUrl,
    relayFingerprint: relayIdentity?.fingerprint ?? null,
  }
  const first = await initialSnapshot(plane, options.store, moduleLogger(logger, 'control'), options.signal, options.backoff, earlyHello, options.clock)
  if (first === null) return null
  const config = validateConfig(gatewayConfigFrom(settings, privateKey, first.snapshot.gateway.address))
  const startOptions = acmeStartOptions(plane, settings, logger)
  if (options.certStore !== undefined) startOptions.certStore = options.certStore
  if (settings.controlOrigin !== null) startOptions.controlOrigin = settings.controlOrigin
  const gateway = await Gateway.start(config, logger, options.metrics, startOptions)
  const client = new ControlClient({
    plane,
    target: gateway,
    logger: moduleLogger(logger, 'control'),
    store: options.store,
    hello: {
      protocol: RPC_PROTOCOL_VERSION,
      gatewayId: settings.gatewayId,
      publicKey: config.publicKey.toString('base64'),
      endpoint: settings.endpoint,
      listenPort: Number(gateway.listen.slice(gateway.listen.lastIndexOf(':') + 1)),
      ...(options.software === undefined ? {} : { software: options.software }),
      region: settings.region,
      relayUrl: gateway.relayIdentity === null ? null : settings.relayUrl,
      relayFingerprint: gateway.relayIdentity?.fingerprint ?? null,
    },
    reportIntervalMs: options.reportIntervalMs,
    backoff: options.backoff,
    clock: options.clock,
  })
  client.start(first.snapshot, first.source)
  return {
    gateway,
    client,
    async stop (graceMs = 5_000) {
      await client.close()
      await gateway.close(graceMs)
    },
  }
}
