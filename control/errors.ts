/**
 * Every error response leaves through here. Route code throws `apiError(code, message, details)`
 * (a Boom carrying our code); the onPreResponse extension in `errorsPlugin` turns any Boom, ours,
 * hapi's or an unexpected exception, into `{ error: { code, message, details } }` with the status
 * the spec gives that code. Unexpected exceptions become INTERNAL_ERROR (logged with their stack),
 * except a lost database, which is SERVICE_UNAVAILABLE.
 */
import Boom from '@hapi/boom'
import type { Plugin, Request, ResponseToolkit, Server } from '@hapi/hapi'
import type { ValidationError } from 'joi'
import type { Server as HttpServer } from 'node:http'
import type { Socket } from 'node:net'
import { ERROR_STATUS, type ErrorBody, type ErrorCode, type ValidationDetails } from '../proto/api/errors.ts'

interface ApiErrorData {
  code: ErrorCode
  details: Record<string, unknown>
  headers?: Record<string, string>
}

export type ApiError = Boom.Boom<ApiErrorData>

/** A request error with one of the contract's codes; throw it from handlers and services. */
export function apiError (code: ErrorCode, message: string, details: Record<string, unknown> = {}, headers?: Record<string, string>): ApiError {
  return new Boom.Boom<ApiErrorData>(message, { statusCode: ERROR_STATUS[code], data: { code, details, headers } })
}

export function isApiError (err: unknown): err is ApiError {
  return Boom.isBoom(err) && typeof (err.data as ApiErrorData | null)?.code === 'string'
}

export function errorBody (code: ErrorCode, message: string, details: Record<string, unknown> = {}): ErrorBody {
  return { error: { code, message, details } }
}

/** joi's failure as VALIDATION_ERROR with every offending field listed under `details.fields`. */
export function validationError (err: ValidationError | Error | undefined): ApiError {
  // A Map, not an object: field names come from the client ("constructor", "__proto__").
  const byField = new Map<string, string[]>()
  const items = (err as ValidationError | undefined)?.details ?? []
  for (const item of items) {
    const key = item.path.join('.')
    const list = byField.get(key)
    if (list === undefined) byField.set(key, [item.message])
    else list.push(item.message)
  }
  if (items.length === 0) byField.set('', [err?.message ?? 'invalid request'])
  const fields: ValidationDetails['fields'] = Object.fromEntries(byField)
  return apiError('VALIDATION_ERROR', 'The request data is invalid', { fields })
}

/** SQLSTATE classes and socket errors that mean "the database is not reachable right now". */
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN',
  '57P01', // admin_shutdown (pg_terminate_backend, fast shutdown)
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now (starting up, recovery)
  '53300', // too_many_connections
  '08000', '08001', '08003', '08004', '08006', // connection_exception class
])

const UNAVAILABLE_MESSAGES = [
  'Connection terminated',
  'connection error',
  'is not queryable',
  'Timeout acquiring a connection',
  'the database system is',
  'Client was closed',
]

export function isDatabaseUnavailable (err: unknown): boolean {
  for (let e = err as { code?: unknown, name?: unknown, message?: unknown, cause?: unknown } | undefined, depth = 0; e != null && depth < 4; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string' && UNAVAILABLE_CODES.has(e.code)) return true
    if (e.name === 'KnexTimeoutError') return true
    if (typeof e.message === 'string' && UNAVAILABLE_MESSAGES.some(m => (e!.message as string).includes(m))) return true
  }
  return false
}

/** hapi's own status codes (routing, payload parsing, auth) mapped to our codes. */
function codeForStatus (status: number): ErrorCode {
  switch (status) {
    case 401: return 'UNAUTHORIZED'
    case 403: return 'FORBIDDEN'
    case 404: return 'NOT_FOUND'
    case 405: return 'METHOD_NOT_ALLOWED'
    case 413: return 'PAYLOAD_TOO_LARGE'
    case 415: return 'UNSUPPORTED_MEDIA_TYPE'
    case 422: return 'VALIDATION_ERROR'
    case 429: return 'RATE_LIMITED'
    case 503: return 'SERVICE_UNAVAILABLE'
    default: return status >= 500 ? 'INTERNAL_ERROR' : 'BAD_REQUEST'
  }
}

const GENERIC_MESSAGES: Partial<Record<ErrorCode, string>> = {
  BAD_REQUEST: 'The request could not be understood',
  UNAUTHORIZED: 'Invalid or expired token',
  NOT_FOUND: 'Resource not found',
  METHOD_NOT_ALLOWED: 'This method is not supported on this path',
  PAYLOAD_TOO_LARGE: 'The request body is too large',
  UNSUPPORTED_MEDIA_TYPE: 'Send the request body as application/json',
  INTERNAL_ERROR: 'Internal server error',
  SERVICE_UNAVAILABLE: 'The service is temporarily unavailable, try again shortly',
}

export interface NormalizedError {
  status: number
  body: ErrorBody
  headers: Record<string, string>
  /** true for a bug: log it with its stack. */
  unexpected: boolean
}

