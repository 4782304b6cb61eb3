/**
 * The static control plane: a JSON file describing the gateway and its peers, validated once at
 * start-up. Any bad field stops the program with one line naming it (ConfigError).
 *
 * {
 *   "privateKey": "<wg genkey>",            required
 *   "listenPort": 51820,                     UDP port (default 51820; 0 = any free port)
 *   "listenAddress": "::",                   UDP bind address (IPv4 or IPv6 literal; "::" is dual-stack,
 *                                            0.0.0.0 where the host has no IPv6)
 *   "udpIo": "auto",                         UDP socket: "batched" (recvmmsg/sendmmsg/GSO, Linux),
 *                                            "dgram" (node:dgram), "auto" (batched where built)
 *   "address": "10.100.0.1",                 the gateway's tunnel address (a "/len" suffix is accepted)
 *   "metricsListen": "127.0.0.1:9091",       optional HTTP server: GET /metrics, GET /status
 *   "peers": [{ "publicKey", "allowedIPs": ["10.100.0.2/32"], "endpoint"?: "198.18.0.2:51820",
 *               "persistentKeepalive"?: seconds, "presharedKey"?,
 *               "hostnames"?: ["files.example.com"],  HTTP(S) hostnames routed to this peer
 *               "port"?: 80,                          upstream TCP port behind the tunnel
 *               "tunnelIp"?: "10.100.0.2",            upstream address (default: allowedIPs[0]'s address)
 *               "name"?: "files" }],                  label in logs and reports
 *   "faults"?: { "seed", "drop", "duplicate", "reorder", "delayMs", "jitterMs" },   datagram faults, both directions
 *   "dos"?: { "underLoadHandshakesPerSecond", "rateLimitPerSecond", "rateLimitBurst",
 *             "resumeInitiationsPerSecond" },   after a restart: pace of initiations to the peers'
 *                                               endpoints kept in <edge.dataDir>/wireguard-endpoints.json
 *   "testing"?: { "rekeyAfterTimeMs" },     TEST ONLY: shortens REKEY_AFTER_TIME so sessions rotate fast
 *   "edge"?: {                               HTTPS/HTTP listeners in front of the peers (off when absent)
 *     "dataDir": "./data",                   TLS material: <dataDir>/tls (local CA, certificates)
 *     "httpsListen": "[::]:443", "httpListen": "[::]:80" (null: none; [::] is dual-stack),
 *     "publicHttpsPort"?: 443,               port written in HTTP->HTTPS redirects
 *     "wildcards"?: ["*.example.com"],       wildcard certificates to use for matching hostnames
 *     "acme"?: {                             certificates from an ACME CA instead of the local CA
 *       "directory": "https://...",          the CA's directory URL
 *       "email"?: "ops@example.com",         account contact
 *       "caBundle"?: "/path/roots.pem",      extra PEM roots to trust for the directory
 *       "challenges"?: ["http-01", "tls-alpn-01"] },    in order of preference (default both)
 *     "limits"?: {                           per-client fairness (gateway/edge/limits.ts; defaults shown)
 *       "maxConnectionsPerClient": 256,      open connections per client address (IPv6: per /64)
 *       "clientSlotShare": 0.25,             share of an instance's upstream slots one address may hold
 *       "maxConcurrentStreams": 32,          HTTP/2 streams per connection
 *       "tlsHandshakeTimeoutMs": 10000,      a TLS handshake not done by then is closed
 *       "scarceSlotShare": 0.75,             above this share of an instance's slots in use ...
 *       "minUploadBytesPerSecond": 1024,     ... a request body slower than this (0: never) ...
 *       "uploadProgressWindowMs": 10000,     ... over this window is ended with 408
 *       "tlsContextCache": 1000,             TLS contexts kept in memory (least recently used evicted)
 *       "wireguardStreamsPerClient": 8,      WireGuard-over-TLS streams per client address (0: none accepted)
 *       "wireguardStreamIdleMs": 185000 },   a WireGuard stream silent this long is closed
 *     "relayListen"?: "[::]:8444",          fleet relay listener (TLS, client certificates pinned);
 *                                            its key and certificate: <dataDir>/relay
 *     "relayMode": "stream" },               how a connection goes to a gateway holding its session:
 *                                            stream | passthrough | request (gateway/edge/options.ts)
 *   "fleet"?: [{ "id", "relayUrl": "https://host:port", "relayFingerprint": "<sha-256 hex>" }],
 *                                            gateways relayed to and accepted from (this one included)
 *   "routes"?: [{ "instanceId", "hostnames": [...], "gateways": ["gw-a"] }]
 *                                            instances and the gateways holding their sessions
 * }
 */
