/**
 * `cloud-connect gateway`: the WireGuard edge, run from a static JSON config file (`--config`) or
 * by a remote control plane (`--control URL`).
 */
import { parseArgs } from 'node:util'
import type { Logger } from 'pino'
import { CliError } from '../errors.ts'
import { createLogger, parseLogLevel } from '../log.ts'
import { Gateway } from '../../gateway/index.ts'
import { loadConfigFile } from '../../gateway/config/load.ts'
import { ConfigError, type GatewayConfig } from '../../gateway/config/schema.ts'
import { ControlClient } from '../../gateway/control/client.ts'
import { describeGatewayVariables, loadGatewayEnv, type GatewayEnv } from '../../gateway/control/env.ts'
import { HttpControlPlane } from '../../gateway/control/http-client.ts'
import { startGatewayWithControl } from '../../gateway/control/run.ts'
import { StaticControlPlane } from '../../gateway/control/static-file.ts'
import { SnapshotStore } from '../../gateway/control/store.ts'
import { encodeKey } from '../../proto/noise/index.ts'
import { moduleLogger } from '../../proto/log.ts'

const HELP = `Usage: cloud-connect gateway --config FILE [--log-level LEVEL]
       cloud-connect gateway --control URL [--secret SECRET] [--log-level LEVEL]
       cloud-connect gateway drain|undrain GATEWAY_ID   (see cloud-connect gateway drain --help)

Runs the userspace WireGuard gateway (and, when configured, the HTTPS/HTTP edge in front of the
peers). Its peers come from one of two control planes:

--config FILE: a static JSON file:

  {
    "privateKey": "<cloud-connect keygen>",
    "listenPort": 51820,                  UDP port (0 = any free port)
    "listenAddress": "0.0.0.0",           UDP bind address
    "address": "10.100.0.1",              the gateway's tunnel address
    "metricsListen": "127.0.0.1:9091",    optional: GET /metrics (Prometheus), GET /status (JSON)
    "peers": [
      { "publicKey": "...", "allowedIPs": ["10.100.0.2/32"],
        "endpoint": "198.18.0.2:51820",   optional: lets the gateway initiate
        "persistentKeepalive": 25,        optional, seconds
        "presharedKey": "...",            optional
        "hostnames": ["files.example.com"],  optional: HTTP(S) hostnames routed to this peer
        "port": 80,                       optional: upstream TCP port behind the tunnel
        "tunnelIp": "10.100.0.2",         optional: upstream address (default: allowedIPs[0])
        "name": "files" }                 optional: label in logs
    ],
    "edge": { "dataDir": "./data",        optional: HTTPS/HTTP listeners; TLS material in dataDir/tls
              "httpsListen": "0.0.0.0:443", "httpListen": "0.0.0.0:80" (null: none),
              "publicHttpsPort": 443, "wildcards": ["*.example.com"],
              "acme": { "directory": "https://acme-v02.api.letsencrypt.org/directory",
                        "email": "ops@example.com", "caBundle": "/path/extra-roots.pem",
                        "challenges": ["http-01", "tls-alpn-01"] } },
                                          acme optional: certificates from that CA, not the local CA
    "faults": { "seed": 1, "drop": 0.01, "duplicate": 0, "reorder": 0, "delayMs": 0, "jitterMs": 0 },
                                          optional, TEST ONLY: datagram faults in both directions
    "dos": { "underLoadHandshakesPerSecond": 128, "rateLimitPerSecond": 20, "rateLimitBurst": 5,
             "resumeInitiationsPerSecond": 2000 },  after a restart: initiations a second to the
                                          peers' last endpoints (edge.dataDir/wireguard-endpoints.json)
    "testing": { "rekeyAfterTimeMs": 5000 }   optional, TEST ONLY: sessions rotate after this long
  }

  SIGHUP reloads the peer list from FILE (sessions of unchanged peers are kept).

--control URL: the internal RPC listener of 'cloud-connect control' (e.g. http://10.0.0.5:8081).
  The gateway key is generated once into CC_DATA_DIR/gateway.key; the tunnel address and the peers
  come from control; the last configuration is kept in CC_DATA_DIR/gateway-snapshot.json and
  served while control is unreachable (also after a restart). CC_ACME_DIRECTORY (an https URL)
  takes certificates from that ACME CA instead of the local CA; CC_ACME_EMAIL is the account
  contact, CC_ACME_CA_BUNDLE a PEM file of extra roots to trust for the directory, and
  CC_ACME_CHALLENGES the challenge types in order of preference; CC_ACME_DNS_PROVIDER adds DNS-01
  (wildcards). ACME certificates, the account key and issuance locks are kept by control and shared
  with its other gateways (CC_CERT_STORE=file keeps them in CC_DATA_DIR/tls instead).
  The edge serves control's own names, app.<base domain> (dashboard) and api.<base domain> (API),
  the base domain coming from control: CC_CONTROL_PUBLIC_ORIGIN is where it proxies them, an
  http:// origin of control's API listener (e.g. http://control:8080); unset, they answer 503 and
  one warning is logged. Settings (environment):

{{VARIABLES}}

Options:
  --config FILE       the static config file
  --control URL       control's RPC URL (or CC_CONTROL_URL)
  --secret SECRET     the gateway secret (or CC_GATEWAY_SECRET; prefer the variable: arguments
                      are visible to other users of the machine)
  --log-level LEVEL   fatal, error, warn, info (default), debug, trace or silent
  -h, --help          this help

Signals: SIGINT/SIGTERM stop cleanly. A bad setting stops the program with one line naming it
(exit status 2).
`

interface Flags { config?: string, control?: string, secret?: string, 'log-level'?: string, help?: boolean }

