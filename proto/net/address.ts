/**
 * IP addresses as text, shared by every listener and by the WireGuard endpoint: the dual-stack
 * wildcard, IPv4-mapped IPv6 addresses (RFC 4291 2.5.5.2), `[v6]:port` (RFC 3986 3.2.2), the bytes
 * of an address, and the fallback to IPv4 when a host has no IPv6. Pure: the caller does the I/O.
 */

/** The wildcard every listener binds by default: IPv6 and, dual-stack, IPv4. */
export const DUAL_STACK_ANY = '::'
/** What `DUAL_STACK_ANY` falls back to on a host without IPv6. */
export const IPV4_ANY = '0.0.0.0'

const MAPPED = /^::ffff:(\d{1,3}(?:\.\d{1,3}){3})$/i

/** `::ffff:198.51.100.4` -> `198.51.100.4` (how a dual-stack socket sees an IPv4 client); others unchanged. */
export function plainAddress (address: string): string {
  if (address.length < 14 || address.charCodeAt(0) !== 58) return address // not "::ffff:" + IPv4: the common case, cheaply
  const m = MAPPED.exec(address)
  return m === null ? address : m[1]
}

/** `198.51.100.4` -> `::ffff:198.51.100.4` (an IPv4 destination for an IPv6 socket); others unchanged. */
export function mappedAddress (address: string): string {
  return address.includes(':') ? address : `::ffff:${address}`
}

/** `host:port`, an IPv6 address in brackets (RFC 3986 3.2.2). */
export function formatHostPort (host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

/** `[2001:db8::1]`: an IPv6 address in brackets (settings take `CC_API_HOST=[::]` as well as `::`). */
export const BRACKETED_IPV6 = /^\[([0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)\]$/

/** `[::1]` -> `::1`: a host setting may be written either way. */
export function unbracket (host: string): string {
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host
}

function ipv4Bytes (text: string): Uint8Array | null {
  const parts = text.split('.')
  if (parts.length !== 4) return null
  const out = new Uint8Array(4)
  for (let i = 0; i < 4; i++) {
    if (!/^(0|[1-9][0-9]{0,2})$/.test(parts[i])) return null
    const n = Number(parts[i])
    if (n > 255) return null
    out[i] = n
  }
  return out
}

/** The 16 bytes of an IPv6 address (`::` compression, a trailing dotted quad, a zone dropped), or null. */
export function ipv6Bytes (text: string): Uint8Array | null {
  const zone = text.indexOf('%')
  const body = zone === -1 ? text : text.slice(0, zone)
  const halves = body.split('::')
  if (halves.length > 2) return null
  const groups = (part: string): number[] | null => {
    if (part === '') return []
    const out: number[] = []
    const pieces = part.split(':')
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i]
      if (i === pieces.length - 1 && piece.includes('.')) {
        const v4 = ipv4Bytes(piece)
        if (v4 === null) return null
        out.push(v4[0] << 8 | v4[1], v4[2] << 8 | v4[3])
      } else {
        if (!/^[0-9a-f]{1,4}$/i.test(piece)) return null
        out.push(Number.parseInt(piece, 16))
      }
    }
    return out
  }
  const head = groups(halves[0])
  const tail = halves.length === 2 ? groups(halves[1]) : []
  if (head === null || tail === null) return null
  const missing = 8 - head.length - tail.length
  if (halves.length === 2 ? missing < 1 : missing !== 0) return null
  const all = [...head, ...new Array<number>(Math.max(0, missing)).fill(0), ...tail]
  const out = new Uint8Array(16)
  for (let i = 0; i < 8; i++) {
    out[2 * i] = all[i] >> 8
    out[2 * i + 1] = all[i] & 0xff
  }
  return out
}

/** An address's bytes: 4 for IPv4 (an IPv4-mapped IPv6 address included), 16 for IPv6; null if neither. */
export function addressBytes (text: string): Uint8Array | null {
  if (!text.includes(':')) return ipv4Bytes(text)
  const v6 = ipv6Bytes(text)
  if (v6 === null) return null
  const mapped = v6.subarray(0, 10).every(b => b === 0) && v6[10] === 0xff && v6[11] === 0xff
  return mapped ? v6.slice(12) : v6
}

/**
 * The key per-client limits count under: the IPv4 address, or the IPv6 address's /64 (one
 * subscriber's whole prefix, as wireguard-go's rate limiter does); the text itself when unparsable.
 */
export function clientPrefix (address: string): string {
  const bytes = addressBytes(address)
  if (bytes === null) return address
  if (bytes.length === 4) return bytes.join('.')
  const groups: string[] = []
  for (let i = 0; i < 8; i += 2) groups.push(((bytes[i] << 8) | bytes[i + 1]).toString(16))
  return `${groups.join(':')}::/64`
}

/** The errors of binding `::` on a host without IPv6 (no IPv6 in the kernel, or no IPv6 address at all). */
export function isNoIpv6Error (err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return code === 'EAFNOSUPPORT' || code === 'EADDRNOTAVAIL'
}

/**
 * Binds with `bind(host)`; when `host` is the dual-stack wildcard and the host has no IPv6,
 * calls `onFallback` (to log it) and binds `0.0.0.0` instead. Any other failure is the caller's.
 */
export async function bindDualStack<T> (host: string, bind: (host: string) => Promise<T>, onFallback: (err: Error) => void): Promise<T> {
  try {
    return await bind(host)
  } catch (err) {
    if (host !== DUAL_STACK_ANY || !isNoIpv6Error(err)) throw err
    onFallback(err as Error)
    return await bind(IPV4_ANY)
  }
}
