/**
 * The ControlPlane (and CertificateStorePlane) over HTTP: a gateway talking to a remote
 * `cloud-connect control` on its internal RPC listener (`--control URL --secret ...`). Every failure is an RpcError: network trouble and
 * timeouts are SERVICE_UNAVAILABLE (retryable); HTTP errors carry control's code. Retrying and
 * backoff are the ControlClient's business, not this class's.
 *
 * Control replicas: `url` may be a comma-separated list. Each request goes to the replica that
 * answered last; when it cannot be reached (network error, timeout, 502/503/504) the others are
 * tried in turn within the same call, and the first that answers becomes the current one.
 */
import {
  RPC_PATHS, RpcError, isRpcErrorCode, validateCertificateGetReply, validateCertificateLockReply, validateHelloReply, validateReportReply,
  validateSnapshot,
  type CertificateLockReply, type CertificateLockRequest, type CertificateStorePlane, type CertificateUnlockRequest, type ConfigSnapshot,
  type ControlPlane, type GatewayHello, type GatewayReport, type HelloReply, type ReportReply, type StoredCertificate,
} from '../../proto/rpc/index.ts'

export interface HttpControlPlaneOptions {
  /** Base URL of control's RPC listener, e.g. http://10.0.0.5:8081, or a comma-separated list of replicas. */
  url: string
  /** Sent as `gateway=ID` on the config long-poll: control answers with this gateway's snapshot. */
  gatewayId?: string
  secret: string
  /** Limit for hello and report requests (default 15 s). */
  requestTimeoutMs?: number
  /** Limit for one long-poll (default 90 s: well past control's wait of ~30 s). */
  watchTimeoutMs?: number
}

export class HttpControlPlane implements ControlPlane, CertificateStorePlane {
  readonly #bases: string[]
  /** Index of the replica that answered last. */
  #current = 0
  /** This gateway's id for the config long-poll (settable: the gateway's settings name it). */
  gatewayId: string | undefined
  readonly #secret: string
  readonly #requestTimeoutMs: number
  readonly #watchTimeoutMs: number