export async function run (argv: string[]): Promise<void> {
  // Imported only here: the gateway itself never loads control's database code.
  if (argv[0] === 'drain' || argv[0] === 'undrain') {
    await (await import('./gateway-drain.ts')).run(argv)
    return
  }
  let values: Flags
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        config: { type: 'string', short: 'c' },
        control: { type: 'string' },
        secret: { type: 'string' },
        'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }))
  } catch (err) {
    throw new CliError((err as Error).message, 2)
  }
  if (values.help === true) {
    process.stdout.write(HELP.replace('{{VARIABLES}}', describeGatewayVariables()))
    return
  }
  const level = parseLogLevel(values['log-level'])
  if (values.config !== undefined && values.control !== undefined) throw new CliError('give either --config FILE or --control URL, not both', 2)
  if (values.config !== undefined) {
    await runStatic(values.config, createLogger({ level }))
    return
  }
  const settings = gatewayEnvOrExit()
  const url = values.control ?? settings.controlUrl
  if (url === undefined) throw new CliError('--config FILE or --control URL is required (see --help)', 2)
  const secret = values.secret ?? settings.secret
  if (secret === undefined) throw new CliError('--control needs the gateway secret: set CC_GATEWAY_SECRET (or --secret)', 2)
  let plane: HttpControlPlane
  try {
    plane = new HttpControlPlane({ url, secret })
  } catch (err) {
    throw new CliError(`--control: ${(err as Error).message}`, 2)
  }
  await runWithControl(plane, url, settings, createLogger({ level }))
}

function gatewayEnvOrExit (): GatewayEnv {
  try {
    return loadGatewayEnv(process.env)
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.message, 2)
    throw err
  }
}

/** Resolves on SIGINT/SIGTERM (once), after `stop` ran. */
async function untilSignal (logger: Logger, stop: () => Promise<void>, onHangup?: () => void): Promise<void> {
  await new Promise<void>(resolve => {
    let stopping = false
    const onStop = (signal: NodeJS.Signals): void => {
      if (stopping) return
      stopping = true
      logger.info({ signal }, 'stopping')
      if (onHangup !== undefined) process.off('SIGHUP', onHangup)
      process.off('SIGINT', onStop)
      process.off('SIGTERM', onStop)
      stop().then(() => {
        logger.info('stopped')
        resolve()
      }, err => {
        logger.error({ err }, 'error while stopping')
        process.exitCode = 1
        resolve()
      })
    }
    process.on('SIGINT', onStop)
    process.on('SIGTERM', onStop)
    if (onHangup !== undefined) process.on('SIGHUP', onHangup)
  })
}

async function runStatic (path: string, logger: Logger): Promise<void> {
  const { gateway, plane } = await startStatic(path, logger)
  const client = new ControlClient({
    plane,
    target: gateway,
    logger: moduleLogger(logger, 'control'),
    onApplied: (snapshot, result) => { if (snapshot.version > 1) logger.info(result as object, 'peers reloaded') },
  })
  client.start()
  const reload = (): void => {
    try {
      plane.replace(loadConfigFile(path))
    } catch (err) {
      logger.error({ err: err instanceof ConfigError ? err.message : err }, 'reload failed; keeping the current peers')
    }
  }
  await untilSignal(logger, async () => {
    await client.close()
    await gateway.close()
  }, reload)
}

async function runWithControl (plane: HttpControlPlane, url: string, settings: GatewayEnv, logger: Logger): Promise<void> {
  // A signal while waiting for the first configuration gives up waiting.
  const waiting = new AbortController()
  const giveUp = (): void => { waiting.abort() }
  process.once('SIGINT', giveUp)
  process.once('SIGTERM', giveUp)
  let running
  try {
    running = await startGatewayWithControl({ plane, settings, logger, store: new SnapshotStore(settings.snapshotFile, logger), signal: waiting.signal })
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.message, 2)
    const e = err as NodeJS.ErrnoException
    throw new CliError(`cannot start: ${e.code ?? ''} ${e.message}`.trim())
  } finally {
    process.off('SIGINT', giveUp)
    process.off('SIGTERM', giveUp)
  }
  if (running === null) {
    logger.info('stopped before the control plane answered')
    return
  }
  const { gateway } = running
  const status = gateway.status()
  logger.info({
    publicKey: status.publicKey,
    listen: gateway.listen,
    address: status.address,
    metricsListen: gateway.metricsListen,
    control: url,
    gatewayId: settings.gatewayId,
    edge: status.edge,
    caCertificate: gateway.edge?.caCertificatePath ?? null,
  }, 'gateway listening')
  await untilSignal(logger, async () => { await running.stop() })
}

/**
 * The gateway and its file's control plane. A function of its own so the validated config (every
 * peer's key, prefixes and name: MBs at 10,000 peers) is not kept alive by runStatic's frame.
 */
async function startStatic (path: string, logger: Logger): Promise<{ gateway: Gateway, plane: StaticControlPlane }> {
  const config = readConfig(path)
  let gateway: Gateway
  try {
    gateway = await Gateway.start(config, logger)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new CliError(`cannot listen: ${e.code ?? ''} ${e.message}`.trim())
  }
  logger.info({
    publicKey: encodeKey(config.publicKey),
    listen: gateway.listen,
    address: gateway.status().address,
    metricsListen: gateway.metricsListen,
    peers: config.peers.length,
    edge: gateway.status().edge,
    caCertificate: gateway.edge?.caCertificatePath ?? null,
  }, 'gateway listening')
  // The file is a control plane like any other: SIGHUP publishes its new contents.
  return { gateway, plane: new StaticControlPlane(config) }
}

function readConfig (path: string): GatewayConfig {
  try {
    return loadConfigFile(path)
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(`config ${path}: ${err.message}`, 2)
    throw err
  }
}
