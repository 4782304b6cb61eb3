/**
 * Spec "Public Endpoints (No Auth)": /v1/auth/*. All rate-limited per IP; sign-in failures and the
 * mails a route sends are limited per account too (control/ratelimit.ts). Answers never tell
 * whether an email has an account (see services/accounts.ts).
 */
import type { Plugin, Request, ResponseToolkit } from '@hapi/hapi'
import { Joi } from '../schemas.ts'
import { MESSAGES, type LoginResponse, type RefreshResponse, type RegisterResponse, type VerifyEmailResponse } from '../../proto/api/auth.ts'
import type { ErrorCode } from '../../proto/api/errors.ts'
import { apiError, isApiError } from '../errors.ts'
import * as S from '../schemas.ts'
import type { Services } from '../services/index.ts'
import type { IssuedTokens } from '../services/sessions.ts'
import { clearedRefreshCookie, isSameOrigin, refreshCookie, refreshCookieValues, wantsCookieMode } from '../session-cookie.ts'

const registerUser = Joi.object({
  id: S.userId.required(),
  name: Joi.string().required(),
  email: Joi.string().required(),
  created_at: S.timestamp.required(),
  account_status: S.accountStatus.required(),
}).label('RegisteredUser')

const loginUser = Joi.object(S.userSummary).label('LoginUser')

/** Body optional: without `refresh_token` the token comes from the cc_refresh cookie. */
const refreshOrCookieBody = Joi.object({ refresh_token: S.bearerJwt }).allow(null)

const COOKIE_MODE_NOTE = 'With the request header `X-CC-Session: cookie` the refresh token is not in the body: it is set as the cookie ' +
  '`cc_refresh` (HttpOnly; Secure; SameSite=Strict; Path=/v1/auth; Max-Age = the refresh token lifetime), for browser clients.'
const COOKIE_SOURCE_NOTE = 'Without `refresh_token` in the body (no body, or `{}`) the token is taken from the `cc_refresh` cookie; ' +
  'the request must then carry an `Origin` header naming this server (its own origin or CC_PUBLIC_URL\'s), else 403 FORBIDDEN.'

const VERIFY_ERRORS: ErrorCode[] = ['LINK_EXPIRED', 'LINK_ALREADY_USED', 'LINK_INVALID']
const VERIFY_ERRORS_NOTE = 'A token that does not work is answered with its reason: 410 LINK_EXPIRED (past its lifetime: ask for a new ' +
  'link with POST /v1/auth/resend-verification), 410 LINK_ALREADY_USED (spent), 400 LINK_INVALID (no such token).'

/** Where a refresh or logout takes its token from; a cookie-sourced request must pass the Origin check. */
function presentedToken (request: Request, services: Services): { token: string | undefined, fromCookie: boolean } {
  const body = request.payload as { refresh_token?: string } | null
  if (typeof body?.refresh_token === 'string') return { token: body.refresh_token, fromCookie: false }
  if (!isSameOrigin(request, { publicUrl: services.config.publicUrl, trustProxyHops: services.config.trustProxyHops })) {
    throw apiError('FORBIDDEN', 'A cookie session needs an Origin header naming this server')
  }
  const values = refreshCookieValues(request)
  // Two cookies of one name: one was planted from a sibling subdomain (cookie tossing). Trust neither.
  if (values.length !== 1) return { token: undefined, fromCookie: true }
  return { token: values[0], fromCookie: true }
}

