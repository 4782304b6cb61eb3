/**
 * RPC failures with a stable code. Over HTTP each code has one status and the body is
 * `{"error":{"code","message","details"}}`, as on the public API.
 */
export const RPC_ERROR_STATUS = {
  UNAUTHORIZED: 401,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  /** The peer speaks another RPC_PROTOCOL_VERSION. */
  PROTOCOL_MISMATCH: 409,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  VALIDATION_ERROR: 422,
  INTERNAL_ERROR: 500,
  SERVICE_UNAVAILABLE: 503,
} as const

export type RpcErrorCode = keyof typeof RPC_ERROR_STATUS

export class RpcError extends Error {
  readonly code: RpcErrorCode
  readonly details: Record<string, unknown>
  constructor (code: RpcErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message)
    this.name = 'RpcError'
    this.code = code
    this.details = details
  }

  get status (): number { return RPC_ERROR_STATUS[this.code] }

  /** Whether trying again later may succeed (network trouble, control busy or restarting). */
  get retryable (): boolean {
    return this.code === 'SERVICE_UNAVAILABLE' || this.code === 'INTERNAL_ERROR'
  }
}

export function isRpcErrorCode (value: unknown): value is RpcErrorCode {
  return typeof value === 'string' && Object.hasOwn(RPC_ERROR_STATUS, value)
}
