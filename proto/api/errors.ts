/**
 * Error codes of the public REST API and the HTTP status each one is sent with. Every error
 * response body is `{ "error": { "code", "message", "details" } }` (spec: "API Error Response Format").
 * The first block is the spec's table verbatim; the second block is ours, for failures the spec
 * does not name.
 */
export const ERROR_STATUS = {
  // Spec: "Error Codes".
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  SUBDOMAIN_TAKEN: 409,
  DOMAIN_ALREADY_EXISTS: 409,
  SUBSCRIPTION_REQUIRED: 402,
  LIMIT_EXCEEDED: 403,
  VALIDATION_ERROR: 422,
  DNS_VERIFICATION_FAILED: 400,
  // Ours.
  /** POST /tunnel/register: this WireGuard public key is registered to another instance. */
  KEY_IN_USE: 409,
  BAD_REQUEST: 400,
  METHOD_NOT_ALLOWED: 405,
  PAYLOAD_TOO_LARGE: 413,
  UNSUPPORTED_MEDIA_TYPE: 415,
  REQUEST_HEADER_TOO_LARGE: 431,
  RATE_LIMITED: 429,
  /** Billing endpoints on a server without Stripe configured (everyone is on Free there). */
  BILLING_NOT_CONFIGURED: 404,
  /** POST /billing/checkout for a plan the account already has, or while another paid plan runs. */
  ALREADY_SUBSCRIBED: 409,
  /** POST /billing/webhook: missing, malformed, stale, future-dated or wrong Stripe signature. */
  WEBHOOK_SIGNATURE_INVALID: 400,
  /** Stripe refused or could not be reached. */
  BILLING_PROVIDER_ERROR: 502,
  /** POST|GET /auth/verify-email: the link's token is past its lifetime (a new one can be requested). */
  LINK_EXPIRED: 410,
  /** POST|GET /auth/verify-email: the link's token was already spent. */
  LINK_ALREADY_USED: 410,
  /** POST|GET /auth/verify-email: no such token (mistyped, truncated or made up). */
  LINK_INVALID: 400,
  INTERNAL_ERROR: 500,
  SERVICE_UNAVAILABLE: 503,
} as const

export type ErrorCode = keyof typeof ERROR_STATUS

export const ERROR_CODES = Object.keys(ERROR_STATUS) as ErrorCode[]

export interface ErrorBody {
  error: {
    code: ErrorCode
    message: string
    details: Record<string, unknown>
  }
}

/**
 * `details` of a VALIDATION_ERROR: each offending field (dotted path, `""` for the body itself)
 * with its messages. An unknown field appears under its own name ("is not allowed").
 */
export interface ValidationDetails {
  fields: Record<string, string[]>
}

/** `details` of a RATE_LIMITED error; the same number is sent in the Retry-After header. */
export interface RateLimitDetails {
  retry_after: number
}
