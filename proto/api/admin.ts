/**
 * GET /v1/admin/overview (administrators only): the operator's view of the whole service. Every
 * list is bounded (ADMIN_LIMITS) and ordered newest or most urgent first; times are ISO 8601 UTC.
 */
import type { InstanceStatus } from './instances.ts'

export const ADMIN_LIMITS = {
  gateways: 50,
  instances: 200,
  recentSignups: 20,
  payingAccounts: 200,
  cancellations: 100,
  webhookFailures: 50,
  expiringCertificates: 100,
} as const

/** Cancellations within this many days are listed. */
export const CANCELLATION_WINDOW_DAYS = 30
/** Certificates whose not-after falls within this many days are listed. */
export const CERTIFICATE_EXPIRY_WINDOW_DAYS = 14

export interface AdminGateway {
  id: string
  endpoint: string | null
  software: string | null
  hello_at: string
  /** Time of the latest report (null: none yet since its hello). */
  last_report_at: string | null
  /** Peers in the latest report (null: none yet). */
  peer_count: number | null
  /** CC_GATEWAY_REGION (null: none). */
  region: string | null
  /** Alive as control last published it (a hello or report within the alive window). */
  alive: boolean
  /** `cloud-connect gateway drain`: no new placements; its instances move to other gateways. */
  draining: boolean
  /** Instances placed on it, as primary or backup. */
  placed_instances: number
}

export interface AdminInstance {
  id: string
  name: string
  subdomain: string
  owner_email: string
  status: InstanceStatus
  last_seen: string | null
  created_at: string
}

export interface AdminSignup {
  email: string
  created_at: string
  verified: boolean
}

export interface AdminPayingAccount {
  email: string
  plan: string | null
  status: string
  current_period_end: string | null
  cancel_at_period_end: boolean
}

export interface AdminCancellation {
  email: string
  plan: string | null
  status: string
  canceled_at: string
  ended_at: string | null
}

export interface AdminWebhookFailure {
  event_id: string
  event_type: string
  attempts: number
  last_error: string
  first_failed_at: string
  last_failed_at: string
  /** When a later delivery of the event succeeded (null: still failing). */
  resolved_at: string | null
}

export interface AdminExpiringCertificate {
  hostname: string
  state: 'pending' | 'active' | 'failing'
  not_after: string
  last_error: string | null
  gateway_id: string
  reported_at: string
}

export interface AdminOverview {
  gateways: AdminGateway[]
  instances: AdminInstance[]
  recent_signups: AdminSignup[]
  paying_accounts: AdminPayingAccount[]
  cancellations: AdminCancellation[]
  webhook_failures: AdminWebhookFailure[]
  expiring_certificates: AdminExpiringCertificate[]
}
