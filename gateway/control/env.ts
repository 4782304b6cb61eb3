/**
 * Settings of a gateway run against a control plane (`cloud-connect gateway --control URL`, and
 * the gateway half of `cloud-connect start`), from CC_ environment variables, validated once. A bad
 * value raises ConfigError naming the variable. The tunnel address and the peers come from control.
 */
import { hostname } from 'node:os'
import { join } from 'node:path'
import Joi from 'joi'
import { ConfigError, describeEnv, loadEnv, reason } from '../../proto/config-env.ts'
import { ACME_CHALLENGE_TYPES, EDGE_LIMIT_SCHEMAS, readCaBundle, type AcmeChallengeType } from '../config/schema.ts'
import { EDGE_LIMIT_DEFAULTS, type EdgeLimits } from '../edge/limits.ts'
import { RELAY_MODES, type RelayMode } from '../edge/options.ts'
import { DNS_PROVIDERS } from '../edge/acme/dns-provider.ts'
import { GATEWAY_KEY_FILE } from './keyfile.ts'
import { UDP_IO_CHOICES, UDP_IO_SETTINGS, type UdpIoSetting } from '../wireguard/socket.ts'
import { BRACKETED_IPV6, DUAL_STACK_ANY, formatHostPort } from '../../proto/net/address.ts'

export interface GatewayEnv {
  dataDir: string
  /** WireGuard UDP bind address and port. */
  wgHost: string
  wgPort: number
  /** The WireGuard socket: batched system calls (Linux, the default where built) or node:dgram. */
  udpIo: UdpIoSetting
  /** After a restart: initiations a second to the peers' kept endpoints (0: none; dos.resumeInitiationsPerSecond). */
  resumeRate: number
  /** Edge listeners; httpPort null = no plain HTTP listener; edge false = no edge at all. */
  edge: boolean
  edgeHost: string
  httpsPort: number
  httpPort: number | null
  publicHttpsPort: number | undefined
  wildcards: string[]
  /** The edge's fairness limits set by CC_EDGE_* variables (the rest take the config's defaults). */
  edgeLimits: Partial<EdgeLimits>
  /** Public host:port containers reach WireGuard on (told to control in hello); null: unknown. */
  endpoint: string | null
  gatewayId: string
  metricsListen: string | undefined
  /** The first of controlUrls (CC_CONTROL_URL as given: a comma-separated list is kept whole). */
  controlUrl: string | undefined
  /** CC_CONTROL_URL's replicas, tried in turn. */
  controlUrls: string[]
  /** CC_GATEWAY_REGION; null: none. */
  region: string | null
  /** The fleet relay listener's port (CC_RELAY_PORT); null: no relay listener and no relaying. */
  relayPort: number | null
  /** Where the other gateways reach the relay listener (CC_RELAY_URL or the endpoint's host); null without one. */
  relayUrl: string | null
  /** How a client connection goes to a gateway holding its instance's session (CC_RELAY_MODE). */
  relayMode: RelayMode
  secret: string | undefined
  keyFile: string
  snapshotFile: string
  /**
   * Control's API listener as the edge reaches it (CC_CONTROL_PUBLIC_ORIGIN): app.<base> and
   * api.<base> are proxied there. null: not set (those names answer 503).
   */
  controlOrigin: { host: string, port: number } | null
  /** Certificates from this ACME CA instead of the local CA; null: local CA. */
  acme: AcmeEnv | null
  /**
   * Where ACME certificates, the account key and issuance locks live: 'control' (shared by every
   * gateway of the control plane, the default) or 'file' (CC_DATA_DIR/tls, this gateway only).
   */
  certStore: 'control' | 'file'
}

export interface AcmeEnv {
  directory: string
  email?: string
  /** Path of a PEM file of extra roots to trust for the directory (checked readable). */
  caBundle?: string
  challenges: AcmeChallengeType[]
  /** DNS-01 (wildcards) through this provider (dns-provider.ts DNS_PROVIDERS); unset: no DNS-01. */
  dns?: { provider: string, settings: Record<string, string> }
}

