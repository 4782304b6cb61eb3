/**
 * The `user` auth strategy (the app's default: every route needs an access token unless it says
 * `auth: false`). RFC 6750 2.1: `Authorization: Bearer <token>`. The token must verify as an
 * access token, and its session version must match the account's (a password reset ends every
 * session at once, not 15 minutes later). Any failure is 401 UNAUTHORIZED in the contract's shape.
 *
 * Routes that need a verified email set `options.app.verifiedEmail: true`; operator routes set
 * `options.app.adminOnly: true` (users.role 'admin', granted with `cloud-connect admin grant`).
 *
 * The `instance` strategy (routes say `auth: 'instance'`) takes an instance token instead: it must
 * verify as one and still be the instance's current token (services/instances.ts `authenticate`).
 * A hot route whose own query is conditional on the token id may set `app.instanceTokenCheck:
 * 'handler'` to skip that lookup (one database round trip less): the handler must then answer 401
 * when its query matches nothing. Credentials: `credentials.app = { id, instanceId, userId, jti }`,
 * `id` naming the token (instance and token id) so rate limits apply per token.
 */
import type { Plugin, Request, ResponseToolkit, ServerAuthSchemeObject } from '@hapi/hapi'
import type { AccountStatus } from '../proto/api/auth.ts'
import type { UserRole } from '../proto/api/user.ts'
import { apiError, isApiError } from './errors.ts'
import type { Services } from './services/index.ts'
import { MAX_TOKEN_LENGTH } from './services/tokens.ts'

declare module '@hapi/hapi' {
  interface UserCredentials {
    id: string
    email: string
    name: string
    accountStatus: AccountStatus
    role: UserRole
  }
  interface AppCredentials {
    /** `<instanceId>.<jti>`: the rate limiter's key, one bucket per token. */
    id: string
    instanceId: string
    userId: string
    jti: string
  }
  interface RouteOptionsApp {
    /** Refuse accounts whose email is not verified yet (403 FORBIDDEN). */
    verifiedEmail?: boolean
    /** Refuse accounts without the admin role (403 FORBIDDEN). */
    adminOnly?: boolean
    /** Which rate limit applies; default: per token when authenticated, else per IP. 'static': the dashboard's files. */
    rateLimit?: 'auth' | 'default' | 'static'
    /** Instance routes: 'handler' when the handler itself checks the token is current (see above). */
    instanceTokenCheck?: 'lookup' | 'handler'
  }
}

export const USER_STRATEGY = 'user'
export const INSTANCE_STRATEGY = 'instance'

const BEARER = /^Bearer +([A-Za-z0-9_.~+/-]+=*) *$/i

/** The bearer token of a request, or a 401 naming what is wrong with the header. */
export function bearerToken (request: Request): string {
  const header = request.headers.authorization as string | undefined
  if (header === undefined || header === '') throw apiError('UNAUTHORIZED', 'Missing bearer token', {}, { 'www-authenticate': 'Bearer' })
  if (header.length > MAX_TOKEN_LENGTH + 16) throw apiError('UNAUTHORIZED', 'Invalid or expired token', {}, { 'www-authenticate': 'Bearer error="invalid_token"' })
  const match = BEARER.exec(header)
  if (match === null) throw apiError('UNAUTHORIZED', 'Authorization header must be "Bearer <token>"', {}, { 'www-authenticate': 'Bearer error="invalid_request"' })
  return match[1]
}

/** What `verify` makes of the request's bearer token; a refusal carries the invalid_token challenge (RFC 6750 3.1). */
async function verifiedBearer<T> (request: Request, verify: (token: string) => Promise<T>): Promise<T> {
  const token = bearerToken(request)
  try {
    return await verify(token)
  } catch (err) {
    if (isApiError(err)) err.data!.headers = { 'www-authenticate': 'Bearer error="invalid_token"' }
    throw err
  }
}

function userScheme (services: Services): ServerAuthSchemeObject {
  return {
    async authenticate (request: Request, h: ResponseToolkit) {
      const claims = await verifiedBearer(request, async token => await services.tokens.verifyAccess(token))
      const user = await services.accounts.findById(claims.userId)
      if (user === undefined || user.session_version !== claims.sessionVersion) {
        throw apiError('UNAUTHORIZED', 'Invalid or expired token', {}, { 'www-authenticate': 'Bearer error="invalid_token"' })
      }
      return h.authenticated({
        credentials: { user: { id: user.id, email: user.email, name: user.name, accountStatus: user.account_status, role: user.role } },
      })
    },
  }
}

function instanceScheme (services: Services): ServerAuthSchemeObject {
  return {
    async authenticate (request: Request, h: ResponseToolkit) {
      const who = await verifiedBearer(request, async token => request.route.settings.app?.instanceTokenCheck === 'handler'
        ? await services.instances.verifyToken(token)
        : await services.instances.authenticate(token))
      return h.authenticated({ credentials: { app: { id: `${who.instanceId}.${who.jti}`, instanceId: who.instanceId, userId: who.userId, jti: who.jti } } })
    },
  }
}

export const authPlugin: Plugin<Services> = {
  name: 'cc-auth',
  register (server, services) {
    server.auth.scheme('cc-user', () => userScheme(services))
    server.auth.strategy(USER_STRATEGY, 'cc-user')
    server.auth.default(USER_STRATEGY)
    server.auth.scheme('cc-instance', () => instanceScheme(services))
    server.auth.strategy(INSTANCE_STRATEGY, 'cc-instance')

    server.ext('onPostAuth', (request, h) => {
      if (request.route.settings.app?.verifiedEmail === true && request.auth.credentials?.user?.accountStatus !== 'active') {
        throw apiError('FORBIDDEN', 'Verify your email address first: follow the link in the verification email', { account_status: request.auth.credentials?.user?.accountStatus })
      }
      // The role as stored now (read with the token check above), so a revoke applies at once.
      if (request.route.settings.app?.adminOnly === true && request.auth.credentials?.user?.role !== 'admin') {
        throw apiError('FORBIDDEN', 'This needs an administrator account')
      }
      return h.continue
    })
  },
}