import { readFileSync } from 'node:fs'
import Joi from 'joi'
import { ConfigError } from '../../proto/config-env.ts'
import { decodeKey, publicKeyFromPrivate } from '../../proto/noise/keys.ts'
import { BRACKETED_IPV6, DUAL_STACK_ANY, formatHostPort } from '../../proto/net/address.ts'
import { anyPrefixesOverlap, parseIPv4Address, parseIPv4Prefix, prefixContains, formatIPv4, type IPv4Prefix } from '../../proto/wire/ipv4.ts'
import type { FaultConfig } from '../netstack/fault.ts'
import { batchedUdpUnavailable, UDP_IO_SETTINGS, type UdpIoSetting } from '../wireguard/socket.ts'
import { EDGE_LIMIT_DEFAULTS, type EdgeLimits } from '../edge/limits.ts'
import { RELAY_MODES, type RelayMode } from '../edge/options.ts'
import type { FleetGateway, SnapshotRoute } from '../../proto/rpc/index.ts'
import { WIREGUARD_KEY } from '../../proto/rpc/schemas.ts'

export interface Endpoint { address: string, port: number }

export interface PeerConfig {
  publicKey: Buffer
  presharedKey: Buffer | null
  allowedIPs: IPv4Prefix[]
  endpoint: Endpoint | null
  /** Seconds; 0 = off. */
  persistentKeepalive: number
  /** HTTP(S) hostnames routed to this peer (lower case). */
  hostnames?: string[]
  /** Upstream TCP port behind the tunnel. */
  port?: number
  /** Upstream address as a 32-bit number (inside allowedIPs). */
  tunnelIp?: number
  /** Label in logs and reports. */
  name?: string
}

export interface EdgeConfig {
  dataDir: string
  httpsListen: Endpoint
  /** null: no plain HTTP listener. */
  httpListen: Endpoint | null
  publicHttpsPort?: number
  wildcards: string[]
  /** Absent: certificates from the local CA. */
  acme?: AcmeConfig
  limits: EdgeLimits
  /** Fleet relay listener; absent: none (and no relaying). */
  relayListen?: Endpoint
  relayMode: RelayMode
}

export type AcmeChallengeType = 'http-01' | 'tls-alpn-01'
export const ACME_CHALLENGE_TYPES: readonly AcmeChallengeType[] = ['http-01', 'tls-alpn-01']

export interface AcmeConfig {
  directory: string
  email?: string
  /** Contents of the caBundle file (PEM). */
  caBundlePem?: string
  /** In order of preference. */
  challenges: AcmeChallengeType[]
}

export interface DosConfig {
  underLoadHandshakesPerSecond?: number
  /** After a restart: initiations a second to the peers' stored endpoints (0: none sent). */
  resumeInitiationsPerSecond?: number
  rateLimitPerSecond?: number
  rateLimitBurst?: number
}

export interface GatewayConfig {
  privateKey: Buffer
  publicKey: Buffer
  listenAddress: string
  listenPort: number
  udpIo: UdpIoSetting
  /** Tunnel address as a 32-bit number. */
  address: number
  metricsListen: Endpoint | null
  peers: PeerConfig[]
  faults: FaultConfig | null
  dos: DosConfig
  testing: { rekeyAfterTimeMs?: number }
  edge: EdgeConfig | null
  /** The snapshot's fleet and routes for a static config (two gateways without control). */
  fleet: FleetGateway[]
  routes: SnapshotRoute[]
}

/** A configuration problem: `field` is the JSON path (e.g. "peers[1].publicKey"). */
export { ConfigError }

const key = Joi.string().custom((value: string) => {
  decodeKey(value)
  return value
}).messages({ 'any.custom': '{{#label}} is not a WireGuard key (44 characters of base64, as wg genkey prints)' })

const ipv4 = Joi.string().custom((value: string) => {
  parseIPv4Address(value.replace(/\/[0-9]{1,2}$/, ''))
  if (/\/[0-9]{1,2}$/.test(value)) parseIPv4Prefix(value)
  return value
}).messages({ 'any.custom': '{{#label}} is not an IPv4 address' })

