/** Request and response bodies of the spec's "Billing Endpoints": /v1/billing/*. */
import type { SubscriptionPlan, SubscriptionStatus } from './user.ts'

/** Plans sold through Checkout (Free needs none). */
export type PaidPlan = Exclude<SubscriptionPlan, 'free'>

/** How often (ms) the container should poll GET /billing/subscription after opening Checkout. */
export const CHECKOUT_POLL_INTERVAL_MS = 3000

export interface CheckoutRequest {
  plan: PaidPlan
}

export interface CheckoutResponse {
  checkout_url: string
  session_id: string
  poll_interval: number
}

export interface PaymentMethodSummary {
  brand: string
  last4: string
}

export interface SubscriptionResponse {
  /** `none` on the Free plan (never subscribed). */
  status: SubscriptionStatus
  /** The plan whose limits apply now. */
  plan: SubscriptionPlan
  current_period_start: string | null
  current_period_end: string | null
  cancel_at_period_end: boolean
  payment_method: PaymentMethodSummary | null
}

export interface PortalRequest {
  /** Must start with one of the server's allowed return URLs; default: the first of them. */
  return_url?: string
}

export interface PortalResponse {
  portal_url: string
}

export interface WebhookResponse {
  received: true
  /** true when this event id was processed before (nothing done again). */
  duplicate: boolean
}