const port = Joi.number().integer().min(0).max(65535)

/** CC_EDGE_* variable of each edge limit (gateway/edge/limits.ts). */
export const EDGE_LIMIT_VARIABLES: Record<keyof EdgeLimits, string> = {
  maxConnectionsPerClient: 'CC_EDGE_MAX_CONNECTIONS_PER_CLIENT',
  clientSlotShare: 'CC_EDGE_CLIENT_SLOT_SHARE',
  maxConcurrentStreams: 'CC_EDGE_H2_MAX_STREAMS',
  tlsHandshakeTimeoutMs: 'CC_EDGE_TLS_HANDSHAKE_TIMEOUT_MS',
  scarceSlotShare: 'CC_EDGE_SLOTS_SCARCE_ABOVE',
  minUploadBytesPerSecond: 'CC_EDGE_MIN_UPLOAD_RATE',
  uploadProgressWindowMs: 'CC_EDGE_UPLOAD_PROGRESS_WINDOW_MS',
  tlsContextCache: 'CC_TLS_CONTEXT_CACHE',
  wireguardStreamsPerClient: 'CC_EDGE_WG_STREAMS_PER_CLIENT',
  wireguardStreamIdleMs: 'CC_EDGE_WG_STREAM_IDLE_MS',
}
const LIMIT_NAMES = Object.keys(EDGE_LIMIT_VARIABLES) as Array<keyof EdgeLimits>
const VARIABLES = {
  CC_DATA_DIR: Joi.string().default('./data'),
  CC_WG_HOST: Joi.string().replace(BRACKETED_IPV6, '$1').ip({ cidr: 'forbidden' }).default(DUAL_STACK_ANY),
  CC_WG_PORT: port.default(51820),
  CC_WG_UDP_IO: Joi.string().valid(...UDP_IO_SETTINGS).messages({ 'any.only': `must be ${UDP_IO_CHOICES}` }).default('auto'),
  CC_WG_RESUME_RATE: Joi.number().integer().min(0).max(100_000).default(2000),
  CC_EDGE: Joi.boolean().truthy('1').falsy('0').default(true),
  CC_EDGE_HOST: Joi.string().replace(BRACKETED_IPV6, '$1').ip({ cidr: 'forbidden' }).default(DUAL_STACK_ANY),
  CC_HTTPS_PORT: port.default(8443),
  CC_HTTP_PORT: Joi.alternatives(port, Joi.string().valid('off')).default(8000),
  CC_PUBLIC_HTTPS_PORT: port.min(1),
  CC_WILDCARDS: Joi.string().pattern(/^\*\.[a-z0-9.-]+(,\*\.[a-z0-9.-]+)*$/).message('must be a comma-separated list like *.example.com'),
  CC_GATEWAY_ENDPOINT: Joi.string().pattern(/^[A-Za-z0-9.-]+:\d{1,5}$|^\[[0-9A-Fa-f:.]+\]:\d{1,5}$/).message('must be host:port'),
  CC_GATEWAY_ID: Joi.string().max(128).pattern(/^[A-Za-z0-9._:-]+$/).message('must be letters, digits and . _ : - (at most 128)'),
  CC_METRICS_LISTEN: Joi.string().pattern(/^(?:[0-9.]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/).message('must be address:port, e.g. 127.0.0.1:9091'),
  CC_CONTROL_URL: Joi.string().custom((value: string) => {
    const urls = value.split(',').map(u => u.trim())
    for (const url of urls) {
      if (Joi.string().uri({ scheme: ['http', 'https'] }).validate(url).error !== undefined) throw new Error('invalid')
    }
    return value
  }).messages({ 'any.custom': 'must be an http(s) URL of control\'s RPC listener, or a comma-separated list of them' }),
  CC_GATEWAY_REGION: Joi.string().max(64).pattern(/^[a-z0-9][a-z0-9._-]*$/).message('must be lower-case letters, digits and . _ - (at most 64)'),
  CC_RELAY_PORT: port.min(1),
  CC_RELAY_MODE: Joi.string().valid(...RELAY_MODES).messages({ 'any.only': `must be one of ${RELAY_MODES.join(', ')}` }).default('stream'),
  CC_RELAY_URL: Joi.string().max(300).pattern(/^https:\/\/(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/).message('must be https://host:port'),
  CC_CONTROL_PUBLIC_ORIGIN: Joi.string().uri({ scheme: ['http'] }).message('must be an http:// origin of control\'s API listener, e.g. http://control:8080'),
  CC_GATEWAY_SECRET: Joi.string().pattern(/^[A-Za-z0-9_-]{43,512}$/).message('must be base64url of at least 32 bytes'),
  CC_GATEWAY_KEY_FILE: Joi.string(),
  CC_ACME_DIRECTORY: Joi.string().uri({ scheme: ['https'] }).message('must be an https:// URL of an ACME directory'),
  CC_ACME_EMAIL: Joi.string().email({ tlds: { allow: false } }).message('must be an email address'),
  CC_ACME_CA_BUNDLE: Joi.string(),
  CC_ACME_CHALLENGES: Joi.string().pattern(new RegExp(`^(${ACME_CHALLENGE_TYPES.join('|')})(,(${ACME_CHALLENGE_TYPES.join('|')}))*$`))
    .message(`must be a comma-separated list of ${ACME_CHALLENGE_TYPES.join(', ')}`).default(ACME_CHALLENGE_TYPES.join(',')),
  CC_ACME_DNS_PROVIDER: Joi.string().valid(...Object.keys(DNS_PROVIDERS)).messages({ 'any.only': `must be one of ${Object.keys(DNS_PROVIDERS).join(', ')}` }),
  CC_CERT_STORE: Joi.string().valid('control', 'file').messages({ 'any.only': 'must be control or file' }).default('control'),
  // Left unset, a limit is not written to the config: its schema default applies (shown in --help).
  ...Object.fromEntries(LIMIT_NAMES.map(name => [EDGE_LIMIT_VARIABLES[name], EDGE_LIMIT_SCHEMAS[name].description(`default ${EDGE_LIMIT_DEFAULTS[name]}`)])),
} as const

export function describeGatewayVariables (): string {
  const lines = describeEnv(VARIABLES)
  for (const [provider, definition] of Object.entries(DNS_PROVIDERS)) {
    for (const name of Object.keys(definition.settings)) lines.push(`  ${name} (CC_ACME_DNS_PROVIDER=${provider}: ${definition.summary})`)
  }
  return lines.join('\n')
}

/** `defaults` fill variables the environment leaves unset (e.g. `start`'s choices). */
export function loadGatewayEnv (env: NodeJS.ProcessEnv = process.env, defaults: Record<string, string> = {}): GatewayEnv {
  const v = loadEnv(VARIABLES, env, { secret: ['CC_GATEWAY_SECRET'], defaults })
  const endpoint = v.CC_GATEWAY_ENDPOINT as string | undefined
  if (endpoint !== undefined) {
    const p = Number(endpoint.slice(endpoint.lastIndexOf(':') + 1))
    if (p < 1 || p > 65535) throw new ConfigError('CC_GATEWAY_ENDPOINT', `port out of range (got "${endpoint}")`)
  }
  const relay = relayFrom(v, endpoint)
  const dataDir = v.CC_DATA_DIR as string
  const controlOrigin = controlOriginFrom(v.CC_CONTROL_PUBLIC_ORIGIN as string | undefined)
  const acme = acmeFrom(v, env)
  const httpPort = v.CC_HTTP_PORT
  return {
    dataDir,
    wgHost: v.CC_WG_HOST as string,
    wgPort: v.CC_WG_PORT as number,
    udpIo: v.CC_WG_UDP_IO as UdpIoSetting,
    resumeRate: v.CC_WG_RESUME_RATE as number,
    edge: v.CC_EDGE as boolean,
    edgeHost: v.CC_EDGE_HOST as string,
    httpsPort: v.CC_HTTPS_PORT as number,
    httpPort: httpPort === 'off' ? null : Number(httpPort),
    publicHttpsPort: v.CC_PUBLIC_HTTPS_PORT as number | undefined,
    wildcards: v.CC_WILDCARDS === undefined ? [] : (v.CC_WILDCARDS as string).split(','),
    edgeLimits: Object.fromEntries(LIMIT_NAMES.filter(name => v[EDGE_LIMIT_VARIABLES[name]] !== undefined)
      .map(name => [name, v[EDGE_LIMIT_VARIABLES[name]] as number])),
    endpoint: endpoint ?? null,
    gatewayId: (v.CC_GATEWAY_ID as string | undefined) ?? defaultGatewayId(),
    metricsListen: v.CC_METRICS_LISTEN as string | undefined,
    controlUrl: v.CC_CONTROL_URL as string | undefined,
    controlUrls: v.CC_CONTROL_URL === undefined ? [] : (v.CC_CONTROL_URL as string).split(',').map(u => u.trim()),
    region: (v.CC_GATEWAY_REGION as string | undefined) ?? null,
    relayPort: relay.port,
    relayUrl: relay.url,
    relayMode: v.CC_RELAY_MODE as RelayMode,
    secret: v.CC_GATEWAY_SECRET as string | undefined,
    keyFile: (v.CC_GATEWAY_KEY_FILE as string | undefined) ?? join(dataDir, GATEWAY_KEY_FILE),
    snapshotFile: join(dataDir, 'gateway-snapshot.json'),
    controlOrigin,
    acme,
    certStore: v.CC_CERT_STORE as 'control' | 'file',
  }
}

/** The relay listener's port and advertised URL (default: https://<CC_GATEWAY_ENDPOINT's host>:<CC_RELAY_PORT>). */
function relayFrom (v: Record<string, unknown>, endpoint: string | undefined): { port: number | null, url: string | null } {
  const port = v.CC_RELAY_PORT as number | undefined
  const url = v.CC_RELAY_URL as string | undefined
  if (port === undefined) {
    if (url !== undefined) throw new ConfigError('CC_RELAY_URL', 'needs CC_RELAY_PORT (the relay listener it advertises)')
    return { port: null, url: null }
  }
  if (v.CC_EDGE === false) throw new ConfigError('CC_RELAY_PORT', 'needs the edge (CC_EDGE=1): relayed requests are served by it')
  if (url !== undefined) {
    const p = Number(url.slice(url.lastIndexOf(':') + 1))
    if (p < 1 || p > 65535) throw new ConfigError('CC_RELAY_URL', `port out of range (got "${url}")`)
    return { port, url }
  }
  if (endpoint === undefined) {
    throw new ConfigError('CC_RELAY_URL', 'is needed when CC_RELAY_PORT is set and CC_GATEWAY_ENDPOINT is not (https://host:port where the other gateways reach this one)')
  }
  return { port, url: `https://${endpoint.slice(0, endpoint.lastIndexOf(':'))}:${port}` }
}

/** http://host[:port] with nothing after it (the edge sends the request's own path). */
function controlOriginFrom (value: string | undefined): GatewayEnv['controlOrigin'] {
  if (value === undefined) return null
  const url = new URL(value)
  if (url.username !== '' || url.password !== '' || (url.pathname !== '/' && url.pathname !== '') || url.search !== '' || url.hash !== '') {
    throw new ConfigError('CC_CONTROL_PUBLIC_ORIGIN', `must be an origin only, http://host:port, without path, query or credentials (got ${JSON.stringify(value)})`)
  }
  const host = url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname
  return { host, port: url.port === '' ? 80 : Number(url.port) }
}

function acmeFrom (v: Record<string, unknown>, env: NodeJS.ProcessEnv): AcmeEnv | null {
  const directory = v.CC_ACME_DIRECTORY as string | undefined
  const email = v.CC_ACME_EMAIL as string | undefined
  const caBundle = v.CC_ACME_CA_BUNDLE as string | undefined
  const dnsProvider = v.CC_ACME_DNS_PROVIDER as string | undefined
  if (directory === undefined) {
    if (email !== undefined) throw new ConfigError('CC_ACME_EMAIL', 'needs CC_ACME_DIRECTORY')
    if (caBundle !== undefined) throw new ConfigError('CC_ACME_CA_BUNDLE', 'needs CC_ACME_DIRECTORY')
    if (dnsProvider !== undefined) throw new ConfigError('CC_ACME_DNS_PROVIDER', 'needs CC_ACME_DIRECTORY')
    dnsFrom(undefined, env) // a provider's setting alone is an error too
    return null
  }
  const dns = dnsFrom(dnsProvider, env)
  const acme: AcmeEnv = { directory, challenges: [...new Set((v.CC_ACME_CHALLENGES as string).split(','))] as AcmeChallengeType[] }
  if (email !== undefined) acme.email = email
  if (caBundle !== undefined) {
    readCaBundle(caBundle, 'CC_ACME_CA_BUNDLE')
    acme.caBundle = caBundle
  }
  if (dns !== undefined) acme.dns = dns
  return acme
}

/** The DNS provider's settings: its own variables validated, any other provider's refused. */
function dnsFrom (provider: string | undefined, env: NodeJS.ProcessEnv): AcmeEnv['dns'] {
  const settings: Record<string, string> = {}
  for (const [name, definition] of Object.entries(DNS_PROVIDERS)) {
    for (const [variable, schema] of Object.entries(definition.settings)) {
      const raw = env[variable] === '' ? undefined : env[variable]
      if (name !== provider) {
        if (raw !== undefined) throw new ConfigError(variable, `needs CC_ACME_DNS_PROVIDER=${name}`)
        continue
      }
      const { value, error } = schema.validate(raw, { errors: { wrap: { label: false } } })
      if (error !== undefined) {
        const detail = error.details[0]?.type === 'any.required' ? `required by CC_ACME_DNS_PROVIDER=${name}` : reason(error)
        throw new ConfigError(variable, `${detail}${raw === undefined ? '' : ` (got ${JSON.stringify(raw)})`}`)
      }
      if (value !== undefined) settings[variable] = String(value)
    }
  }
  return provider === undefined ? undefined : { provider, settings }
}

function defaultGatewayId (): string {
  const name = hostname().replace(/[^A-Za-z0-9._:-]/g, '-').slice(0, 120)
  return `gw-${name === '' ? 'local' : name}`
}

/** The raw gateway config (gateway/config/schema.ts validateConfig input) for these settings. */
export function gatewayConfigFrom (settings: GatewayEnv, privateKey: string, address: string): Record<string, unknown> {
  const host = formatHostPort
  const raw: Record<string, unknown> = {
    privateKey,
    listenAddress: settings.wgHost,
    listenPort: settings.wgPort,
    udpIo: settings.udpIo,
    address,
    dos: { resumeInitiationsPerSecond: settings.resumeRate },
  }
  if (settings.metricsListen !== undefined) raw.metricsListen = settings.metricsListen
  if (settings.edge) {
    const edge: Record<string, unknown> = {
      dataDir: settings.dataDir,
      httpsListen: host(settings.edgeHost, settings.httpsPort),
      httpListen: settings.httpPort === null ? null : host(settings.edgeHost, settings.httpPort),
      wildcards: settings.wildcards,
    }
    if (settings.publicHttpsPort !== undefined) edge.publicHttpsPort = settings.publicHttpsPort
    if (Object.keys(settings.edgeLimits).length > 0) edge.limits = settings.edgeLimits
    if (settings.relayPort !== null) edge.relayListen = host(settings.edgeHost, settings.relayPort)
    edge.relayMode = settings.relayMode
    if (settings.acme !== null) {
      // The DNS provider is not part of the config file's schema: Gateway.start receives it built.
      const { dns: _dns, ...acme } = settings.acme
      edge.acme = acme
    }
    raw.edge = edge
  }
  return raw
}
