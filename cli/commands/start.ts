/**
 * `cloud-connect start` (= `npm start`): everything on one machine in one process. The control API
 * and the gateway (WireGuard UDP + HTTPS/HTTP edge) run side by side; the gateway talks to control
 * through the same ControlPlane interface as over the network, here control's RpcService itself.
 * Embedded PGlite database, key, TLS material and mail outbox all live in CC_DATA_DIR.
 */
import { isAbsolute, join, resolve } from 'node:path'
import { parseArgs } from 'node:util'
import type { Logger } from 'pino'
import { Registry } from 'prom-client'
import { describeVariables, loadConfig, type ControlConfig } from '../../control/config.ts'
import { describeRpcVariables, loadRpcConfig, startControlPlane, type RpcConfig, type RunningControlPlane } from '../../control/rpc/index.ts'
import { ConfigError } from '../../proto/config-env.ts'
import { describeGatewayVariables, loadGatewayEnv, type GatewayEnv } from '../../gateway/control/env.ts'
import { loadOrCreateKey } from '../../gateway/control/keyfile.ts'
import { startGatewayWithControl, type RunningGateway } from '../../gateway/control/run.ts'
import type { Gateway } from '../../gateway/index.ts'
import { Metrics } from '../../gateway/metrics.ts'
import type { ReadinessService } from '../../control/services/readiness.ts'
import { decodeKey, encodeKey, publicKeyFromPrivate } from '../../proto/noise/keys.ts'
import { CliError } from '../errors.ts'
import { createLogger, parseLogLevel } from '../log.ts'

const HELP = `Usage: cloud-connect start [--log-level LEVEL]

Runs the control API and the gateway together on this machine (what 'npm start' does):

  dashboard, API   https://app.CC_BASE_DOMAIN:CC_HTTPS_PORT/ and https://api.CC_BASE_DOMAIN:CC_HTTPS_PORT/v1
                   through the edge (HSTS), proxied to the control API's own listener
  control API      http://localhost:CC_API_PORT/v1 (default 8080, direct), embedded database in CC_DATA_DIR
  WireGuard        UDP CC_WG_PORT (default 51820); key generated once into CC_DATA_DIR/gateway.key
  HTTPS / HTTP     CC_HTTPS_PORT (8443) / CC_HTTP_PORT (8000): https://<subdomain>.CC_BASE_DOMAIN
                   with certificates from a local CA (CC_DATA_DIR/tls/local-ca/ca.crt), or from
                   the ACME CA at CC_ACME_DIRECTORY when set (http-01 needs port 80 reaching
                   CC_HTTP_PORT, tls-alpn-01 port 443 reaching CC_HTTPS_PORT)
  mail             written to CC_DATA_DIR/outbox unless CC_SMTP_URL is set

Defaults differ from 'cloud-connect control' where one machine needs it: CC_BASE_DOMAIN=localhost,
CC_API_PORT=8080, CC_PUBLIC_URL=https://app.<base domain>:<HTTPS port> (no port for 443;
http://localhost:<API port> with CC_EDGE=0), CC_TRUSTED_PROXIES=127.0.0.0/8,::1 (the edge reaches
control over loopback; not set when CC_TRUST_PROXY_HOPS is), CC_CONTROL_PUBLIC_ORIGIN=control's own
API listener, and the gateway endpoint handed to containers is localhost:<WireGuard port> (set
CC_GATEWAY_ENDPOINT to a name they can reach).
A bad value stops start-up with one line naming the variable (exit status 2).

Options:
  --log-level LEVEL   overrides CC_LOG_LEVEL (fatal, error, warn, info, debug, trace, silent)
  -h, --help          this help

Control settings:
{{CONTROL}}
RPC settings (report interval, long-poll wait; no listener is opened by start):
{{RPC}}
Gateway settings:
{{GATEWAY}}
`

/** What `start` assumes when the environment says nothing. */
function startDefaults (env: NodeJS.ProcessEnv): Record<string, string> {
  const set = (name: string): string | undefined => env[name] === '' ? undefined : env[name]
  const apiPort = set('CC_API_PORT') ?? '8080'
  const baseDomain = set('CC_BASE_DOMAIN') ?? 'localhost'
  const wgPort = set('CC_WG_PORT') ?? '51820'
  const edge = !['0', 'false'].includes((set('CC_EDGE') ?? '1').toLowerCase())
  const httpsPort = set('CC_PUBLIC_HTTPS_PORT') ?? set('CC_HTTPS_PORT') ?? '8443'
  const defaults: Record<string, string> = {
    CC_DATA_DIR: './data',
    CC_BASE_DOMAIN: baseDomain,
    CC_API_PORT: apiPort,
    // Mail links open the dashboard through the edge (a port chosen at bind time is not known yet).
    // (Bad values fall back to the direct URL: their own variable's check then names them.)
    CC_PUBLIC_URL: edge && /^[A-Za-z0-9.-]+$/.test(baseDomain) && /^\d{1,5}$/.test(httpsPort)
      ? `https://app.${baseDomain.toLowerCase()}${httpsPort === '443' ? '' : `:${httpsPort === '0' ? '8443' : httpsPort}`}`
      : `http://localhost:${apiPort === '0' ? '8080' : apiPort}`,
    CC_GATEWAY_ENDPOINT: `${baseDomain === 'localhost' ? 'localhost' : `connect.${baseDomain}`}:${wgPort === '0' ? '51820' : wgPort}`,
  }
  // The edge's connections to control come from loopback (controlOrigin): their X-Forwarded-For
  // is believed, nobody else's.
  if (Number(set('CC_TRUST_PROXY_HOPS') ?? '0') === 0) defaults.CC_TRUSTED_PROXIES = LOOPBACK
  return defaults
}

