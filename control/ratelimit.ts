/**
 * Rate limits on every route (spec "Security Considerations": rate limiting on all endpoints), as
 * token buckets (services/ratelimit.ts). Routes marked `app.rateLimit: 'auth'` (the public /auth
 * endpoints) are limited per client IP before anything else runs, and per account (the `email` of
 * the body) once the body is parsed. Every other route is limited per bearer (user or instance)
 * once its token is verified, or per IP when it carries no token. Over the limit: 429 RATE_LIMITED with Retry-After (RFC 6585 4).
 */
import type { Plugin, Request } from '@hapi/hapi'
import type { RateLimitRule } from './config.ts'
import { apiError } from './errors.ts'
import type { Services } from './services/index.ts'
import { normalizeEmail } from './services/accounts.ts'

declare module '@hapi/hapi' {
  interface RequestApplicationState {
    clientIp?: string
  }
}

/** The client address: the socket peer, or with N trusted proxies the Nth X-Forwarded-For entry from the right. */
export function clientIp (request: Request, trustProxyHops: number): string {
  const peer = request.info.remoteAddress
  if (trustProxyHops === 0) return peer
  const header = request.headers['x-forwarded-for']
  if (typeof header !== 'string') return peer
  const hops = header.split(',').map(s => s.trim()).filter(s => s !== '')
  return hops[hops.length - trustProxyHops] ?? hops[0] ?? peer
}

export const rateLimitPlugin: Plugin<Services> = {
  name: 'cc-ratelimit',
  register (server, services) {
    const limits = services.config.rateLimits
    const limiter = services.rateLimiter

    function enforce (key: string, rule: RateLimitRule): void {
      const result = limiter.take(key, rule)
      if (!result.allowed) {
        throw apiError('RATE_LIMITED', 'Too many requests, slow down', { retry_after: result.retryAfterSeconds }, { 'retry-after': String(result.retryAfterSeconds) })
      }
    }

    server.ext('onPreAuth', (request, h) => {
      const ip = clientIp(request, services.config.trustProxyHops)
      request.app.clientIp = ip
      if (request.route.settings.app?.rateLimit === 'auth') enforce(`auth-ip:${ip}`, limits.authPerIp)
      else if (request.headers.authorization === undefined) enforce(`ip:${ip}`, limits.perIp)
      return h.continue
    })

    server.ext('onPostAuth', (request, h) => {
      if (request.route.settings.app?.rateLimit === 'auth') {
        const email = (request.payload as { email?: unknown } | null)?.email
        if (typeof email === 'string' && email.length <= 320) enforce(`auth-account:${normalizeEmail(email)}`, limits.authPerAccount)
        return h.continue
      }
      // The bearer's identity: a user now; instance strategies put their id in credentials.app.
      const subject = request.auth.credentials?.user?.id ?? (request.auth.credentials?.app as { id?: string } | undefined)?.id
      if (subject !== undefined) enforce(`token:${subject}`, limits.perToken)
      return h.continue
    })
  },
}
