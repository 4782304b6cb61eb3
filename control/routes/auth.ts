/**
 * Spec "Public Endpoints (No Auth)": /v1/auth/*. All rate-limited per IP; sign-in failures and the
 * mails a route sends are limited per account too (control/ratelimit.ts). Answers never tell
 * whether an email has an account (see services/accounts.ts).
 */
import type { Plugin } from '@hapi/hapi'
import { Joi } from '../schemas.ts'
import { MESSAGES, type LoginResponse, type RefreshResponse, type RegisterResponse, type VerifyEmailResponse } from '../../proto/api/auth.ts'
import * as S from '../schemas.ts'
import type { Services } from '../services/index.ts'

const registerUser = Joi.object({
  id: S.userId.required(),
  name: Joi.string().required(),
  email: Joi.string().required(),
  created_at: S.timestamp.required(),
  account_status: S.accountStatus.required(),
}).label('RegisteredUser')

const loginUser = Joi.object({
  id: S.userId.required(),
  email: Joi.string().required(),
  name: Joi.string().required(),
  subscription_status: S.subscriptionStatus.required(),
  subscription_plan: S.subscriptionPlan.required(),
  account_status: S.accountStatus.required(),
}).label('LoginUser')

const refreshBody = Joi.object({ refresh_token: S.bearerJwt.required() })