/** Turns any Boom (hapi wraps thrown non-Boom errors into one with status 500) into our shape. */
export function normalizeError (err: Boom.Boom): NormalizedError {
  if (isApiError(err)) {
    const { code, details, headers } = err.data!
    return { status: ERROR_STATUS[code], body: errorBody(code, err.message, details), headers: headers ?? {}, unexpected: false }
  }
  const status = err.output.statusCode
  if (status >= 500) {
    if (isDatabaseUnavailable(err)) {
      return { status: 503, body: errorBody('SERVICE_UNAVAILABLE', GENERIC_MESSAGES.SERVICE_UNAVAILABLE!), headers: { 'retry-after': '5' }, unexpected: false }
    }
    if (status === 503) return { status, body: errorBody('SERVICE_UNAVAILABLE', GENERIC_MESSAGES.SERVICE_UNAVAILABLE!), headers: {}, unexpected: false }
    return { status: 500, body: errorBody('INTERNAL_ERROR', GENERIC_MESSAGES.INTERNAL_ERROR!), headers: {}, unexpected: true }
  }
  const code = codeForStatus(status)
  // hapi's own 4xx messages are short and safe ("Invalid request payload JSON format").
  const message = err.output.payload.message || GENERIC_MESSAGES[code] || 'Request failed'
  const headers: Record<string, string> = {}
  const allow = err.output.headers.Allow ?? err.output.headers.allow
  if (typeof allow === 'string') headers.allow = allow
  return { status, body: errorBody(code, message), headers, unexpected: false }
}

/** Methods probed for a 405's Allow header; hapi answers HEAD wherever it has GET. */
const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE', 'OPTIONS'] as const

/** The methods routed at `path` (empty: the path is unknown, or one the router cannot match at all). */
export function allowedMethods (server: Server, path: string): string[] {
  try {
    return METHODS.filter(method => server.match(method, path) !== null)
  } catch {
    // server.match asserts on paths its router refuses (a bad percent-encoding, invalid UTF-8).
    return []
  }
}

/**
 * hapi routes by method and path together, so a known path with an unrouted method lands on its
 * not-found route. RFC 9110 15.5.6: such a request is 405 and MUST carry an Allow header.
 */
function methodNotAllowed (server: Server, request: Request): NormalizedError | undefined {
  if ((request.route.method as string) !== '_special') return undefined // hapi's not-found route
  const allow = allowedMethods(server, request.path)
  if (allow.length === 0) return undefined
  return {
    status: 405,
    body: errorBody('METHOD_NOT_ALLOWED', GENERIC_MESSAGES.METHOD_NOT_ALLOWED!, { allow }),
    headers: { allow: allow.join(', ') },
    unexpected: false,
  }
}

/**
 * Registers the onPreResponse extension (every response, including hapi's 404 for unknown routes
 * and 405 for known paths with an unrouted method) and replaces Node's raw "400 Bad Request" for
 * unparseable HTTP with our shape.
 */
export const errorsPlugin: Plugin<void> = {
  name: 'cc-errors',
  register (server) {
    server.ext('onPreResponse', (request: Request, h: ResponseToolkit) => {
      const response = request.response
      if (!Boom.isBoom(response)) return h.continue
      let normalized = normalizeError(response)
      if (normalized.status === 404) normalized = methodNotAllowed(server, request) ?? normalized
      if (normalized.unexpected) request.log(['error', 'internal'], response)
      else if (normalized.body.error.code === 'SERVICE_UNAVAILABLE') request.log(['warn', 'database'], response.message)
      const reply = h.response(normalized.body).code(normalized.status).type('application/json; charset=utf-8')
      for (const [name, value] of Object.entries(normalized.headers)) reply.header(name, value)
      return reply
    })
    installClientErrorHandler(server.listener)
  },
}

function rawErrorResponse (status: number, reason: string, code: ErrorCode, message: string): string {
  const body = JSON.stringify(errorBody(code, message))
  return `HTTP/1.1 ${status} ${reason}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`
}

/**
 * Node's HTTP parser rejects oversized headers (default limit 16 KiB) and malformed requests before
 * hapi sees them; answer those in the contract's shape too, then close (RFC 6585 5: 431).
 */
function installClientErrorHandler (listener: HttpServer): void {
  listener.removeAllListeners('clientError')
  listener.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
    if (!socket.writable || (socket as Socket & { _httpMessage?: unknown })._httpMessage != null) {
      socket.destroy()
      return
    }
    const raw = err.code === 'HPE_HEADER_OVERFLOW'
      ? rawErrorResponse(431, 'Request Header Fields Too Large', 'REQUEST_HEADER_TOO_LARGE', 'The request headers are too large')
      : rawErrorResponse(400, 'Bad Request', 'BAD_REQUEST', 'Malformed HTTP request')
    socket.end(raw)
  })
}

/** Hapi route-level failAction for joi validation: VALIDATION_ERROR with per-field details. */
export function failValidation (_request: Request, _h: ResponseToolkit, err?: Error): never {
  throw validationError(err)
}
