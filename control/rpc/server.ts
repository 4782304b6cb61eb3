/**
 * The internal RPC listener gateways call (proto/rpc messages.ts), on its own port (CC_RPC_PORT,
 * bound to 127.0.0.1 unless CC_RPC_HOST says otherwise) so it is never exposed with the public API
 * by accident. Plain node:http: the long-poll needs nothing more, and a client that goes away ends
 * its wait at once.
 *
 *   GET  /internal/v1/config?since=N&gateway=ID
 *                                     200 ConfigSnapshot | 204 nothing new within the wait; with
 *                                     gateway=: that gateway's snapshot (service.ts snapshot)
 *   POST /internal/v1/hello           200 HelloReply
 *   POST /internal/v1/reports         200 ReportReply
 *   POST /internal/v1/certificates/{get,put,delete,list,lock,unlock}   the shared certificate store
 *
 * Every request needs `Authorization: Bearer <gateway secret>` (compared in constant time) and is
 * checked before routing, so an unauthenticated caller learns nothing, not even which paths exist.
 * Errors: `{"error":{"code","message","details"}}` with RPC_ERROR_STATUS.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import type { Logger } from 'pino'
import {
  MAX_ID_LENGTH, RPC_PATHS, RpcError,
  type CertificateDeleteReply, type CertificateGetReply, type CertificateListReply, type CertificateLockRequest, type CertificateNameRequest,
  type CertificatePutReply, type CertificatePutRequest, type CertificateUnlockReply, type CertificateUnlockRequest, type GatewayHello, type GatewayReport,
} from '../../proto/rpc/index.ts'
import { bindDualStack } from '../../proto/net/address.ts'
import { bearerSecret, secretMatches } from './secret.ts'
import type { RpcService } from './service.ts'
import { startListening } from '../../proto/net/listen.ts'

export interface RpcServerOptions {
  service: RpcService
  secret: string
  host: string
  port: number
  logger: Logger
  /** Largest request body accepted (default 32 MiB: a report of 100k peers fits). */
  maxBodyBytes?: number
}

export class RpcServer {
  readonly server: http.Server
  readonly #o: RpcServerOptions