export const authRoutes: Plugin<Services> = {
  name: 'cc-routes-auth',
  register (server, services) {
    const { accounts, sessions, plans } = services
    const common = { auth: false as const, app: { rateLimit: 'auth' as const }, tags: ['auth'] }
    const sendsMail = { ...common, app: { ...common.app, accountLimit: 'mail' as const } }

    server.route({
      method: 'POST',
      path: '/auth/register',
      options: {
        ...sendsMail,
        description: 'Create an account; a verification email is sent',
        notes: 'An email that already has an account gets the same 201 answer (its owner is notified by mail instead).',
        validate: {
          payload: Joi.object({
            name: S.displayName.required(),
            email: S.email.required(),
            password: S.password.required(),
            password_confirmation: S.passwordConfirmation.required(),
            accept_terms: Joi.boolean().strict().valid(true).required().messages({ 'any.only': 'must be accepted' }),
            accept_privacy: Joi.boolean().strict().valid(true).required().messages({ 'any.only': 'must be accepted' }),
            accept_marketing: Joi.boolean().strict().default(false),
            erugo_version: Joi.string().trim().max(64).allow(null).default(null),
          }).label('RegisterRequest'),
        },
        response: { status: { 201: Joi.object({ user: registerUser.required(), message: Joi.string().required() }).label('RegisterResponse') } },
      },
      async handler (request, h) {
        const p = request.payload as { name: string, email: string, password: string, accept_marketing: boolean, erugo_version: string | null }
        const user = await accounts.register({ name: p.name, email: p.email, password: p.password, acceptMarketing: p.accept_marketing, erugoVersion: p.erugo_version })
        const body: RegisterResponse = { user, message: MESSAGES.registered }
        return h.response(body).code(201)
      },
    })

    server.route({
      method: 'POST',
      path: '/auth/login',
      options: {
        ...common,
        app: { ...common.app, accountLimit: 'login' as const },
        description: 'Sign in: access token (15 min) and refresh token (7 days)',
        validate: {
          // No length rule on a login password beyond the register bounds: a wrong one is just 401.
          payload: Joi.object({ email: S.email.required(), password: Joi.string().max(1024).required() }).label('LoginRequest'),
        },
        response: {
          status: {
            200: Joi.object({
              access_token: Joi.string().required(),
              refresh_token: Joi.string().required(),
              token_type: Joi.string().valid('Bearer').required(),
              expires_in: Joi.number().integer().required(),
              user: loginUser.required(),
            }).label('LoginResponse'),
          },
        },
      },
      async handler (request) {
        const { email, password } = request.payload as { email: string, password: string }
        const user = await accounts.authenticate(email, password)
        const issued = await sessions.start(user)
        const sub = await plans.subscriptionOf(user.id)
        const body: LoginResponse = {
          access_token: issued.accessToken,
          refresh_token: issued.refreshToken,
          token_type: 'Bearer',
          expires_in: issued.expiresIn,
          user: { id: user.id, email: user.email, name: user.name, subscription_status: sub.status, subscription_plan: sub.plan, account_status: user.account_status },
        }
        return body
      },
    })

    server.route({
      method: 'POST',
      path: '/auth/refresh',
      options: {
        ...common,
        description: 'Exchange a refresh token for a new access token and a new refresh token',
        notes: 'Refresh tokens rotate: store the returned refresh_token. Presenting a spent one revokes the whole sign-in.',
        validate: { payload: refreshBody.label('RefreshRequest') },
        response: {
          status: {
            200: Joi.object({
              access_token: Joi.string().required(),
              expires_in: Joi.number().integer().required(),
              refresh_token: Joi.string().required(),
              token_type: Joi.string().valid('Bearer').required(),
            }).label('RefreshResponse'),
          },
        },
      },
      async handler (request) {
        const issued = await sessions.rotate((request.payload as { refresh_token: string }).refresh_token)
        const body: RefreshResponse = { access_token: issued.accessToken, expires_in: issued.expiresIn, refresh_token: issued.refreshToken, token_type: 'Bearer' }
        return body
      },
    })

    server.route({
      method: 'POST',
      path: '/auth/logout',
      options: {
        ...common,
        description: 'Sign out: revoke the sign-in this refresh token belongs to',
        validate: { payload: refreshBody.label('LogoutRequest') },
        response: { status: { 204: Joi.any().empty() } },
      },
      async handler (request, h) {
        await sessions.end((request.payload as { refresh_token: string }).refresh_token)
        return h.response().code(204)
      },
    })

    server.route({
      method: 'POST',
      path: '/auth/forgot-password',
      options: {
        ...sendsMail,
        description: 'Send a password reset email if the account exists (same answer either way)',
        validate: { payload: Joi.object({ email: S.email.required() }).label('ForgotPasswordRequest') },
        response: { status: { 200: S.message } },
      },
      async handler (request) {
        await accounts.forgotPassword((request.payload as { email: string }).email)
        return { message: MESSAGES.forgotPassword }
      },
    })

    server.route({
      method: 'POST',
      path: '/auth/reset-password',
      options: {
        ...common,
        description: 'Set a new password with the token from the reset email; signs out every session',
        validate: {
          payload: Joi.object({
            token: S.mailToken.required(),
            password: S.password.required(),
            password_confirmation: S.passwordConfirmation.required(),
          }).label('ResetPasswordRequest'),
        },
        response: { status: { 200: S.message } },
      },
      async handler (request) {
        const { token, password } = request.payload as { token: string, password: string }
        await accounts.resetPassword(token, password)
        return { message: MESSAGES.passwordReset }
      },
    })

    const verifyResponse = Joi.object({ message: Joi.string().required(), account_status: S.accountStatus.required() }).label('VerifyEmailResponse')
    const verifyHandler = async (token: string): Promise<VerifyEmailResponse> => {
      const status = await accounts.verifyEmail(token)
      return { message: MESSAGES.emailVerified, account_status: status }
    }

    server.route({
      method: 'GET',
      path: '/auth/verify-email',
      options: {
        ...common,
        description: 'Confirm an email address (the link in the verification email)',
        validate: { query: Joi.object({ token: S.mailToken.required() }) },
        response: { status: { 200: verifyResponse } },
      },
      handler: async request => await verifyHandler((request.query as { token: string }).token),
    })

    server.route({
      method: 'POST',
      path: '/auth/verify-email',
      options: {
        ...common,
        description: 'Confirm an email address with the token from the verification email',
        validate: { payload: Joi.object({ token: S.mailToken.required() }).label('VerifyEmailRequest') },
        response: { status: { 200: verifyResponse } },
      },
      handler: async request => await verifyHandler((request.payload as { token: string }).token),
    })

    server.route({
      method: 'POST',
      path: '/auth/resend-verification',
      options: {
        ...sendsMail,
        description: 'Send a new verification email if an unverified account exists (same answer either way)',
        validate: { payload: Joi.object({ email: S.email.required() }).label('ResendVerificationRequest') },
        response: { status: { 200: S.message } },
      },
      async handler (request) {
        await accounts.resendVerification((request.payload as { email: string }).email)
        return { message: MESSAGES.resendVerification }
      },
    })
  },
}
