/**
 * Validators for every RPC message, used on both sides: control checks what gateways send, a
 * gateway checks the snapshot it receives (and the one it reloads from disk). Structure only:
 * conflicts between peers (a key or address twice) are the applier's business, which drops the
 * offender and keeps the rest. Unknown fields are dropped, so a newer peer can add optional ones
 * without a protocol bump. A failure is RpcError('VALIDATION_ERROR') naming the first bad field.
 */
import Joi from 'joi'
import { RpcError } from './errors.ts'
import {
  MAX_ACCESS_LOG_ENTRIES, MAX_ACCESS_LOG_PATH, MAX_CERTIFICATE_PEM_BYTES, MAX_CERTIFICATES, MAX_USAGE_BUCKETS, MAX_FLEET_GATEWAYS, MAX_HOLDER_LENGTH, MAX_HOSTNAMES_PER_PEER, MAX_ID_LENGTH, MAX_LOCK_TTL_MS, MAX_PEERS,
  MAX_PRIVATE_KEY_PEM_BYTES, MIN_LOCK_TTL_MS,
  type CertificateGetReply, type CertificateLockReply, type CertificateLockRequest, type CertificateNameRequest, type CertificatePutRequest,
  type CertificateUnlockRequest, type ConfigSnapshot, type GatewayHello, type GatewayReport, type HelloReply, type ReportReply,
  type AccessLogReport,
} from './messages.ts'

/** Canonical base64 of 32 bytes, as `wg pubkey` prints: the 43rd character holds 4 key bits and 2 zero bits. */
export const WIREGUARD_KEY = /^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/

const key = Joi.string().pattern(WIREGUARD_KEY).messages({ 'string.pattern.base': '{{#label}} must be a WireGuard key (44 characters of canonical base64)' })
const ipv4 = Joi.string().ip({ version: ['ipv4'], cidr: 'forbidden' })
const cidr = Joi.string().ip({ version: ['ipv4'], cidr: 'required' })
const id = Joi.string().min(1).max(MAX_ID_LENGTH).pattern(/^[A-Za-z0-9._:-]+$/)
const port = Joi.number().integer().min(1).max(65535)
const hostname = Joi.string().max(253).hostname().lowercase().pattern(/^[a-z0-9.-]+$/)
  .messages({ 'string.pattern.base': '{{#label}} must be a lower-case DNS name' })
