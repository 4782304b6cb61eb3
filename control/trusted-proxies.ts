/**
 * Which peers may tell control the client's address (CC_TRUSTED_PROXIES): a list of IP addresses
 * and CIDR networks. Only a request whose socket peer is in the list has its X-Forwarded-For read,
 * and then the first address from the right that is not itself a trusted proxy is the client; any
 * other peer is the client, whatever its headers claim.
 */
import net from 'node:net'

export type ProxyMatcher = (address: string) => boolean

/** `::ffff:1.2.3.4` -> `1.2.3.4` (a dual-stack listener reports IPv4 peers that way). */
function unmapped (address: string): string {
  return address.startsWith('::ffff:') && address.includes('.') ? address.slice(7) : address
}

/**
 * The matcher for a comma-separated list of addresses and CIDRs (`127.0.0.0/8,::1`). Throws an
 * Error naming the first entry that is neither.
 */
export function parseTrustedProxies (list: string): ProxyMatcher {
  const blocks = new net.BlockList()
  for (const raw of list.split(',').map(s => s.trim()).filter(s => s !== '')) {
    const [address, prefix, extra] = raw.split('/')
    const family = net.isIPv4(address) ? 'ipv4' : net.isIPv6(address) ? 'ipv6' : null
    const bits = prefix === undefined ? undefined : /^\d{1,3}$/.test(prefix) ? Number(prefix) : NaN
    if (family === null || extra !== undefined || (bits !== undefined && (Number.isNaN(bits) || bits > (family === 'ipv4' ? 32 : 128)))) {
      throw new Error(`"${raw}" is not an IP address or CIDR network`)
    }
    if (bits === undefined) blocks.addAddress(address, family)
    else blocks.addSubnet(address, bits, family)
  }
  return address => {
    const plain = unmapped(address)
    const family = net.isIPv4(plain) ? 'ipv4' : net.isIPv6(plain) ? 'ipv6' : null
    return family !== null && blocks.check(plain, family)
  }
}

/**
 * The client address of a request from `peer` carrying `forwardedFor` (X-Forwarded-For): walk the
 * chain from the right while the hop is a trusted proxy (RFC 7239 7.4: only entries added by
 * trusted proxies can be believed); the first one that is not is the client. All trusted: the
 * leftmost.
 */
export function clientFromChain (peer: string, forwardedFor: string | undefined, trusted: ProxyMatcher): string {
  if (!trusted(peer) || forwardedFor === undefined) return peer
  const hops = forwardedFor.split(',').map(s => s.trim()).filter(s => s !== '')
  for (let i = hops.length - 1; i >= 0; i--) {
    if (!trusted(hops[i])) return hops[i]
  }
  return hops[0] ?? peer
}