const cidr = Joi.string().custom((value: string) => {
  if (!value.includes('/')) throw new Error('missing /len')
  parseIPv4Prefix(value)
  return value
}).messages({ 'any.custom': '{{#label}} is not an IPv4 prefix like 10.100.0.2/32' })

const hostPort = Joi.string().custom((value: string) => {
  parseEndpoint(value)
  return value
}).messages({ 'any.custom': '{{#label}} is not an address:port (IPv4 literal or [IPv6]:port)' })

const listenHostPort = Joi.string().custom((value: string) => {
  parseEndpoint(value, true)
  return value
}).messages({ 'any.custom': '{{#label}} is not an address:port (IPv4 literal or [IPv6]:port; port 0 = any free port)' })

const probability = Joi.number().min(0).max(1)

/** The edge's fairness limits, one schema each (also used for their CC_EDGE_* variables). */
export const EDGE_LIMIT_SCHEMAS: Record<keyof EdgeLimits, Joi.NumberSchema> = {
  maxConnectionsPerClient: Joi.number().integer().min(1).max(1_000_000),
  clientSlotShare: Joi.number().greater(0).max(1),
  maxConcurrentStreams: Joi.number().integer().min(1).max(1_000),
  tlsHandshakeTimeoutMs: Joi.number().integer().min(100).max(120_000),
  scarceSlotShare: Joi.number().min(0).max(1),
  minUploadBytesPerSecond: Joi.number().integer().min(0).max(1_000_000_000),
  uploadProgressWindowMs: Joi.number().integer().min(100).max(600_000),
  tlsContextCache: Joi.number().integer().min(1).max(1_000_000),
  wireguardStreamsPerClient: Joi.number().integer().min(0).max(10_000),
  wireguardStreamIdleMs: Joi.number().integer().min(1_000).max(3_600_000),
}

const hostname = Joi.string().max(253).hostname().pattern(/^[a-z0-9.-]+$/)
  .messages({ 'string.pattern.base': '{{#label}} must be a lower-case DNS name' })

const gatewayId = Joi.string().max(128).pattern(/^[A-Za-z0-9._:-]+$/)

