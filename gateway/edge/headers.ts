/**
 * Header rewriting at the edge: hop-by-hop headers removed (RFC 9110 7.6.1), forwarding headers
 * set from what we saw on the connection. We are the first proxy, so any forwarding header a
 * client sent is a claim we cannot check: it is dropped and replaced, never appended to.
 */
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http'

/** RFC 9110 7.6.1 and RFC 9112 (plus the non-standard keep-alive/proxy-connection seen in the wild). */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'http2-settings'])

/** Headers only this edge may set towards the origin. */
const EDGE_SET = new Set(['x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host', 'x-forwarded-port', 'x-real-ip', 'forwarded', 'x-request-id'])

/** Edge-set headers, and Expect: we answered any `Expect: 100-continue` ourselves. */
const NOT_FORWARDED = new Set([...EDGE_SET, 'expect', 'host'])

/** Relayed requests: the Expect we answered, and Host (set from the authority). */
const RELAY_NOT_FORWARDED = new Set(['expect', 'host'])

const NONE: string[] = []

/** Names listed in Connection headers (RFC 9110 7.6.1: each names a hop-by-hop field). */
const KEEP_ALIVE = ['keep-alive']
const CLOSE = ['close']

function connectionTokens (value: string | string[] | undefined): string[] {
  if (value === undefined) return NONE
  // What HTTP/1.1 clients send on nearly every request, without splitting it.
  if (value === 'keep-alive' || value === 'Keep-Alive') return KEEP_ALIVE
  if (value === 'close') return CLOSE
  const text = Array.isArray(value) ? value.join(',') : value
  return text.split(',').map(t => t.trim().toLowerCase()).filter(t => t !== '')
}

function isHopByHop (name: string, listed: string[]): boolean {
  // Proxy-* covers Proxy-Authorization/Proxy-Authenticate and the "Proxy" header (httpoxy).
  return HOP_BY_HOP.has(name) || name === 'proxy' || name.startsWith('proxy-') || listed.includes(name)
}

/**
 * Copy of `headers` without hop-by-hop fields and HTTP/2 pseudo-headers. With `upgrade`, the
 * Upgrade header and `Connection: upgrade` are kept (RFC 9110 7.8: the upgrade is the point).
 */
export function withoutHopByHop (headers: IncomingHttpHeaders, upgrade = false, drop?: ReadonlySet<string>): OutgoingHttpHeaders {
  const listed = connectionTokens(headers.connection)
  const out: OutgoingHttpHeaders = {}
  for (const name in headers) {
    const value = headers[name]
    if (value === undefined || name.startsWith(':')) continue
    if (isHopByHop(name, listed) || drop?.has(name) === true) continue
    out[name] = value
  }
  if (upgrade && headers.upgrade !== undefined) {
    out.connection = 'upgrade'
    out.upgrade = headers.upgrade
  }
  return out
}

export interface ForwardingFacts {
  /** The client's address as seen on the socket. */
  clientIp: string
  /** The public authority (publicAuthority of the Host or :authority the client sent). */
  host: string
  /** 'https' at the TLS listener. */
  proto: 'https' | 'http'
  requestId: string
}

/** Request headers for the origin: hop-by-hop removed, forwarding headers set by us. */
export function upstreamRequestHeaders (headers: IncomingHttpHeaders, facts: ForwardingFacts, upgrade = false): OutgoingHttpHeaders {
  // Copied without what only we set (no `delete`: it would turn the object into a slow dictionary).
  const out = withoutHopByHop(headers, upgrade, NOT_FORWARDED)
  out.host = facts.host
  out['x-forwarded-for'] = facts.clientIp
  out['x-real-ip'] = facts.clientIp
  out['x-forwarded-proto'] = facts.proto
  out['x-forwarded-host'] = facts.host
  out.forwarded = forwardedElement(facts)
  out['x-request-id'] = facts.requestId
  return out
}

/**
 * Request headers of a request another gateway of the fleet relayed to us: hop-by-hop removed, the
 * forwarding headers that gateway set passed through unchanged (exactly once: it replaced the
 * client's), Host kept.
 */
export function relayedRequestHeaders (headers: IncomingHttpHeaders, upgrade = false): OutgoingHttpHeaders {
  const out = withoutHopByHop(headers, upgrade, RELAY_NOT_FORWARDED)
  const authority = (headers[':authority'] as string | undefined) ?? headers.host
  if (authority !== undefined) out.host = authority
  return out
}

/** The client address a relaying gateway wrote in X-Forwarded-For (it set exactly one). */
export function relayedClientIp (headers: IncomingHttpHeaders): string | undefined {
  const value = headers['x-forwarded-for']
  const text = Array.isArray(value) ? value[0] : value
  const first = text?.split(',', 1)[0].trim()
  return first === undefined || first === '' ? undefined : first
}

/** Response headers for the client: hop-by-hop removed (they are also illegal in HTTP/2). */
export function downstreamResponseHeaders (headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  return withoutHopByHop(headers)
}

/**
 * A Host or :authority as a client would write it in a URL: lower case, no trailing dot, the port
 * only when it is not the scheme's default (RFC 3986 6.2.3; RFC 9110 4.2.3: host comparison is
 * case-insensitive). The origin builds absolute URLs from it (tusd's Location from
 * X-Forwarded-Host). For a hostname normalizeHost accepted.
 */
export function publicAuthority (host: string, proto: 'https' | 'http'): string {
  let name = host.trim().toLowerCase()
  let port = ''
  const colon = name.lastIndexOf(':')
  if (colon !== -1) { port = name.slice(colon + 1); name = name.slice(0, colon) }
  if (name.endsWith('.')) name = name.slice(0, -1)
  if (port === '') return name
  const n = Number(port)
  return n === (proto === 'https' ? 443 : 80) ? name : `${name}:${n}`
}

/** `::ffff:1.2.3.4` -> `1.2.3.4`; other addresses unchanged. */
export function plainIp (address: string | undefined): string {
  if (address === undefined) return 'unknown'
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

function forwardedValue (value: string): string {
  // RFC 7239 4: token or quoted-string; quote anything else (an IPv6 node, a host:port).
  return TOKEN.test(value) ? value : `"${value.replace(/["\\]/g, '\\$&')}"`
}

/** RFC 7239 forwarded-element: for=...;host=...;proto=... (IPv6 nodes bracketed and quoted, 6). */
export function forwardedElement (facts: ForwardingFacts): string {
  const last = lastForwarded
  if (last.clientIp === facts.clientIp && last.host === facts.host && last.proto === facts.proto) return last.element
  const node = facts.clientIp.includes(':') ? `[${facts.clientIp}]` : facts.clientIp
  const element = `for=${forwardedValue(node)};host=${forwardedValue(facts.host)};proto=${facts.proto}`
  lastForwarded = { clientIp: facts.clientIp, host: facts.host, proto: facts.proto, element }
  return element
}

/** The last element built: a connection's requests (and a busy client's) repeat the same one. */
let lastForwarded = { clientIp: '', host: '', proto: '', element: '' }