export const authRoutes: Plugin<Services> = {
  name: 'cc-routes-auth',
  register (server, services) {
    const { accounts, sessions, plans } = services
    const common = { auth: false as const, app: { rateLimit: 'auth' as const }, tags: ['auth'] }
    // Refresh and logout present a refresh token (nothing to guess): the ordinary per-address
    // limit, not the sign-in one, so that every dashboard page load (a cookie refresh) does not
    // spend the budget meant for password guesses.
    const withSession = { ...common, app: { rateLimit: 'default' as const } }
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
        notes: COOKIE_MODE_NOTE,
        validate: {
          // No length rule on a login password beyond the register bounds: a wrong one is just 401.
          payload: Joi.object({ email: S.email.required(), password: Joi.string().max(1024).required() }).label('LoginRequest'),
        },
        response: {
          status: {
            200: Joi.object({
              access_token: Joi.string().required(),
              refresh_token: Joi.string().description('Absent in cookie mode (X-CC-Session: cookie): then in the cc_refresh cookie'),
              token_type: Joi.string().valid('Bearer').required(),
              expires_in: Joi.number().integer().required(),
              user: loginUser.required(),
            }).label('LoginResponse'),
          },
        },
      },
      async handler (request, h) {
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
        return withRefreshToken(h, body, issued, wantsCookieMode(request))
      },
    })

    server.route({
      method: 'POST',
      path: '/auth/refresh',
      options: {
        ...withSession,
        description: 'Exchange a refresh token for a new access token and a new refresh token',
        notes: `Refresh tokens rotate: store the returned refresh_token. Presenting a spent one revokes the whole sign-in. ${COOKIE_SOURCE_NOTE} ` +
          `A cookie-sourced refresh answers in cookie mode (the rotated token in the cookie, none in the body). ${COOKIE_MODE_NOTE}`,
        validate: { payload: refreshOrCookieBody.label('RefreshRequest') },
        response: {
          status: {
            200: Joi.object({
              access_token: Joi.string().required(),
              expires_in: Joi.number().integer().required(),
              refresh_token: Joi.string().description('Absent in cookie mode: then in the cc_refresh cookie'),
              token_type: Joi.string().valid('Bearer').required(),
            }).label('RefreshResponse'),
          },
        },
        plugins: { openapi: { errors: ['FORBIDDEN'] } },
      },
      async handler (request, h) {
        const { token, fromCookie } = presentedToken(request, services)
        const cookieMode = fromCookie || wantsCookieMode(request)
        let issued: IssuedTokens
        try {
          issued = await sessions.rotate(token)
        } catch (err) {
          // A cookie that no longer works is dropped, so the browser stops sending it.
          if (cookieMode && isApiError(err) && err.data!.code === 'UNAUTHORIZED') err.data!.headers = { ...err.data!.headers, 'set-cookie': clearedRefreshCookie() }
          throw err
        }
        const body: RefreshResponse = { access_token: issued.accessToken, expires_in: issued.expiresIn, refresh_token: issued.refreshToken, token_type: 'Bearer' }
        return withRefreshToken(h, body, issued, cookieMode)
      },
    })

    server.route({
      method: 'POST',
      path: '/auth/logout',
      options: {
        ...withSession,
        description: 'Sign out: revoke the sign-in this refresh token belongs to',
        notes: `${COOKIE_SOURCE_NOTE} In cookie mode (cookie-sourced, or X-CC-Session: cookie) the answer also clears the cookie (Max-Age=0).`,
        validate: { payload: refreshOrCookieBody.label('LogoutRequest') },
        response: { status: { 204: Joi.any().empty() } },
        plugins: { openapi: { errors: ['FORBIDDEN'] } },
      },
      async handler (request, h) {
        const { token, fromCookie } = presentedToken(request, services)
        await sessions.end(token)
        const response = h.response().code(204)
        if (fromCookie || wantsCookieMode(request)) response.header('set-cookie', clearedRefreshCookie())
        return response
      },
    })

    server.route({
      method: 'POST',
      path: '/auth/logout-all',
      options: {
        tags: ['auth'],
        description: 'Sign out everywhere: revoke every refresh token of the signed-in account',
        notes: 'Every sign-in of the account (each browser, each API client) can no longer refresh. Access tokens already ' +
          'issued are not revoked: they stop working when they expire (at most the access token lifetime, 15 minutes by default). ' +
          'The answer clears the cc_refresh cookie.',
        response: { status: { 204: Joi.any().empty() } },
      },
      async handler (request, h) {
        await sessions.revokeAllOf(request.auth.credentials.user!.id)
        return h.response().code(204).header('set-cookie', clearedRefreshCookie())
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
        description: 'Confirm an email address (the link in verification emails sent before the dashboard page existed)',
        notes: VERIFY_ERRORS_NOTE,
        validate: { query: Joi.object({ token: S.mailToken.required() }) },
        response: { status: { 200: verifyResponse } },
        plugins: { openapi: { errors: VERIFY_ERRORS } },
      },
      handler: async request => await verifyHandler((request.query as { token: string }).token),
    })

    server.route({
      method: 'POST',
      path: '/auth/verify-email',
      options: {
        ...common,
        description: 'Confirm an email address with the token from the verification email (the dashboard\'s /verify-email page)',
        notes: VERIFY_ERRORS_NOTE,
        validate: { payload: Joi.object({ token: S.mailToken.required() }).label('VerifyEmailRequest') },
        response: { status: { 200: verifyResponse } },
        plugins: { openapi: { errors: VERIFY_ERRORS } },
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

/** The body as is, or in cookie mode without `refresh_token` and with the cookie set. */
function withRefreshToken<T extends { refresh_token?: string }> (h: ResponseToolkit, body: T, issued: IssuedTokens, cookieMode: boolean): T | ReturnType<ResponseToolkit['response']> {
  if (!cookieMode) return body
  const { refresh_token: _omitted, ...rest } = body
  return h.response(rest).header('set-cookie', refreshCookie(issued.refreshToken, issued.refreshExpiresIn))
}