/** host:port with a DNS name, an IPv4 literal or a bracketed IPv6 literal. */
const hostPort = Joi.string().max(300).pattern(/^(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/)
  .custom((value: string) => {
    const p = Number(value.slice(value.lastIndexOf(':') + 1))
    if (p < 1 || p > 65535) throw new Error('port out of range')
    return value
  })
  .messages({ 'string.pattern.base': '{{#label}} must be host:port', 'any.custom': '{{#label}} has a port out of range' })
/** A certificate store name: a lower-case DNS name, optionally `*.` + one (gateway/edge/cert-store.ts). */
export const CERTIFICATE_NAME = /^(\*\.)?[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/
const certificateName = Joi.string().max(253).pattern(CERTIFICATE_NAME)
  .messages({ 'string.pattern.base': '{{#label}} must be a lower-case DNS name or *.<name>' })
const time = Joi.string().isoDate().max(64)
const count = Joi.number().integer().min(0).max(Number.MAX_SAFE_INTEGER)
const protocol = Joi.number().integer().min(0).max(0xffff).required()

/** A region name (CC_GATEWAY_REGION, a container's region). */
const region = Joi.string().max(64).pattern(/^[a-z0-9][a-z0-9._-]*$/).messages({ 'string.pattern.base': '{{#label}} must be lower-case letters, digits and . _ -' })
/** `https://host:port` with nothing after it. */
const relayUrl = Joi.string().max(300).uri({ scheme: ['https'] }).pattern(/^https:\/\/(?:[A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\]):\d{1,5}$/)
  .messages({ 'string.pattern.base': '{{#label}} must be https://host:port' })
/** Lower-case hex SHA-256. */
const fingerprint = Joi.string().pattern(/^[0-9a-f]{64}$/).messages({ 'string.pattern.base': '{{#label}} must be a lower-case hex SHA-256' })

const snapshotSchema = Joi.object({
  version: count.required(),
  gateway: Joi.object({
    address: ipv4.required(),
    listenPort: Joi.number().integer().min(0).max(65535).required(),
    publicKey: key,
    endpoint: hostPort,
    baseDomain: hostname,
  }).required(),
  peers: Joi.array().max(MAX_PEERS).items(Joi.object({
    instanceId: id.required(),
    publicKey: key.required(),
    tunnelIp: ipv4.required(),
    hostnames: Joi.array().max(MAX_HOSTNAMES_PER_PEER).items(hostname).required(),
    port: port.required(),
    allowedIPs: Joi.array().min(1).max(64).items(cidr),
    endpoint: hostPort,
    persistentKeepalive: Joi.number().integer().min(0).max(65535),
    presharedKey: key,
  })).required(),
  fleet: Joi.array().max(MAX_FLEET_GATEWAYS).items(Joi.object({
    id: id.required(),
    relayUrl: relayUrl.required(),
    relayFingerprint: fingerprint.required(),
    region: region.allow(null),
  })),
  routes: Joi.array().max(MAX_PEERS).items(Joi.object({
    instanceId: id.required(),
    hostnames: Joi.array().max(MAX_HOSTNAMES_PER_PEER).items(hostname).required(),
    gateways: Joi.array().max(MAX_FLEET_GATEWAYS).items(id).required(),
  })),
})

const helloSchema = Joi.object({
  protocol,
  gatewayId: id.required(),
  publicKey: key.required(),
  endpoint: hostPort.allow(null).required(),
  listenPort: Joi.number().integer().min(0).max(65535).required(),
  software: Joi.string().max(100),
  region: region.allow(null),
  relayUrl: relayUrl.allow(null),
  relayFingerprint: fingerprint.allow(null),
})

const helloReplySchema = Joi.object({
  protocol,
  gatewayId: id.required(),
  reportIntervalMs: Joi.number().integer().min(100).max(3_600_000).required(),
  configVersion: count.required(),
})

const reportSchema = Joi.object({
  protocol,
  gatewayId: id.required(),
  sentAt: time.required(),
  full: Joi.boolean().required(),
  peers: Joi.array().max(MAX_PEERS).items(Joi.object({
    publicKey: key.required(),
    instanceId: id,
    lastHandshakeAt: time.allow(null).required(),
    lastRxAt: time.allow(null),
    endpoint: hostPort.allow(null).required(),
    rxBytes: count.required(),
    txBytes: count.required(),
  })).required(),
  certificates: Joi.array().max(MAX_CERTIFICATES).items(Joi.object({
    // A managed wildcard (CC_WILDCARDS) is reported under its own name, `*.<domain>`.
    hostname: certificateName.lowercase().required(),
    state: Joi.string().valid('pending', 'active', 'failing').required(),
    notAfter: time,
    lastError: Joi.string().max(2000),
    nextRetryAt: time,
  })).required(),
  usage: Joi.array().max(MAX_USAGE_BUCKETS).items(Joi.object({
    instanceId: id.required(),
    hour: time.required(),
    bytesIn: count.required(),
    bytesOut: count.required(),
    requests: count.required(),
  })),
  // Entries are checked by validateReport (accessLogEntries below): up to 10,000 of them per report.
  accessLog: Joi.array().max(MAX_ACCESS_LOG_ENTRIES),
  accessLogDropped: count,
})

const ID_PATTERN = /^[A-Za-z0-9._:-]+$/
const METHOD_PATTERN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/
const accessLogEntrySchema = Joi.object({
  instanceId: id.required(),
  at: time.required(),
  method: Joi.string().max(32).pattern(METHOD_PATTERN).required(),
  path: Joi.string().max(MAX_ACCESS_LOG_PATH).allow('').required(),
  status: Joi.number().integer().min(0).max(999).required(),
  bytesIn: count.required(),
  bytesOut: count.required(),
  durationMs: count.required(),
  client: Joi.string().max(64).allow('').required(),
})

const reportReplySchema = Joi.object({ peers: count.required(), certificates: count.required() })

const pem = (label: string, max: number): Joi.StringSchema => Joi.string().max(max).pattern(new RegExp(`^-----BEGIN ${label}-----`))
  .messages({ 'string.pattern.base': `{{#label}} must be PEM (${label})` })
const storedCertificate = Joi.object({
  name: certificateName.required(),
  certificatePem: pem('CERTIFICATE', MAX_CERTIFICATE_PEM_BYTES).required(),
  privateKeyPem: pem('(?:EC |RSA )?PRIVATE KEY', MAX_PRIVATE_KEY_PEM_BYTES).required(),
  issuer: Joi.string().min(1).max(1000).required(),
  updatedAt: time,
})
const holder = Joi.string().min(1).max(MAX_HOLDER_LENGTH).pattern(/^[A-Za-z0-9._:/-]+$/)
const certificateNameSchema = Joi.object({ name: certificateName.required() })
const certificatePutSchema = Joi.object({ certificate: storedCertificate.required() })
const certificateGetReplySchema = Joi.object({ certificate: storedCertificate.allow(null).required() })
const certificateLockSchema = Joi.object({
  name: certificateName.required(),
  holder: holder.required(),
  ttlMs: Joi.number().integer().min(MIN_LOCK_TTL_MS).max(MAX_LOCK_TTL_MS).required(),
})
const certificateLockReplySchema = Joi.object({ acquired: Joi.boolean().required(), expiresAt: time.required() })
const certificateUnlockSchema = Joi.object({ name: certificateName.required(), holder: holder.required() })

function validator<T> (schema: Joi.Schema, what: string): (value: unknown) => T {
  return (value: unknown): T => {
    const { error, value: out } = schema.validate(value, { abortEarly: true, stripUnknown: true, errors: { wrap: { label: false } } })
    if (error !== undefined) {
      const detail = error.details[0]
      const field = formatPath(detail.path)
      throw new RpcError('VALIDATION_ERROR', `${what}: ${field === '' ? '' : field + ': '}${detail.message.replace(/^"?[^" ]*"? /, '')}`, { field })
    }
    return out as T
  }
}

export const validateSnapshot = validator<ConfigSnapshot>(snapshotSchema, 'config snapshot')
export const validateHello = validator<GatewayHello>(helloSchema, 'hello')
export const validateHelloReply = validator<HelloReply>(helloReplySchema, 'hello reply')
const validateReportFields = validator<GatewayReport>(reportSchema, 'report')
const validateAccessLogEntry = validator<AccessLogReport>(accessLogEntrySchema.required(), 'report')

/**
 * A gateway's report. Its access log holds up to 10,000 entries, and joi takes 15-40 µs for each
 * (over 150 ms in one piece on the thread that, in `cloud-connect start`, also carries the
 * gateway's traffic): an entry in the form gateways send is checked and copied here by hand, and
 * any other goes through the entry's joi schema, which accepts, converts or refuses exactly as
 * before (with the same messages, `accessLog[3].method: ...`).
 */
export function validateReport (value: unknown): GatewayReport {
  const report = validateReportFields(value)
  if (report.accessLog !== undefined) report.accessLog = accessLogEntries(report.accessLog)
  return report
}

function accessLogEntries (entries: unknown[]): AccessLogReport[] {
  const out = new Array<AccessLogReport>(entries.length)
  for (let i = 0; i < entries.length; i++) {
    const entry = entries[i]
    out[i] = plainAccessLogEntry(entry) ?? accessLogEntryBySchema(entry, i)
  }
  return out
}

function accessLogEntryBySchema (entry: unknown, index: number): AccessLogReport {
  try {
    return validateAccessLogEntry(entry)
  } catch (err) {
    if (!(err instanceof RpcError)) throw err
    const inner = typeof err.details.field === 'string' ? err.details.field : ''
    const reason = err.message.slice(`report: ${inner === '' ? '' : inner + ': '}`.length)
    const field = `accessLog[${index}]${inner === '' ? '' : `.${inner}`}`
    throw new RpcError('VALIDATION_ERROR', `report: ${field}: ${reason}`, { field })
  }
}

/** The entry copied field by field when every field already has the form joi would return; else undefined. */
function plainAccessLogEntry (entry: unknown): AccessLogReport | undefined {
  if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) return undefined
  const e = entry as Record<string, unknown>
  const { instanceId, at, method, path, status, bytesIn, bytesOut, durationMs, client } = e
  if (typeof instanceId !== 'string' || instanceId.length < 1 || instanceId.length > MAX_ID_LENGTH || !ID_PATTERN.test(instanceId)) return undefined
  if (typeof at !== 'string' || at.length > 64 || !canonicalIsoTime(at)) return undefined
  if (typeof method !== 'string' || method.length < 1 || method.length > 32 || !METHOD_PATTERN.test(method)) return undefined
  if (typeof path !== 'string' || path.length > MAX_ACCESS_LOG_PATH) return undefined
  if (typeof status !== 'number' || !Number.isInteger(status) || status < 0 || status > 999) return undefined
  if (!isCount(bytesIn) || !isCount(bytesOut) || !isCount(durationMs)) return undefined
  if (typeof client !== 'string' || client.length > 64) return undefined
  return { instanceId, at, method, path, status, bytesIn, bytesOut, durationMs, client }
}

function isCount (n: unknown): n is number {
  return typeof n === 'number' && Number.isInteger(n) && n >= 0 && n <= Number.MAX_SAFE_INTEGER
}

const CANONICAL_ISO_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

/** `2026-03-01T10:12:03.412Z` naming a real instant: what joi's isoDate() would return unchanged. */
function canonicalIsoTime (text: string): boolean {
  if (!CANONICAL_ISO_TIME.test(text)) return false
  const ms = Date.parse(text)
  return !Number.isNaN(ms) && new Date(ms).toISOString() === text
}
export const validateReportReply = validator<ReportReply>(reportReplySchema, 'report reply')
export const validateCertificateName = validator<CertificateNameRequest>(certificateNameSchema, 'certificate request')
export const validateCertificatePut = validator<CertificatePutRequest>(certificatePutSchema, 'certificate put')
export const validateCertificateGetReply = validator<CertificateGetReply>(certificateGetReplySchema, 'certificate reply')
export const validateCertificateLock = validator<CertificateLockRequest>(certificateLockSchema, 'certificate lock')
export const validateCertificateLockReply = validator<CertificateLockReply>(certificateLockReplySchema, 'certificate lock reply')
export const validateCertificateUnlock = validator<CertificateUnlockRequest>(certificateUnlockSchema, 'certificate unlock')

/** `peers[3].hostnames[0]` from joi's path. */
export function formatPath (path: Array<string | number>): string {
  let out = ''
  for (const part of path) out += typeof part === 'number' ? `[${part}]` : (out === '' ? part : `.${part}`)
  return out
}
