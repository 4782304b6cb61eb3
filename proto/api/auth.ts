/** Request and response bodies of the spec's "Public Endpoints (No Auth)": /v1/auth/*. */
import type { SubscriptionPlan, SubscriptionStatus } from './user.ts'

export type AccountStatus = 'pending_email_verification' | 'active'

export interface RegisterRequest {
  name: string
  email: string
  password: string
  password_confirmation: string
  accept_terms: true
  accept_privacy: true
  accept_marketing?: boolean
  erugo_version?: string | null
}

export interface RegisterResponse {
  user: {
    id: string
    name: string
    email: string
    created_at: string
    account_status: AccountStatus
  }
  message: string
}

export interface LoginRequest {
  email: string
  password: string
}

/** The user block of a login response; `account_status` is ours, beyond the spec. */
export interface LoginUser {
  id: string
  email: string
  name: string
  subscription_status: SubscriptionStatus
  subscription_plan: SubscriptionPlan
  account_status: AccountStatus
}

export interface LoginResponse {
  access_token: string
  /** Absent when the request asked for cookie mode (`X-CC-Session: cookie`): then in the cc_refresh cookie. */
  refresh_token?: string
  token_type: 'Bearer'
  expires_in: number
  user: LoginUser
}

/** Browser clients in cookie mode send no body (or `{}`): the token comes from the cc_refresh cookie. */
export interface RefreshRequest {
  refresh_token?: string
}

/**
 * The spec lists `access_token` and `expires_in`. Refresh tokens rotate, so the response also
 * carries the new `refresh_token`: a client must store it, the old one is spent (reusing it revokes
 * the whole login).
 */
export interface RefreshResponse {
  access_token: string
  expires_in: number
  /** Absent in cookie mode (see LoginResponse). */
  refresh_token?: string
  token_type: 'Bearer'
}

export interface LogoutRequest {
  refresh_token?: string
}

export interface ForgotPasswordRequest {
  email: string
}

export interface ResendVerificationRequest {
  email: string
}

export interface ResetPasswordRequest {
  token: string
  password: string
  password_confirmation: string
}

export interface VerifyEmailRequest {
  token: string
}

export interface VerifyEmailResponse {
  message: string
  account_status: AccountStatus
}

export interface MessageResponse {
  message: string
}

/** Fixed messages: identical whatever the account's existence, so they reveal nothing. */
export const MESSAGES = {
  registered: 'Verification email sent',
  forgotPassword: 'If an account exists, a reset email has been sent',
  resendVerification: 'If an unverified account exists, a verification email has been sent',
  passwordReset: 'Password reset successfully',
  emailVerified: 'Email verified',
} as const