  private constructor (options: RpcServerOptions) {
    this.#o = options
    this.server = http.createServer((req, res) => { void this.#handle(req, res) })
    // A long-poll holds the response, not the request: the request timeouts stay at their defaults.
    this.server.keepAliveTimeout = 65_000
  }

  static async start (options: RpcServerOptions): Promise<RpcServer> {
    const rpc = new RpcServer(options)
    await bindDualStack(options.host, async host => { await startListening(rpc.server, options.port, host) }, err => options.logger.warn({ listener: 'rpc', err: err.message }, 'no IPv6 on this host: listening on 0.0.0.0 (IPv4 only)'))
    return rpc
  }

  get address (): AddressInfo {
    return this.server.address() as AddressInfo
  }

  /** Base URL, e.g. http://127.0.0.1:8081 */
  get url (): string {
    const a = this.address
    return `http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`
  }

  /** Stops accepting, answers pending long-polls with 204, and drops connections after `graceMs`. */
  async close (graceMs = 2_000): Promise<void> {
    this.#o.service.close()
    const closed = new Promise<void>(resolve => { this.server.close(() => { resolve() }) })
    this.server.closeIdleConnections()
    const timer = setTimeout(() => { this.server.closeAllConnections() }, graceMs)
    await closed
    clearTimeout(timer)
  }

  async #handle (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    try {
      const presented = bearerSecret(req.headers.authorization)
      if (presented === null || !secretMatches(presented, this.#o.secret)) {
        req.resume()
        send(res, 401, errorBody(new RpcError('UNAUTHORIZED', 'a valid gateway secret is required')), { 'www-authenticate': 'Bearer realm="cloud-connect-rpc"' })
        return
      }
      const url = new URL(req.url ?? '/', 'http://rpc.invalid')
      const route = ROUTES[url.pathname]
      if (route === undefined) throw new RpcError('NOT_FOUND', `no such endpoint: ${url.pathname}`)
      if (req.method !== route.method) {
        res.setHeader('allow', route.method)
        throw new RpcError('METHOD_NOT_ALLOWED', `${url.pathname} takes ${route.method}`)
      }
      await route.handle(this, req, res, url)
    } catch (err) {
      req.resume()
      if (res.headersSent || res.destroyed) return
      if (err instanceof RpcError) {
        send(res, err.status, errorBody(err))
        return
      }
      this.#o.logger.error({ err, url: req.url }, 'RPC request failed')
      send(res, 500, errorBody(new RpcError('INTERNAL_ERROR', 'internal error')))
    }
  }

  async config (req: http.IncomingMessage, res: http.ServerResponse, url: URL): Promise<void> {
    req.resume()
    const since = parseSince(url.searchParams.get('since'))
    const gatewayId = parseGatewayId(url.searchParams.get('gateway'))
    // The wait ends early when the gateway hangs up.
    const abort = new AbortController()
    const onClose = (): void => { if (!res.writableFinished) abort.abort() }
    res.once('close', onClose)
    try {
      const snapshot = await this.#o.service.watch(since, abort.signal, gatewayId)
      if (res.destroyed) return
      if (snapshot === null) {
        res.writeHead(204, { 'cache-control': 'no-store' }).end()
        return
      }
      send(res, 200, snapshot, { etag: `"${snapshot.version}"` })
    } finally {
      res.off('close', onClose)
    }
  }

  async hello (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = await readJson(req, this.#o.maxBodyBytes ?? 64 * 1024) as GatewayHello
    send(res, 200, await this.#o.service.hello(body))
  }

  async reports (req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = await readJson(req, this.#o.maxBodyBytes ?? 32 * 1024 * 1024) as GatewayReport
    send(res, 200, await this.#o.service.report(body))
  }

  /** The certificate store endpoints: small JSON bodies (a certificate chain and key fit in 256 KiB). */
  async certificates (path: string, req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = await readJson(req, 256 * 1024)
    const service = this.#o.service
    const field = <T>(name: string): T => (typeof body === 'object' && body !== null ? (body as Record<string, unknown>)[name] : undefined) as T
    switch (path) {
      case RPC_PATHS.certificateGet: {
        const reply: CertificateGetReply = { certificate: await service.getCertificate(field<CertificateNameRequest['name']>('name')) }
        send(res, 200, reply)
        return
      }
      case RPC_PATHS.certificatePut: {
        await service.putCertificate(field<CertificatePutRequest['certificate']>('certificate'))
        const reply: CertificatePutReply = { stored: true }
        send(res, 200, reply)
        return
      }
      case RPC_PATHS.certificateDelete: {
        const reply: CertificateDeleteReply = { deleted: await service.deleteCertificate(field<string>('name')) }
        send(res, 200, reply)
        return
      }
      case RPC_PATHS.certificateList: {
        const reply: CertificateListReply = { names: await service.listCertificates() }
        send(res, 200, reply)
        return
      }
      case RPC_PATHS.certificateLock:
        send(res, 200, await service.lockCertificate(body as CertificateLockRequest))
        return
      case RPC_PATHS.certificateUnlock: {
        const reply: CertificateUnlockReply = { released: await service.unlockCertificate(body as CertificateUnlockRequest) }
        send(res, 200, reply)
        return
      }
      default:
        throw new RpcError('NOT_FOUND', `no such endpoint: ${path}`)
    }
  }
}

type Handler = (rpc: RpcServer, req: http.IncomingMessage, res: http.ServerResponse, url: URL) => Promise<void>

const ROUTES: Record<string, { method: string, handle: Handler }> = {
  [RPC_PATHS.config]: { method: 'GET', handle: async (rpc, req, res, url) => { await rpc.config(req, res, url) } },
  [RPC_PATHS.hello]: { method: 'POST', handle: async (rpc, req, res) => { await rpc.hello(req, res) } },
  [RPC_PATHS.reports]: { method: 'POST', handle: async (rpc, req, res) => { await rpc.reports(req, res) } },
  ...Object.fromEntries([
    RPC_PATHS.certificateGet, RPC_PATHS.certificatePut, RPC_PATHS.certificateDelete,
    RPC_PATHS.certificateList, RPC_PATHS.certificateLock, RPC_PATHS.certificateUnlock,
  ].map(path => [path, { method: 'POST', handle: (async (rpc, req, res) => { await rpc.certificates(path, req, res) }) satisfies Handler }])),
}

function parseSince (value: string | null): number | null {
  if (value === null || value === '') return null
  if (!/^\d{1,15}$/.test(value)) throw new RpcError('VALIDATION_ERROR', 'since must be a configuration version (a non-negative integer)', { field: 'since' })
  return Number(value)
}

/** A CC_GATEWAY_ID as hello accepts it (proto/rpc/schemas.ts); absent or empty: none. */
function parseGatewayId (value: string | null): string | undefined {
  if (value === null || value === '') return undefined
  if (value.length > MAX_ID_LENGTH || !/^[A-Za-z0-9._:-]+$/.test(value)) throw new RpcError('VALIDATION_ERROR', 'gateway must be a gateway id (A-Z a-z 0-9 . _ : -)', { field: 'gateway' })
  return value
}

async function readJson (req: http.IncomingMessage, maxBytes: number): Promise<unknown> {
  const type = req.headers['content-type'] ?? ''
  if (!/^application\/json\s*(;|$)/i.test(type)) throw new RpcError('UNSUPPORTED_MEDIA_TYPE', 'the body must be application/json')
  const declared = Number(req.headers['content-length'] ?? NaN)
  if (declared > maxBytes) throw new RpcError('PAYLOAD_TOO_LARGE', `the body may not exceed ${maxBytes} bytes`)
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > maxBytes) throw new RpcError('PAYLOAD_TOO_LARGE', `the body may not exceed ${maxBytes} bytes`)
    chunks.push(chunk as Buffer)
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    throw new RpcError('VALIDATION_ERROR', 'the body is not valid JSON', { field: '' })
  }
}

function errorBody (err: RpcError): { error: { code: string, message: string, details: Record<string, unknown> } } {
  return { error: { code: err.code, message: err.message, details: err.details } }
}

function send (res: http.ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
    ...headers,
  }).end(text)
}
