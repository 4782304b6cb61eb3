/**
 * The dashboard's refresh-token cookie and the Origin check that guards it.
 *
 * A browser client asks for cookie mode with `X-CC-Session: cookie` on login or refresh: the
 * refresh token then travels only in `cc_refresh` (HttpOnly: script cannot read it; Secure;
 * SameSite=Strict; Path=/v1/auth: sent to the auth routes only) and the JSON body omits it.
 * A refresh or logout that takes its token from the cookie must carry an Origin equal to the
 * request's own origin or CC_PUBLIC_URL's: SameSite=Strict does not stop requests from sibling
 * subdomains (same site), and every instance is a sibling subdomain serving its owner's content.
 *
 * Cookies are parsed here, not by hapi (its parser is off, control/app.ts): another application's
 * malformed cookie on the same host must never break an API request.
 */
import type { Request } from '@hapi/hapi'

export const REFRESH_COOKIE = 'cc_refresh'
export const REFRESH_COOKIE_PATH = '/v1/auth'
export const SESSION_MODE_HEADER = 'x-cc-session'

const ATTRIBUTES = `HttpOnly; Secure; SameSite=Strict; Path=${REFRESH_COOKIE_PATH}`
/** JWS compact serialisation characters (RFC 7515 7.1): a valid cookie-value without quoting. */
const TOKEN_VALUE = /^[A-Za-z0-9_.-]{1,4096}$/

/** RFC 6265 4.1: Set-Cookie for the refresh token, living as long as the token does. */
export function refreshCookie (token: string, maxAgeSeconds: number): string {
  return `${REFRESH_COOKIE}=${token}; ${ATTRIBUTES}; Max-Age=${maxAgeSeconds}`
}

/** RFC 6265 3.1: the same name, path and attributes with Max-Age=0 removes it. */
export function clearedRefreshCookie (): string {
  return `${REFRESH_COOKIE}=; ${ATTRIBUTES}; Max-Age=0`
}

/** Whether the client asked for cookie mode. */
export function wantsCookieMode (request: Request): boolean {
  const value = request.headers[SESSION_MODE_HEADER]
  return typeof value === 'string' && value.trim().toLowerCase() === 'cookie'
}

/**
 * Every `cc_refresh` value in the Cookie header (RFC 6265 5.4: `name=value` pairs joined by "; ").
 * Pairs that do not parse are skipped; a value that is not token-shaped counts as present but empty,
 * so a garbled cookie reads as "a cookie that does not verify", not as "no cookie".
 */
export function refreshCookieValues (request: Request): string[] {
  const header = request.headers.cookie
  if (typeof header !== 'string' || header.length === 0) return []
  const values: string[] = []
  for (const pair of header.split(';')) {
    const eq = pair.indexOf('=')
    if (eq === -1 || pair.slice(0, eq).trim() !== REFRESH_COOKIE) continue
    let value = pair.slice(eq + 1).trim()
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1)
    values.push(TOKEN_VALUE.test(value) ? value : '')
  }
  return values
}

/** The value of header `name` as the Nth trusted proxy from the right saw it (as clientIp does). */
function forwarded (request: Request, name: string, trustProxyHops: number): string | undefined {
  if (trustProxyHops === 0) return undefined
  const header = request.headers[name]
  if (typeof header !== 'string') return undefined
  const hops = header.split(',').map(s => s.trim()).filter(s => s !== '')
  return hops[hops.length - trustProxyHops] ?? hops[0]
}

function defaultPort (protocol: string): string {
  return protocol === 'https:' ? '443' : '80'
}

/**
 * RFC 6454 7: whether the request's Origin header names this server: CC_PUBLIC_URL's origin, or
 * the host the request was addressed to (Host, or X-Forwarded-Host from a trusted proxy) with the
 * scheme it arrived by when a trusted proxy says so (X-Forwarded-Proto). A missing Origin, `null`
 * (opaque origins) or anything unparsable fails.
 */
export function isSameOrigin (request: Request, options: { publicUrl: string, trustProxyHops: number }): boolean {
  const header = request.headers.origin
  if (typeof header !== 'string' || header === '' || header === 'null') return false
  let origin: URL
  try {
    origin = new URL(header)
  } catch {
    return false
  }
  if (origin.protocol !== 'http:' && origin.protocol !== 'https:') return false
  if (origin.username !== '' || origin.password !== '' || (origin.pathname !== '/' && origin.pathname !== '') || origin.search !== '') return false
  if (origin.origin === new URL(options.publicUrl).origin) return true

  const host = (forwarded(request, 'x-forwarded-host', options.trustProxyHops) ?? request.headers.host as string | undefined ?? '').toLowerCase()
  if (host === '') return false
  const proto = forwarded(request, 'x-forwarded-proto', options.trustProxyHops)?.toLowerCase()
  if (proto !== undefined && `${proto}:` !== origin.protocol) return false
  const originHostPort = origin.port === '' ? `${origin.hostname}:${defaultPort(origin.protocol)}` : origin.host
  const requestHostPort = /:\d+$/.test(host) && !host.endsWith(']') ? host : `${host}:${defaultPort(origin.protocol)}`
  return originHostPort === requestHostPort
}
