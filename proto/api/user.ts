/** Request and response bodies of /v1/user (spec: "User Authenticated Endpoints"). */
import type { AccountStatus } from './auth.ts'

export type SubscriptionPlan = 'free' | 'pro' | 'business'
/** `none` for an account that never subscribed (the Free plan). */
export type SubscriptionStatus = 'none' | 'active' | 'trialing' | 'past_due' | 'canceled' | 'incomplete' | 'unpaid'

/** `admin` may read the operator overview (GET /v1/admin/overview); granted with `cloud-connect admin grant EMAIL`. */
export type UserRole = 'user' | 'admin'

export interface UserProfile {
  id: string
  email: string
  name: string
  subscription_status: SubscriptionStatus
  subscription_plan: SubscriptionPlan
  created_at: string
  account_status: AccountStatus
  role: UserRole
}

export interface UpdateUserRequest {
  name?: string
}

export interface UpdateUserResponse {
  id: string
  email: string
  name: string
}