const schema = Joi.object({
  privateKey: key.required(),
  listenPort: Joi.number().integer().min(0).max(65535).default(51820),
  listenAddress: Joi.string().replace(BRACKETED_IPV6, '$1').ip({ cidr: 'forbidden' }).default(DUAL_STACK_ANY),
  udpIo: Joi.string().valid(...UDP_IO_SETTINGS).default('auto'),
  address: ipv4.default('10.100.0.1'),
  metricsListen: listenHostPort,
  peers: Joi.array().items(Joi.object({
    publicKey: key.required(),
    allowedIPs: Joi.array().items(cidr).min(1).required(),
    endpoint: hostPort,
    persistentKeepalive: Joi.number().integer().min(0).max(65535).default(0),
    presharedKey: key,
    hostnames: Joi.array().items(hostname).max(64).default([]),
    port: Joi.number().integer().min(1).max(65535).default(80),
    tunnelIp: Joi.string().ip({ version: ['ipv4'], cidr: 'forbidden' }),
    name: Joi.string().max(128).pattern(/^[A-Za-z0-9._:-]+$/),
  })).default([]),
  faults: Joi.object({
    seed: Joi.number().integer().min(0).max(0xffffffff).default(1),
    drop: probability.default(0),
    duplicate: probability.default(0),
    reorder: probability.default(0),
    delayMs: Joi.number().min(0).max(60_000).default(0),
    jitterMs: Joi.number().min(0).max(60_000).default(0),
  }),
  dos: Joi.object({
    underLoadHandshakesPerSecond: Joi.number().integer().min(0),
    resumeInitiationsPerSecond: Joi.number().integer().min(0).max(100_000),
    rateLimitPerSecond: Joi.number().min(1),
    rateLimitBurst: Joi.number().integer().min(1),
  }).default({}),
  testing: Joi.object({
    rekeyAfterTimeMs: Joi.number().integer().min(100).max(120_000),
  }).default({}),
  edge: Joi.object({
    dataDir: Joi.string().min(1).required(),
    httpsListen: listenHostPort.default(formatHostPort(DUAL_STACK_ANY, 443)),
    httpListen: listenHostPort.allow(null).default(formatHostPort(DUAL_STACK_ANY, 80)),
    publicHttpsPort: Joi.number().integer().min(1).max(65535),
    wildcards: Joi.array().items(Joi.string().max(253).pattern(/^\*\.[a-z0-9.-]+$/)).default([]),
    acme: Joi.object({
      directory: Joi.string().uri({ scheme: ['https'] }).required(),
      email: Joi.string().email({ tlds: { allow: false } }),
      caBundle: Joi.string().min(1),
      challenges: Joi.array().items(Joi.string().valid(...ACME_CHALLENGE_TYPES)).min(1).unique().default([...ACME_CHALLENGE_TYPES]),
    }),
    limits: Joi.object(Object.fromEntries(Object.entries(EDGE_LIMIT_SCHEMAS).map(([name, schema]) =>
      [name, schema.default(EDGE_LIMIT_DEFAULTS[name as keyof EdgeLimits])]))).default(),
    relayListen: listenHostPort,
    relayMode: Joi.string().valid(...RELAY_MODES).default('stream'),
  }),
  fleet: Joi.array().max(256).items(Joi.object({
    id: gatewayId.required(),
    relayUrl: Joi.string().max(300).pattern(/^https:\/\/(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/).required()
      .messages({ 'string.pattern.base': '{{#label}} must be https://host:port' }),
    relayFingerprint: Joi.string().pattern(/^[0-9a-f]{64}$/).required().messages({ 'string.pattern.base': '{{#label}} must be a lower-case hex SHA-256' }),
    region: Joi.string().max(64).pattern(/^[a-z0-9][a-z0-9._-]*$/).allow(null),
  })).default([]),
  routes: Joi.array().items(Joi.object({
    instanceId: gatewayId.required(),
    hostnames: Joi.array().items(hostname).max(64).required(),
    gateways: Joi.array().items(gatewayId).max(256).required(),
  })).default([]),
})

/** "198.18.0.2:51820" or "[fd00::1]:51820" -> Endpoint. Throws on anything else. */
export function parseEndpoint (text: string, allowPortZero = false): Endpoint {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+)):([0-9]{1,5})$/.exec(text)
  if (m === null) throw new Error(`not an address:port: ${text}`)
  const port = Number(m[3])
  if (port < (allowPortZero ? 0 : 1) || port > 65535) throw new Error(`port out of range: ${text}`)
  if (m[2] !== undefined) {
    parseIPv4Address(m[2])
    return { address: m[2], port }
  }
  if (Joi.string().ip({ version: ['ipv6'], cidr: 'forbidden' }).validate(m[1]).error !== undefined) throw new Error(`not an IPv6 address: ${text}`)
  return { address: m[1], port }
}

interface RawPeer {
  publicKey: string, allowedIPs: string[], endpoint?: string, persistentKeepalive: number, presharedKey?: string,
  hostnames: string[], port: number, tunnelIp?: string, name?: string,
}
interface RawAcme { directory: string, email?: string, caBundle?: string, challenges: AcmeChallengeType[] }
interface RawEdge { dataDir: string, httpsListen: string, httpListen: string | null, publicHttpsPort?: number, wildcards: string[], acme?: RawAcme, limits: EdgeLimits, relayListen?: string, relayMode: RelayMode }
interface RawConfig {
  privateKey: string, listenPort: number, listenAddress: string, udpIo: UdpIoSetting, address: string, metricsListen?: string,
  peers: RawPeer[], faults?: FaultConfig, dos: DosConfig, testing: { rekeyAfterTimeMs?: number }, edge?: RawEdge,
  fleet: FleetGateway[], routes: SnapshotRoute[],
}

const PEER_FIELDS = new Set(['publicKey', 'allowedIPs', 'endpoint', 'persistentKeepalive', 'presharedKey', 'hostnames', 'port', 'tunnelIp', 'name'])
const LABEL = '[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?'
/** Lower-case DNS names whose last label starts with a letter: a subset of what `hostname` takes. */
const PLAIN_HOSTNAME = new RegExp(`^(?:${LABEL}\\.)*[a-z](?:[a-z0-9-]{0,61}[a-z0-9])?$`)
const PLAIN_IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/
const PEER_NAME = /^[A-Za-z0-9._:-]{1,128}$/

const isPort = (v: unknown, min: number): v is number => typeof v === 'number' && Number.isInteger(v) && v >= min && v <= 65535

