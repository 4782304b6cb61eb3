/**
 * Rate limits on every route (spec "Security Considerations": rate limiting on all endpoints), as
 * token buckets (services/ratelimit.ts; on Postgres shared by every control replica,
 * services/ratelimit-postgres.ts). Over a limit: 429 RATE_LIMITED with Retry-After (RFC 6585 4).
 *
 * - Routes marked `app.rateLimit: 'auth'` (the public /auth endpoints): per client address, before
 *   anything else runs.
 * - Sign-in (`app.accountLimit: 'login'`): *failures* count, not attempts, per (account, address)
 *   and, with a higher ceiling, per account from all addresses (distributed guessing). A sign-in
 *   takes a token from both buckets and gets it back unless it fails with 401, so guesses from one
 *   address never lock the owner out elsewhere until the ceiling is reached; a success also clears
 *   its address's failures.
 * - Routes that send mail to the account in the body (`app.accountLimit: 'mail'`): per account,
 *   one bucket per route, so sign-in failures or sign-up attempts never hold back a password reset.
 * - The dashboard's page shells and files (`app.rateLimit: 'static'`): their own, larger per-address
 *   bucket, so loading pages never spends the API's (a page load asks for a dozen files).
 * - Every other route: per bearer (user or instance) once its token is verified; per address when
 *   it carries no token or needs none. A request whose bearer fails (401) is counted against its
 *   address, and an address over that limit is refused before its token is looked at.
 */
import type { Plugin, Request } from '@hapi/hapi'
import type { ControlConfig, RateLimitRule } from './config.ts'
import { clientFromChain } from './trusted-proxies.ts'
import { clientPrefix, plainAddress } from '../proto/net/address.ts'
import { apiError } from './errors.ts'
import type { Services } from './services/index.ts'
import { normalizeEmail } from './services/accounts.ts'
import type { TakeResult } from './services/ratelimit.ts'

type BucketRef = [key: string, rule: RateLimitRule]

declare module '@hapi/hapi' {
  interface RequestApplicationState {
    clientIp?: string
    /** What the client's per-address buckets are keyed by: its IPv4 address or its IPv6 /64. */
    clientKey?: string
    /** The sign-in's failure buckets: their tokens come back unless it ends in 401. */
    loginBuckets?: [address: BucketRef, account: BucketRef]
    /** The bucket a failed bearer authentication of this request is charged to. */
    authFailureBucket?: BucketRef
  }
  interface RouteOptionsApp {
    /** Limits keyed on the `email` of the (validated) body, see above. */
    accountLimit?: 'login' | 'mail'
  }
}

/**
 * The client address: the socket peer; with CC_TRUSTED_PROXIES, the first untrusted X-Forwarded-For
 * entry from the right when the peer is a trusted proxy; with N trusted hops
 * (CC_TRUST_PROXY_HOPS), the Nth entry from the right.
 */
export function clientIp (request: Request, trust: number | Pick<ControlConfig, 'trustProxyHops' | 'trustedProxies'>): string {
  return plainAddress(forwardedClient(request, trust))
}

function forwardedClient (request: Request, trust: number | Pick<ControlConfig, 'trustProxyHops' | 'trustedProxies'>): string {
  // The dual-stack listener sees an IPv4 client as ::ffff:a.b.c.d.
  const peer = plainAddress(request.info.remoteAddress)
  const trustProxyHops = typeof trust === 'number' ? trust : trust.trustProxyHops
  if (typeof trust !== 'number' && trust.trustedProxies !== null) {
    const header = request.headers['x-forwarded-for']
    return clientFromChain(peer, typeof header === 'string' ? header : undefined, trust.trustedProxies)
  }
  if (trustProxyHops === 0) return peer
  const header = request.headers['x-forwarded-for']
  if (typeof header !== 'string') return peer
  const hops = header.split(',').map(s => s.trim()).filter(s => s !== '')
  return hops[hops.length - trustProxyHops] ?? hops[0] ?? peer
}