const LOOPBACK = '127.0.0.0/8,::1'

/** Where the edge reaches control's API listener in this process: loopback unless it listens elsewhere only. */
function ownControlOrigin (apiHost: string, port: number): { host: string, port: number } {
  // `::` is dual-stack, or 0.0.0.0 on a host without IPv6: 127.0.0.1 reaches it either way.
  if (['0.0.0.0', '::', '', 'localhost'].includes(apiHost)) return { host: '127.0.0.1', port }
  return { host: apiHost, port }
}

interface StartConfig {
  control: ControlConfig
  rpc: RpcConfig
  gateway: GatewayEnv
}

function loadStartConfig (env: NodeJS.ProcessEnv): StartConfig {
  const defaults = startDefaults(env)
  const merged: NodeJS.ProcessEnv = { ...defaults }
  for (const [k, v] of Object.entries(env)) if (v !== undefined && v !== '') merged[k] = v
  try {
    const gateway = loadGatewayEnv(env, { CC_DATA_DIR: defaults.CC_DATA_DIR })
    // Only the gateway announces a public endpoint when the operator set one.
    return { control: loadConfig(merged), rpc: loadRpcConfig(merged), gateway }
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.message, 2)
    throw err
  }
}

export async function run (argv: string[]): Promise<void> {
  let values: { 'log-level'?: string, help?: boolean }
  try {
    ({ values } = parseArgs({ args: argv, options: { 'log-level': { type: 'string' }, help: { type: 'boolean', short: 'h' } }, strict: true }))
  } catch (err) {
    throw new CliError((err as Error).message, 2)
  }
  if (values.help === true) {
    process.stdout.write(HELP.replace('{{CONTROL}}', describeVariables()).replace('{{RPC}}', describeRpcVariables()).replace('{{GATEWAY}}', describeGatewayVariables()))
    return
  }
  const config = loadStartConfig(process.env)
  const level = parseLogLevel(values['log-level'] ?? config.control.logLevel)
  const logger = createLogger({ level })

  // The gateway key first: control hands it out from the first request on.
  let privateKey: string
  try {
    privateKey = loadOrCreateKey(config.gateway.keyFile, logger)
  } catch (err) {
    throw new CliError(`cannot use the gateway key: ${(err as Error).message}`)
  }
  const publicKey = encodeKey(publicKeyFromPrivate(decodeKey(privateKey)))
  const control = { ...config.control, gateway: { ...config.control.gateway, publicKey } }

  // One registry for both: the gateway's CC_METRICS_LISTEN serves control's metrics too.
  const registry = new Registry()
  let plane: RunningControlPlane
  try {
    plane = await startControlPlane({ config: control, rpc: config.rpc, listen: false, logger, extra: { metrics: { registry } } })
  } catch (err) {
    throw new CliError(`cannot start the control API: ${(err as Error).message}`)
  }
  let gateway: RunningGateway | null
  try {
    // app.<base> and api.<base> go to this process's own API listener unless the operator says otherwise.
    const settings = config.gateway.controlOrigin !== null ? config.gateway : { ...config.gateway, controlOrigin: ownControlOrigin(control.apiHost, Number(plane.app.info.port)) }
    gateway = await startGatewayWithControl({ plane: plane.rpc, settings, logger, store: null, reportIntervalMs: config.rpc.reportIntervalMs, metrics: new Metrics({ registry }) })
  } catch (err) {
    await plane.stop(0)
    const e = err as NodeJS.ErrnoException
    throw new CliError(`cannot start the gateway: ${e.code ?? ''} ${e.message}`.trim())
  }
  if (gateway === null) throw new CliError('the gateway could not get its configuration')
  const running = gateway
  addGatewayReadiness(plane.services.readiness, running.gateway)
  printBanner(control, plane, running, config.gateway, logger)

  await new Promise<void>(resolveStop => {
    const stop = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      logger.info({ signal }, 'stopping')
      running.stop()
        .catch(err => { logger.error({ err }, 'stopping the gateway failed'); process.exitCode = 1 })
        .then(async () => { await plane.stop() })
        .catch(err => { logger.error({ err }, 'stopping control failed'); process.exitCode = 1 })
        .finally(() => {
          logger.info('stopped')
          resolveStop()
        })
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
  })
}

