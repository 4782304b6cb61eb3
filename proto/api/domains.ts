/** Request and response bodies of the spec's "Custom Domain Endpoints": /v1/instances/{id}/domains. */

/** `suspended`: verified but over the owner's plan limit, kept and not served. */
export type CustomDomainStatus = 'pending_verification' | 'verified' | 'suspended'

/**
 * `none`: not served (not verified or suspended); `provisioning`: served, no certificate reported
 * yet; `active`: a gateway reported a valid certificate; `failed`: issuance keeps failing.
 */
export type SslStatus = 'none' | 'provisioning' | 'active' | 'failed'

export interface DnsRecordInstruction {
  type: 'CNAME' | 'TXT' | 'A' | 'AAAA'
  /** Relative to the user's DNS zone (`@` for the zone itself). */
  name: string
  value: string
}

/** The spec's `verification` object; `records` lists every record to create (apex: TXT and A/AAAA). */
export interface DomainVerification extends DnsRecordInstruction {
  instructions: string
  records: DnsRecordInstruction[]
}

export interface AddDomainRequest {
  domain: string
}

export interface AddDomainResponse {
  domain: string
  status: 'pending_verification'
  verification: DomainVerification
}

export interface DomainSummary {
  domain: string
  status: CustomDomainStatus
  ssl_status: SslStatus
  verified_at: string | null
  /** Why the last DNS check failed (null when it passed or never ran). */
  error: string | null
  verification: DomainVerification
}

export interface ListDomainsResponse {
  domains: DomainSummary[]
}

export type VerifyDomainResponse =
  | { domain: string, status: 'verified' | 'suspended', ssl_status: SslStatus }
  | { domain: string, status: 'pending_verification', error: string }