/**
 * The peers of a config file in their common shape, checked without joi (about 30 µs a peer there,
 * 0.3 s before a 10,000-peer gateway can listen). It accepts a subset of what the schema accepts
 * and fills the same defaults; on anything else it answers null and the schema decides (and names
 * the field).
 */
function plainPeers (peers: unknown): RawPeer[] | null {
  if (!Array.isArray(peers)) return null
  const out: RawPeer[] = []
  for (const p of peers as unknown[]) {
    if (typeof p !== 'object' || p === null || Array.isArray(p)) return null
    const peer = p as Record<string, unknown>
    for (const field in peer) if (!PEER_FIELDS.has(field)) return null
    const { publicKey, allowedIPs, endpoint, persistentKeepalive = 0, presharedKey, hostnames = [], port = 80, tunnelIp, name } = peer
    if (typeof publicKey !== 'string' || !WIREGUARD_KEY.test(publicKey)) return null
    if (presharedKey !== undefined && (typeof presharedKey !== 'string' || !WIREGUARD_KEY.test(presharedKey))) return null
    if (!Array.isArray(allowedIPs) || allowedIPs.length === 0) return null
    for (const text of allowedIPs as unknown[]) {
      if (typeof text !== 'string' || !text.includes('/')) return null
      try { parseIPv4Prefix(text) } catch { return null }
    }
    if (endpoint !== undefined) {
      if (typeof endpoint !== 'string') return null
      try { parseEndpoint(endpoint) } catch { return null }
    }
    if (!isPort(persistentKeepalive, 0) || !isPort(port, 1)) return null
    if (!Array.isArray(hostnames) || hostnames.length > 64) return null
    for (const h of hostnames as unknown[]) if (typeof h !== 'string' || h.length > 253 || !PLAIN_HOSTNAME.test(h)) return null
    if (tunnelIp !== undefined && (typeof tunnelIp !== 'string' || !PLAIN_IPV4.test(tunnelIp))) return null
    if (name !== undefined && (typeof name !== 'string' || !PEER_NAME.test(name))) return null
    out.push({
      publicKey, allowedIPs: allowedIPs as string[], persistentKeepalive, hostnames: hostnames as string[], port,
      ...(endpoint === undefined ? {} : { endpoint: endpoint as string }),
      ...(presharedKey === undefined ? {} : { presharedKey: presharedKey as string }),
      ...(tunnelIp === undefined ? {} : { tunnelIp: tunnelIp as string }),
      ...(name === undefined ? {} : { name: name as string }),
    })
  }
  return out
}