  constructor (options: HttpControlPlaneOptions) {
    this.#bases = options.url.split(',').map(text => {
      const url = new URL(text.trim())
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new TypeError(`control URL must be http(s): ${text}`)
      return url.href.replace(/\/+$/, '')
    })
    this.gatewayId = options.gatewayId
    this.#secret = options.secret
    this.#requestTimeoutMs = options.requestTimeoutMs ?? 15_000
    this.#watchTimeoutMs = options.watchTimeoutMs ?? 90_000
  }

  async watch (since: number | null, signal?: AbortSignal): Promise<ConfigSnapshot | null> {
    const params = new URLSearchParams()
    if (since !== null) params.set('since', String(since))
    if (this.gatewayId !== undefined) params.set('gateway', this.gatewayId)
    const query = params.size === 0 ? '' : `?${params.toString()}`
    const res = await this.#request('GET', RPC_PATHS.config + query, undefined, this.#watchTimeoutMs, signal)
    if (res === null || res.status === 204 || res.status === 304) return null
    return validateSnapshot(await readJson(res))
  }

  async hello (hello: GatewayHello): Promise<HelloReply> {
    const res = await this.#request('POST', RPC_PATHS.hello, hello, this.#requestTimeoutMs)
    if (res === null) throw new RpcError('SERVICE_UNAVAILABLE', 'hello aborted')
    return validateHelloReply(await readJson(res))
  }

  async report (report: GatewayReport): Promise<ReportReply> {
    const res = await this.#request('POST', RPC_PATHS.reports, report, this.#requestTimeoutMs)
    if (res === null) throw new RpcError('SERVICE_UNAVAILABLE', 'report aborted')
    return validateReportReply(await readJson(res))
  }

  async getCertificate (name: string): Promise<StoredCertificate | null> {
    return validateCertificateGetReply(await this.#post(RPC_PATHS.certificateGet, { name })).certificate
  }

  async putCertificate (certificate: StoredCertificate): Promise<void> {
    await this.#post(RPC_PATHS.certificatePut, { certificate })
  }

  async deleteCertificate (name: string): Promise<boolean> {
    return (await this.#post(RPC_PATHS.certificateDelete, { name }) as { deleted?: unknown }).deleted === true
  }

  async listCertificates (): Promise<string[]> {
    const names = (await this.#post(RPC_PATHS.certificateList, {}) as { names?: unknown }).names
    if (!Array.isArray(names) || !names.every(n => typeof n === 'string')) throw new RpcError('SERVICE_UNAVAILABLE', 'control sent an unreadable certificate list')
    return names as string[]
  }

  async lockCertificate (request: CertificateLockRequest): Promise<CertificateLockReply> {
    return validateCertificateLockReply(await this.#post(RPC_PATHS.certificateLock, request))
  }

  async unlockCertificate (request: CertificateUnlockRequest): Promise<boolean> {
    return (await this.#post(RPC_PATHS.certificateUnlock, request) as { released?: unknown }).released === true
  }

  async #post (path: string, body: unknown): Promise<unknown> {
    const res = await this.#request('POST', path, body, this.#requestTimeoutMs)
    if (res === null) throw new RpcError('SERVICE_UNAVAILABLE', `${path} aborted`)
    return await readJson(res)
  }

  /** The replica control URLs, current one first (for logs). */
  get urls (): string[] {
    return [...this.#bases.slice(this.#current), ...this.#bases.slice(0, this.#current)]
  }

  /** #requestTo each replica in turn from the current one, until one answers. */
  async #request (method: string, path: string, body: unknown, timeoutMs: number, signal?: AbortSignal): Promise<Response | null> {
    let lastError: unknown
    for (let i = 0; i < this.#bases.length; i++) {
      const index = (this.#current + i) % this.#bases.length
      try {
        const res = await this.#requestTo(this.#bases[index], method, path, body, timeoutMs, signal)
        this.#current = index
        return res
      } catch (err) {
        if (!(err instanceof RpcError) || !unreachable(err)) { this.#current = index; throw err }
        lastError = err
      }
    }
    throw lastError
  }

  /** The response when 2xx; null when `signal` (the caller's) aborted; RpcError otherwise. */
  async #requestTo (base: string, method: string, path: string, body: unknown, timeoutMs: number, signal?: AbortSignal): Promise<Response | null> {
    const timeout = AbortSignal.timeout(timeoutMs)
    const combined = signal === undefined ? timeout : AbortSignal.any([signal, timeout])
    let res: Response
    try {
      res = await fetch(base + path, {
        method,
        headers: {
          authorization: `Bearer ${this.#secret}`,
          ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        },
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: combined,
      })
    } catch (err) {
      if (signal?.aborted === true) return null
      if (timeout.aborted) throw new RpcError('SERVICE_UNAVAILABLE', `control did not answer ${method} ${path} within ${timeoutMs} ms`)
      const cause = (err as { cause?: { code?: string, message?: string } }).cause
      throw new RpcError('SERVICE_UNAVAILABLE', `control unreachable: ${cause?.code ?? cause?.message ?? (err as Error).message}`)
    }
    if (res.ok) return res
    let code: unknown
    let message = `control answered ${res.status}`
    try {
      const parsed = await res.json() as { error?: { code?: unknown, message?: unknown } }
      code = parsed.error?.code
      if (typeof parsed.error?.message === 'string') message = `${message}: ${parsed.error.message}`
    } catch {
      // not our error shape (a proxy in between): the status decides
    }
    throw new RpcError(isRpcErrorCode(code) ? code : codeForStatus(res.status), message, { status: res.status })
  }
}

/** The replica could not be reached or is down: another may answer. */
function unreachable (err: RpcError): boolean {
  const status = (err.details as { status?: number } | undefined)?.status
  return err.code === 'SERVICE_UNAVAILABLE' && (status === undefined || status === 502 || status === 503 || status === 504)
}

async function readJson (res: Response): Promise<unknown> {
  try {
    return await res.json()
  } catch (err) {
    throw new RpcError('SERVICE_UNAVAILABLE', `control sent an unreadable body: ${(err as Error).message}`)
  }
}

function codeForStatus (status: number): RpcError['code'] {
  if (status === 401 || status === 403) return 'UNAUTHORIZED'
  if (status === 404) return 'NOT_FOUND'
  if (status === 409) return 'PROTOCOL_MISMATCH'
  if (status === 422 || status === 400) return 'VALIDATION_ERROR'
  if (status === 413) return 'PAYLOAD_TOO_LARGE'
  if (status >= 500 && status !== 501) return 'SERVICE_UNAVAILABLE'
  return 'INTERNAL_ERROR'
}