function rateLimited (result: TakeResult): Error {
  return apiError('RATE_LIMITED', 'Too many requests, slow down', { retry_after: result.retryAfterSeconds }, { 'retry-after': String(result.retryAfterSeconds) })
}

function statusOf (response: Request['response']): number | undefined {
  if (response === null || typeof response !== 'object') return undefined
  if ('isBoom' in response && response.isBoom) return response.output.statusCode
  return 'statusCode' in response ? response.statusCode : undefined
}

export const rateLimitPlugin: Plugin<Services> = {
  name: 'cc-ratelimit',
  register (server, services) {
    const limits = services.config.rateLimits
    const limiter = services.rateLimiter

    async function enforce ([key, rule]: BucketRef): Promise<void> {
      const result = await limiter.take(key, rule)
      if (!result.allowed) throw rateLimited(result)
    }

    server.ext('onPreAuth', async (request, h) => {
      request.app.clientIp = clientIp(request, services.config)
      // An IPv6 client holds a whole /64: counted as one, or it would get 2^64 budgets.
      const ip = clientPrefix(request.app.clientIp)
      request.app.clientKey = ip
      const kind = request.route.settings.app?.rateLimit
      if (kind === 'auth') {
        await enforce([`auth-ip:${ip}`, limits.authPerIp])
      } else if (kind === 'static') {
        await enforce([`static-ip:${ip}`, limits.staticPerIp])
      } else if (request.headers.authorization === undefined || (request.route.settings.auth as unknown) === false) {
        await enforce([`ip:${ip}`, limits.perIp])
      } else {
        // Checked, not taken: only failures count, and a verified token has its own bucket below.
        const bucket: BucketRef = [`auth-fail-ip:${ip}`, limits.authFailuresPerIp]
        const result = await limiter.peek(...bucket)
        if (!result.allowed) throw rateLimited(result)
        request.app.authFailureBucket = bucket
      }
      return h.continue
    })

    server.ext('onPostAuth', async (request, h) => {
      if (request.route.settings.app?.rateLimit === 'auth' || request.route.settings.app?.rateLimit === 'static') return h.continue
      // The bearer's identity: a user now; instance strategies put their id in credentials.app.
      const subject = request.auth.credentials?.user?.id ?? (request.auth.credentials?.app as { id?: string } | undefined)?.id
      if (subject !== undefined) await enforce([`token:${subject}`, limits.perToken])
      return h.continue
    })

    // After validation: the email is normalised and the body well formed.
    server.ext('onPreHandler', async (request, h) => {
      const kind = request.route.settings.app?.accountLimit
      const email = (request.payload as { email?: unknown } | null)?.email
      if (kind === undefined || typeof email !== 'string') return h.continue
      const account = normalizeEmail(email)
      if (kind === 'mail') {
        await enforce([`mail:${request.route.path}:${account}`, limits.mailPerAccount])
        return h.continue
      }
      const address: BucketRef = [`login-fail:${account}|${request.app.clientKey!}`, limits.loginFailuresPerAddress]
      const everywhere: BucketRef = [`login-fail:${account}`, limits.loginFailuresPerAccount]
      await enforce(address)
      try {
        await enforce(everywhere)
      } catch (err) {
        await limiter.refund(...address)
        throw err
      }
      request.app.loginBuckets = [address, everywhere]
      return h.continue
    })

    server.ext('onPreResponse', async (request, h) => {
      const status = statusOf(request.response)
      const login = request.app.loginBuckets
      if (login !== undefined && status !== 401) {
        const [address, everywhere] = login
        if (status === 200) await limiter.forget(address[0])
        else await limiter.refund(...address)
        await limiter.refund(...everywhere)
      }
      const bearer = request.app.authFailureBucket
      if (bearer !== undefined && status === 401) await limiter.charge(...bearer)
      return h.continue
    })
  },
}