/** Validates a parsed JSON value; throws ConfigError naming the first bad field. */
export function validateConfig (value: unknown): GatewayConfig {
  const fields = typeof value === 'object' && value !== null && !Array.isArray(value) ? value as Record<string, unknown> : null
  const plain = fields === null ? null : plainPeers(fields.peers)
  const { error, value: raw } = schema.validate(plain === null ? value : { ...fields, peers: [] }, { abortEarly: true, errors: { wrap: { label: false } } }) as { error?: Joi.ValidationError, value: RawConfig }
  if (plain !== null && error === undefined) raw.peers = plain
  if (error !== undefined) {
    const detail = error.details[0]
    throw new ConfigError(formatPath(detail.path), detail.path.length === 0 ? detail.message : detail.message.replace(/^\S+ /, ''))
  }
  if (raw.udpIo === 'batched' && batchedUdpUnavailable !== null) throw new ConfigError('udpIo', `"batched" is not available here: ${batchedUdpUnavailable}`)
  const privateKey = decodeKey(raw.privateKey)
  const publicKey = publicKeyFromPrivate(privateKey)
  const address = parseIPv4Address(raw.address.replace(/\/[0-9]{1,2}$/, ''))
  const seenKeys = new Map<string, number>()
  // The pairwise check below names the first overlap; it runs only when a sort found one.
  const anyOverlap = anyPrefixesOverlap(raw.peers.flatMap(p => p.allowedIPs.map(text => parseIPv4Prefix(text))))
  const owned: Array<{ prefix: IPv4Prefix, field: string }> = []
  const routedBy = new Map<string, string>()
  const peers = raw.peers.map((p, i): PeerConfig => {
    const field = `peers[${i}]`
    const first = seenKeys.get(p.publicKey)
    if (first !== undefined) throw new ConfigError(`${field}.publicKey`, `duplicate of peers[${first}].publicKey`)
    seenKeys.set(p.publicKey, i)
    const peerKey = decodeKey(p.publicKey)
    if (peerKey.equals(publicKey)) throw new ConfigError(`${field}.publicKey`, 'is the gateway\'s own public key')
    const allowedIPs = p.allowedIPs.map((text, j) => {
      const prefix = parseIPv4Prefix(text)
      const here = `${field}.allowedIPs[${j}]`
      if (prefixContains(prefix, address)) throw new ConfigError(here, `${text} contains the gateway address ${formatIPv4(address)}`)
      if (anyOverlap) {
        for (const other of owned) {
          if (overlaps(prefix, other.prefix)) throw new ConfigError(here, `${text} overlaps ${other.field}`)
        }
        owned.push({ prefix, field: here })
      }
      return prefix
    })
    let tunnelIp = allowedIPs[0].network
    if (p.tunnelIp !== undefined) {
      tunnelIp = parseIPv4Address(p.tunnelIp)
      if (!allowedIPs.some(prefix => prefixContains(prefix, tunnelIp))) throw new ConfigError(`${field}.tunnelIp`, `${p.tunnelIp} is outside the peer's allowedIPs`)
    } else if (p.hostnames.length > 0 && allowedIPs[0].prefixLength < 32) {
      throw new ConfigError(`${field}.tunnelIp`, 'is required when the peer has hostnames and allowedIPs[0] is wider than /32')
    }
    p.hostnames.forEach((h, j) => {
      const other = routedBy.get(h)
      if (other !== undefined) throw new ConfigError(`${field}.hostnames[${j}]`, `${h} is already routed by ${other}`)
      routedBy.set(h, `${field}.hostnames[${j}]`)
    })
    return {
      publicKey: peerKey,
      presharedKey: p.presharedKey === undefined ? null : decodeKey(p.presharedKey),
      allowedIPs,
      endpoint: p.endpoint === undefined ? null : parseEndpoint(p.endpoint),
      persistentKeepalive: p.persistentKeepalive,
      hostnames: p.hostnames,
      port: p.port,
      tunnelIp,
      name: p.name ?? `peer${i}`,
    }
  })
  return {
    privateKey,
    publicKey,
    listenAddress: raw.listenAddress,
    listenPort: raw.listenPort,
    udpIo: raw.udpIo,
    address,
    metricsListen: raw.metricsListen === undefined ? null : parseEndpoint(raw.metricsListen, true),
    peers,
    faults: raw.faults ?? null,
    dos: raw.dos,
    testing: raw.testing,
    edge: raw.edge === undefined
      ? null
      : {
          dataDir: raw.edge.dataDir,
          httpsListen: parseEndpoint(raw.edge.httpsListen, true),
          httpListen: raw.edge.httpListen === null ? null : parseEndpoint(raw.edge.httpListen, true),
          publicHttpsPort: raw.edge.publicHttpsPort,
          wildcards: raw.edge.wildcards,
          limits: raw.edge.limits,
          ...(raw.edge.acme === undefined ? {} : { acme: acmeConfig(raw.edge.acme) }),
          ...(raw.edge.relayListen === undefined ? {} : { relayListen: parseEndpoint(raw.edge.relayListen, true) }),
          relayMode: raw.edge.relayMode,
        },
    fleet: raw.fleet,
    routes: raw.routes,
  }
}

function acmeConfig (raw: RawAcme): AcmeConfig {
  const acme: AcmeConfig = { directory: raw.directory, challenges: raw.challenges }
  if (raw.email !== undefined) acme.email = raw.email
  if (raw.caBundle !== undefined) acme.caBundlePem = readCaBundle(raw.caBundle, 'edge.acme.caBundle')
  return acme
}

/** A PEM file of CA certificates; ConfigError naming `field` when unreadable or not PEM. */
export function readCaBundle (file: string, field: string): string {
  let pem: string
  try {
    pem = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(field, `cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`)
  }
  if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(field, `${file} holds no PEM certificate`)
  return pem
}

function overlaps (a: IPv4Prefix, b: IPv4Prefix): boolean {
  const shorter = a.prefixLength <= b.prefixLength ? a : b
  const longer = shorter === a ? b : a
  return prefixContains(shorter, longer.network)
}

function formatPath (path: Array<string | number>): string {
  let out = ''
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : (out === '' ? part : `.${part}`)
  return out
}
