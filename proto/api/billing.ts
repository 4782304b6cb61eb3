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

/** What a plan allows (spec "Subscription Plans"). */
export interface PlanLimitsBody {
  instances: number
  /** 0: the plan has no custom domains. */
  custom_domains_per_instance: number
}

/** What the account holds now, counted as the limits count it (suspended ones included). */
export interface PlanUsage {
  instances: number
  /** Across all of the account's instances, pending verification included. */
  custom_domains: number
  /** The most any one instance has (the per-instance limit applies to this). */
  custom_domains_max_per_instance: number
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
  /** Additions to the spec's body: the limits of `plan` and what the account uses of them. */
  limits: PlanLimitsBody
  usage: PlanUsage
}

/** GET /billing/plans: every plan and its limits, cheapest first. */
export interface PlansResponse {
  plans: Array<{ plan: SubscriptionPlan } & PlanLimitsBody>
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
