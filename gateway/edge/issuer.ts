/**
 * Who signs certificates (modelled on certmagic's Issuer). The embedded default is the local CA;
 * the ACME issuer implements the same interface.
 */
export interface IssuedCertificate {
  /** PEM chain, leaf first. */
  certificatePem: string
  /** PEM PKCS#8 private key of the leaf. */
  privateKeyPem: string
}

export interface Issuer {
  /** Stable name recorded with stored certificates ('local-ca', 'acme:<directory URL>'). */
  readonly id: string
  /**
   * Obtain a certificate whose SAN is exactly `name` (a hostname or one-label wildcard). The caller
   * has already decided the name may be issued (it is in the route table) and holds its lock.
   * Throw on failure; a thrown IssuerError with `retry: false` stops retries until the name changes.
   */
  issue (name: string): Promise<IssuedCertificate>
}

export class IssuerError extends Error {
  readonly code: string
  readonly retry: boolean
  /** The CA's Retry-After (RFC 8555 6.6), or when an orders budget frees: wait at least this long. */
  readonly retryAfterMs: number | undefined
  constructor (code: string, message: string, retry = true, retryAfterMs?: number) {
    super(message)
    this.name = 'IssuerError'
    this.code = code
    this.retry = retry
    this.retryAfterMs = retryAfterMs
  }
}
