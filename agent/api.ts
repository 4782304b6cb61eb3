/**
 * The agent's client for the spec's "Instance Authenticated Endpoints" (/tunnel/register,
 * /tunnel/heartbeat, /tunnel/disconnect, /tunnel/status). Every failure is an ApiError that says
 * whether retrying can help: a network error, a timeout, 429 or 5xx can; a rejected token cannot.
 */
import type {
  DisconnectResponse, HeartbeatResponse, RegisterTunnelRequest, RegisterTunnelResponse, TunnelStatusResponse,
} from '../proto/api/tunnel.ts'

export type ApiFailure =
  /** No HTTP answer at all: DNS, refused connection, reset, TLS, timeout. */
  | 'unreachable'
  /** 401: the instance token is invalid, was regenerated, or its instance was deleted. */
  | 'token_rejected'
  /** 402: the instance is suspended (over the plan's limit) or needs a subscription. */
  | 'subscription_required'
  /** 409 KEY_IN_USE: another instance holds our public key. */
  | 'key_in_use'
  /** 429 or 5xx: the API is there but cannot answer now. */
  | 'unavailable'
  /** Any other answer: the URL is not a Cloud Connect API, or it refused the request. */
  | 'refused'

export class ApiError extends Error {
  readonly failure: ApiFailure
  /** HTTP status, or null when no answer came. */
  readonly status: number | null
  /** The spec's error code from the body (`UNAUTHORIZED`, ...), when there was one. */
  readonly code: string | null
  /** From Retry-After, ms. */
  readonly retryAfterMs: number | null

  constructor (failure: ApiFailure, message: string, status: number | null = null, code: string | null = null, retryAfterMs: number | null = null) {
    super(message)
    this.name = 'ApiError'
    this.failure = failure
    this.status = status
    this.code = code
    this.retryAfterMs = retryAfterMs
  }

  /** Whether the same request can succeed later without anyone changing anything. */
  get transient (): boolean {
    return this.failure === 'unreachable' || this.failure === 'unavailable'
  }
}

export interface ApiClientOptions {
  /** The API base, e.g. `https://api.erugo.cloud/v1` (paths are appended to it). */
  baseUrl: string
  token: string
  /** Per-request limit, ms. */
  timeoutMs?: number
  userAgent?: string
  /** Default MAX_ANSWER_BYTES. */
  maxAnswerBytes?: number
  /** Sent with every registration (CC_AGENT_REGION); null or absent: none. */
  region?: string | null
}

const DEFAULT_TIMEOUT_MS = 15_000
/**
 * Implementation limit: the largest answer read, bytes (the largest real one, GET /tunnel/status
 * with many custom domains, is a few KiB). Reading stops at the limit; a larger 2xx answer is
 * refused, a larger error answer is classified by its status alone.
 */
export const MAX_ANSWER_BYTES = 64 * 1024

export class ApiClient {
  readonly baseUrl: string
  private readonly token: string
  private readonly timeoutMs: number
  private readonly userAgent: string
  private readonly maxAnswerBytes: number
  private readonly region: string | null

  constructor (options: ApiClientOptions) {
    this.baseUrl = options.baseUrl.replace(/\/+$/, '')
    this.token = options.token
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
    this.userAgent = options.userAgent ?? 'erugo-cloud-connect-agent'
    this.maxAnswerBytes = options.maxAnswerBytes ?? MAX_ANSWER_BYTES
    this.region = options.region ?? null
  }

  /** `signal` (optional on every call) abandons the request, e.g. when the agent stops. */
  async register (publicKey: string, signal?: AbortSignal): Promise<RegisterTunnelResponse> {
    const body: RegisterTunnelRequest = this.region === null ? { public_key: publicKey } : { public_key: publicKey, region: this.region }
    return await this.call<RegisterTunnelResponse>('POST', '/tunnel/register', body, signal)
  }

  async heartbeat (now = new Date(), signal?: AbortSignal): Promise<HeartbeatResponse> {
    return await this.call<HeartbeatResponse>('POST', '/tunnel/heartbeat', { timestamp: now.toISOString() }, signal)
  }

  async disconnect (signal?: AbortSignal): Promise<DisconnectResponse> {
    return await this.call<DisconnectResponse>('POST', '/tunnel/disconnect', {}, signal)
  }

  async status (signal?: AbortSignal): Promise<TunnelStatusResponse> {
    return await this.call<TunnelStatusResponse>('GET', '/tunnel/status', undefined, signal)
  }