/** /ready also reports this process's gateway: its WireGuard socket and, with the edge on, its HTTPS listener. */
export function addGatewayReadiness (readiness: ReadinessService, gateway: Gateway): void {
  readiness.addProbe('wireguard', () => gateway.shell.open
    ? { status: 'ok', detail: `UDP socket bound on ${gateway.listen}` }
    : { status: 'failing', detail: `the UDP socket on ${gateway.listen} is closed` })
  const edge = gateway.edge
  if (edge === null) {
    readiness.addProbe('https', () => ({ status: 'not_configured', detail: 'the edge is off (CC_EDGE=0)' }))
    return
  }
  const where = edge.addresses().https
  const shown = where.family === 'IPv6' ? `[${where.address}]:${where.port}` : `${where.address}:${where.port}`
  readiness.addProbe('https', () => edge.httpsListening
    ? { status: 'ok', detail: `listening on ${shown}` }
    : { status: 'failing', detail: `the HTTPS listener on ${shown} is closed` })
}

function printBanner (control: ControlConfig, plane: RunningControlPlane, running: RunningGateway, settings: GatewayEnv, logger: Logger): void {
  const { gateway } = running
  const status = gateway.status()
  const apiPort = plane.app.info.port
  const apiHost = ['0.0.0.0', '::', ''].includes(control.apiHost) ? 'localhost' : control.apiHost
  const wgPort = Number(gateway.listen.slice(gateway.listen.lastIndexOf(':') + 1))
  const endpointHost = control.gateway.endpoint.slice(0, control.gateway.endpoint.lastIndexOf(':'))
  const dataDir = isAbsolute(control.dataDir) ? control.dataDir : resolve(control.dataDir)
  const httpsPort = status.edge === null ? null : Number(status.edge.https.slice(status.edge.https.lastIndexOf(':') + 1))
  const httpPort = status.edge?.http == null ? null : Number(status.edge.http.slice(status.edge.http.lastIndexOf(':') + 1))
  const publicHttpsPort = settings.publicHttpsPort ?? httpsPort
  const throughEdge = (label: string): string | null => publicHttpsPort === null ? null : `https://${label}.${control.baseDomain}${publicHttpsPort === 443 ? '' : `:${publicHttpsPort}`}`
  const facts = {
    dashboard: throughEdge('app') === null ? null : `${throughEdge('app')!}/`,
    apiHttps: throughEdge('api') === null ? null : `${throughEdge('api')!}/v1`,
    api: `http://${apiHost}:${apiPort}/v1`,
    health: `http://${apiHost}:${apiPort}/health`,
    ready: `http://${apiHost}:${apiPort}/ready`,
    wireguardEndpoint: `${endpointHost}:${wgPort}`,
    wireguardPublicKey: status.publicKey,
    https: httpsPort === null ? null : `https://<subdomain>.${control.baseDomain}:${httpsPort}`,
    http: httpPort === null ? null : `http://<subdomain>.${control.baseDomain}:${httpPort}`,
    caCertificate: gateway.edge?.caCertificatePath ?? null,
    acmeDirectory: gateway.edge === null ? null : settings.acme?.directory ?? null,
    mailOutbox: control.smtpUrl === undefined ? join(dataDir, 'outbox') : null,
    metrics: gateway.metricsListen === null ? null : `http://${gateway.metricsListen}/metrics`,
    dataDir,
  }
  logger.info(facts, 'cloud-connect ready')
  const lines = [
    '',
    'Erugo Cloud Connect is running (control + gateway, one process)',
    facts.dashboard === null ? null : `  Dashboard        ${facts.dashboard}`,
    facts.apiHttps === null ? null : `  API              ${facts.apiHttps}`,
    `  API              ${facts.api}   (direct, without TLS; health: ${facts.health}, ready: ${facts.ready})`,
    `  WireGuard        ${facts.wireguardEndpoint}   public key ${facts.wireguardPublicKey}`,
    facts.https === null ? '  HTTPS            off (CC_EDGE=0)' : `  HTTPS            ${facts.https}${facts.http === null ? '' : `   (HTTP ${facts.http} redirects)`}`,
    facts.caCertificate === null ? null : `  CA certificate   ${facts.caCertificate}   (trust it to browse without warnings)`,
    facts.acmeDirectory === null ? null : `  Certificates     ACME ${facts.acmeDirectory}`,
    facts.mailOutbox === null ? '  Mail             sent through CC_SMTP_URL' : `  Mail outbox      ${facts.mailOutbox}`,
    facts.metrics === null ? null : `  Metrics          ${facts.metrics}   (Prometheus: control and gateway)`,
    `  Data             ${facts.dataDir}`,
    '',
  ].filter((l): l is string => l !== null)
  process.stdout.write(lines.join('\n') + '\n')
}