  private async call<T> (method: string, path: string, body?: unknown, stop?: AbortSignal): Promise<T> {
    const url = this.baseUrl + path
    const headers: Record<string, string> = { authorization: `Bearer ${this.token}`, accept: 'application/json', 'user-agent': this.userAgent }
    if (body !== undefined) headers['content-type'] = 'application/json'
    let res: Response
    let answer: { bytes: Buffer, tooLarge: boolean }
    try {
      res = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), signal: stop === undefined ? AbortSignal.timeout(this.timeoutMs) : AbortSignal.any([stop, AbortSignal.timeout(this.timeoutMs)]), redirect: 'error' })
      answer = await readLimited(res, this.maxAnswerBytes)
    } catch (err) {
      throw new ApiError('unreachable', `cannot reach the API at ${this.baseUrl}: ${describeFetchError(err)}`)
    }
    let parsed: unknown
    try {
      parsed = answer.bytes.length === 0 ? undefined : JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(answer.bytes))
    } catch {
      parsed = undefined
    }
    if (res.ok) {
      if (answer.tooLarge) {
        throw new ApiError('refused', `${method} ${path}: the answer is larger than ${this.maxAnswerBytes} bytes: is ${this.baseUrl} a Cloud Connect API?`, res.status)
      }
      if (parsed === undefined || typeof parsed !== 'object' || parsed === null) {
        throw new ApiError('refused', `${method} ${path}: the answer is not JSON: is ${this.baseUrl} a Cloud Connect API?`, res.status)
      }
      return parsed as T
    }
    const error = (parsed as { error?: { code?: unknown, message?: unknown } } | undefined)?.error
    const code = typeof error?.code === 'string' ? error.code : null
    const message = typeof error?.message === 'string' ? error.message : `HTTP ${res.status}`
    const retryAfterMs = parseRetryAfter(res.headers.get('retry-after'))
    if (res.status === 401) throw new ApiError('token_rejected', `the API rejected the instance token (${message}): it was regenerated, its instance was deleted, or it was mistyped; enter the current token`, 401, code)
    if (res.status === 402) throw new ApiError('subscription_required', `the API refused the tunnel: ${message}`, 402, code)
    if (res.status === 409 && code === 'KEY_IN_USE') throw new ApiError('key_in_use', message, 409, code)
    if (res.status === 429 || res.status >= 500) throw new ApiError('unavailable', `the API cannot answer now (${message})`, res.status, code, retryAfterMs)
    throw new ApiError('refused', `${method} ${url} answered ${res.status}${code === null ? '' : ` ${code}`}: ${message}`, res.status, code)
  }
}

/**
 * The body, up to `limit` bytes: a declared Content-Length over it is not read at all, a stream
 * that passes it is cancelled there. Never buffers more than `limit` plus one chunk.
 */
async function readLimited (res: Response, limit: number): Promise<{ bytes: Buffer, tooLarge: boolean }> {
  if (res.body === null) return { bytes: Buffer.alloc(0), tooLarge: false }
  const declared = Number(res.headers.get('content-length') ?? 0)
  if (declared > limit) {
    res.body.cancel().catch(() => {})
    return { bytes: Buffer.alloc(0), tooLarge: true }
  }
  const reader = res.body.getReader()
  const chunks: Uint8Array[] = []
  let received = 0
  // Ends at the stream's end, at the limit, or when the request's timeout aborts the read.
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    received += value.byteLength
    if (received > limit) {
      reader.cancel().catch(() => {})
      return { bytes: Buffer.concat(chunks), tooLarge: true }
    }
    chunks.push(value)
  }
  return { bytes: Buffer.concat(chunks), tooLarge: false }
}

function parseRetryAfter (header: string | null): number | null {
  if (header === null) return null
  const seconds = Number(header)
  if (Number.isFinite(seconds) && seconds >= 0) return Math.min(seconds, 3600) * 1000
  const at = Date.parse(header)
  return Number.isNaN(at) ? null : Math.max(0, Math.min(at - Date.now(), 3_600_000))
}

function describeFetchError (err: unknown): string {
  const e = err as { name?: string, message?: string, cause?: { code?: string, message?: string } }
  if (e.name === 'TimeoutError') return 'no answer in time'
  const cause = e.cause
  if (cause?.code !== undefined) return cause.code
  return cause?.message ?? e.message ?? String(err)
}
