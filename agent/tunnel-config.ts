/**
 * The API's answer to POST /tunnel/register, checked before anything uses it: the one place both
 * tunnel modes get their configuration from. Each `tunnel_config` field is parsed into a typed
 * value (address as a 32-bit number, key as 32 bytes, endpoint as labels / numbers, keepalive as
 * an integer) and every string the agent keeps or writes (the TunnelPlan, the state file, the
 * wg-quick file) is formatted back from those values, never copied from the answer.
 *
 * Accepted, and nothing else:
 *   interface.address          one IPv4 address with /32           10.100.0.42/32
 *   peer.allowed_ips           the gateway's own address, one /32   10.100.0.1/32
 *   peer.public_key            canonical base64 of 32 bytes (44 characters, as `wg pubkey` prints)
 *   peer.endpoint              host:port; host an RFC 1123 name, a dotted-quad IPv4 or a bracketed IPv6
 *   peer.persistent_keepalive  an integer 0-65535 (absent: 0, off)
 *   peers                      absent (an older control plane: `peer` is the only gateway), or a
 *                              list of 1-MAX_GATEWAYS gateways, primary first, each a `peer` plus
 *                              gateway_id (1-128 of A-Z a-z 0-9 . _ : -), role (`primary` first,
 *                              `backup` after), region (null or lower-case); public keys, allowed
 *                              IPs and ids all distinct; `peers[0]` is `peer`
 * The heartbeat's `peers` is checked the same way (checkGatewayList).
 * No string anywhere in tunnel_config may hold a control character; other keys are ignored (they
 * never reach a file).
 */
import { decodeKey, encodeKey, KEY_LEN } from '../proto/noise/keys.ts'
import { formatIPv4, parseIPv4Address } from '../proto/wire/ipv4.ts'
import { formatHostPort } from '../proto/net/address.ts'
import { REGION_NAME, type RegisterTunnelResponse, type TunnelConfig } from '../proto/api/tunnel.ts'

export class TunnelConfigError extends Error {
  /** The offending field, e.g. `peer.allowed_ips`. */
  readonly field: string
  constructor (field: string, reason: string) {
    super(`the API's tunnel_config has an unusable ${field}: ${reason}`)
    this.name = 'TunnelConfigError'
    this.field = field
  }
}

export type EndpointHost =
  | { kind: 'name', labels: string[] }
  | { kind: 'ipv4', address: number }
  /** Eight 16-bit groups. */
  | { kind: 'ipv6', groups: number[] }

export type GatewayRole = 'primary' | 'backup'

/** One gateway as typed values. */
export interface CheckedGateway {
  /** null: an older control plane's single `peer` (no fleet identity). */
  gatewayId: string | null
  role: GatewayRole
  region: string | null
  gatewayIp: number
  peerPublicKey: Buffer
  endpoint: { host: EndpointHost, port: number }
  persistentKeepalive: number
}

/** tunnel_config as typed values; the top-level peer fields are the primary's (`gateways[0]`). */
export interface CheckedTunnelConfig {
  tunnelIp: number
  gatewayIp: number
  peerPublicKey: Buffer
  endpoint: { host: EndpointHost, port: number }
  persistentKeepalive: number
  /** Every gateway, primary first (at least one). */
  gateways: CheckedGateway[]
}

/** One gateway of a plan; every string formatted by this file. */
export interface GatewayPlan extends GatewayPeer {
  gatewayId: string | null
  role: GatewayRole
  region: string | null
}

/** What the tunnels are configured from (the primary gateway's peer and ours); every string formatted by this file. */
export interface TunnelPlan extends GatewayPeer {
  /** Our tunnel address, e.g. 10.100.0.42. */
  address: string
  /** `<address>/32`. */
  addressCidr: string
  /** The primary's fleet id (absent or null: an older control plane's single peer). */
  gatewayId?: string | null
  region?: string | null
  /** The gateways after the primary, each kept as its own WireGuard peer (absent: none). */
  backups?: GatewayPlan[]
}

/** How to reach one gateway as a WireGuard peer. */
export interface GatewayPeer {
  /** The gateway's own tunnel address: the target of probes. */
  gatewayAddress: string
  /** What the tunnel routes: `<gatewayAddress>/32`. */
  allowedIps: string
  /** The gateway's WireGuard public key, base64. */
  peerPublicKey: string
  /** A lower-case name, a dotted quad, or an IPv6 address in RFC 5952 form (no brackets). */
  endpointHost: string
  endpointPort: number
  /** Seconds (0 = off). */
  persistentKeepalive: number
}

/**
 * Implementation limit: gateways per container. Control places two (primary and backup); a few
 * more leave room for a re-placement in flight, and the bound keeps a hostile list from making
 * the agent open tunnels to many hosts.
 */
export const MAX_GATEWAYS = 8
const GATEWAY_ID = /^[A-Za-z0-9._:-]{1,128}$/

/** Nesting deeper than this is not a tunnel_config (and the walk below stays bounded). */
const MAX_DEPTH = 8
const MAX_NAME_LENGTH = 253
const MAX_DOMAIN_LENGTH = 1024

// C0, DEL, C1, and the Unicode line and paragraph separators.
const CONTROL = /[\u0000-\u001f\u007f-\u009f\u2028\u2029]/

/** Checks a whole register answer; returns the plan and the canonical form to keep in the state file. */
export function checkRegistration (response: unknown): { plan: TunnelPlan, registration: Pick<RegisterTunnelResponse, 'tunnel_config' | 'domains'> } {
  if (!isRecord(response)) throw new TunnelConfigError('answer', 'not a JSON object')
  const checked = parseTunnelConfig(response.tunnel_config)
  return { plan: formatPlan(checked), registration: { tunnel_config: formatTunnelConfig(checked), domains: checkDomains(response.domains) } }
}

/** Checks the API's tunnel_config; throws TunnelConfigError naming the bad field. */
export function planFromConfig (config: unknown): TunnelPlan {
  return formatPlan(parseTunnelConfig(config))
}

export function parseTunnelConfig (config: unknown): CheckedTunnelConfig {
  if (!isRecord(config)) throw new TunnelConfigError('tunnel_config', 'not a JSON object')
  refuseControlCharacters(config, '', 0)
  const iface = config.interface
  if (!isRecord(iface)) throw new TunnelConfigError('interface', 'not a JSON object')
  const tunnelIp = parseHostPrefix(iface.address, 'interface.address', 'one IPv4 address with /32')
  const primary = parsePeer(config.peer, 'peer', tunnelIp)
  let gateways: CheckedGateway[] = [{ gatewayId: null, role: 'primary', region: null, ...primary }]
  // Older control planes send no `peers`: then `peer` is the only gateway.
  if (config.peers !== undefined && config.peers !== null) {
    gateways = parseGatewayList(config.peers, 'peers', tunnelIp)
    // The spec's `peer` is the primary: a list that disagrees with it is not one answer.
    if (!gateways[0].peerPublicKey.equals(primary.peerPublicKey) || gateways[0].gatewayIp !== primary.gatewayIp) {
      throw new TunnelConfigError('peers[0]', 'is not the same gateway as peer')
    }
  }
  const first = gateways[0]
  return { tunnelIp, gatewayIp: first.gatewayIp, peerPublicKey: first.peerPublicKey, endpoint: first.endpoint, persistentKeepalive: first.persistentKeepalive, gateways }
}

/**
 * A `peers` list (tunnel_config.peers, or the heartbeat's): 1-MAX_GATEWAYS gateways, primary
 * first, keys, addresses and ids distinct. Throws TunnelConfigError naming the field.
 */
export function checkGatewayList (value: unknown, tunnelIp: number, field = 'peers'): CheckedGateway[] {
  refuseControlCharacters(value, field, 1)
  return parseGatewayList(value, field, tunnelIp)
}

function parseGatewayList (value: unknown, field: string, tunnelIp: number): CheckedGateway[] {
  if (!Array.isArray(value)) throw new TunnelConfigError(field, 'not a list')
  if (value.length === 0) throw new TunnelConfigError(field, 'is empty')
  if (value.length > MAX_GATEWAYS) throw new TunnelConfigError(field, `lists ${value.length} gateways (at most ${MAX_GATEWAYS})`)
  const gateways: CheckedGateway[] = []
  const keys = new Set<string>()
  const addresses = new Set<number>()
  const ids = new Set<string>()
  for (let i = 0; i < value.length; i++) {
    const at = `${field}[${i}]`
    const entry: unknown = value[i]
    if (!isRecord(entry)) throw new TunnelConfigError(at, 'not a JSON object')
    const peer = parsePeer(entry, at, tunnelIp)
    const id = entry.gateway_id
    if (typeof id !== 'string' || !GATEWAY_ID.test(id)) throw new TunnelConfigError(`${at}.gateway_id`, `must be 1-128 of A-Z a-z 0-9 . _ : -${shown(id)}`)
    const role = entry.role
    const expectedRole: GatewayRole = i === 0 ? 'primary' : 'backup'
    if (role !== expectedRole) throw new TunnelConfigError(`${at}.role`, `must be "${expectedRole}" (the primary first, then backups)${shown(role)}`)
    const region = entry.region === undefined ? null : entry.region
    if (region !== null && (typeof region !== 'string' || !REGION_NAME.test(region))) throw new TunnelConfigError(`${at}.region`, `must be null or a lower-case region name${shown(region)}`)
    const key = peer.peerPublicKey.toString('base64')
    if (keys.has(key)) throw new TunnelConfigError(`${at}.public_key`, 'the same gateway key is listed twice')
    // Two peers with one allowed IP: WireGuard's cryptokey routing would give it to only one.
    if (addresses.has(peer.gatewayIp)) throw new TunnelConfigError(`${at}.allowed_ips`, 'the same gateway address is listed twice')
    if (ids.has(id)) throw new TunnelConfigError(`${at}.gateway_id`, 'the same gateway id is listed twice')
    keys.add(key)
    addresses.add(peer.gatewayIp)
    ids.add(id)
    gateways.push({ gatewayId: id, role: expectedRole, region, ...peer })
  }
  return gateways
}

type CheckedPeer = Pick<CheckedGateway, 'gatewayIp' | 'peerPublicKey' | 'endpoint' | 'persistentKeepalive'>

function parsePeer (peer: unknown, field: string, tunnelIp: number): CheckedPeer {
  if (!isRecord(peer)) throw new TunnelConfigError(field, 'not a JSON object')
  const gatewayIp = parseHostPrefix(peer.allowed_ips, `${field}.allowed_ips`, 'the gateway\'s single address with /32 (nothing wider, one entry)')
  if (gatewayIp === tunnelIp) throw new TunnelConfigError(`${field}.allowed_ips`, 'the gateway\'s address is our own interface.address')

  if (typeof peer.public_key !== 'string') throw new TunnelConfigError(`${field}.public_key`, 'not a string')
  let peerPublicKey: Buffer
  try {
    peerPublicKey = decodeKey(peer.public_key)
  } catch {
    throw new TunnelConfigError(`${field}.public_key`, `must be ${KEY_LEN} bytes in canonical base64 (44 characters)`)
  }

  const endpoint = parseEndpoint(peer.endpoint, `${field}.endpoint`)

  const keepalive = peer.persistent_keepalive === undefined ? 0 : peer.persistent_keepalive
  if (typeof keepalive !== 'number' || !Number.isInteger(keepalive) || keepalive < 0 || keepalive > 65535) {
    throw new TunnelConfigError(`${field}.persistent_keepalive`, `must be an integer 0-65535${shown(keepalive)}`)
  }
  return { gatewayIp, peerPublicKey, endpoint, persistentKeepalive: keepalive }
}

export function formatPlan (c: CheckedTunnelConfig): TunnelPlan {
  const address = formatIPv4(c.tunnelIp)
  const [primary, ...backups] = c.gateways.map(formatGateway)
  const plan: TunnelPlan = {
    address,
    addressCidr: `${address}/32`,
    gatewayAddress: primary.gatewayAddress,
    allowedIps: primary.allowedIps,
    peerPublicKey: primary.peerPublicKey,
    endpointHost: primary.endpointHost,
    endpointPort: primary.endpointPort,
    persistentKeepalive: primary.persistentKeepalive,
  }
  // An older control plane's answer keeps the plan it always had.
  if (primary.gatewayId !== null) {
    plan.gatewayId = primary.gatewayId
    plan.region = primary.region
    plan.backups = backups
  }
  return plan
}

function formatGateway (g: CheckedGateway): GatewayPlan {
  const gatewayAddress = formatIPv4(g.gatewayIp)
  return {
    gatewayId: g.gatewayId,
    role: g.role,
    region: g.region,
    gatewayAddress,
    allowedIps: `${gatewayAddress}/32`,
    peerPublicKey: encodeKey(g.peerPublicKey),
    endpointHost: formatHost(g.endpoint.host),
    endpointPort: g.endpoint.port,
    persistentKeepalive: g.persistentKeepalive,
  }
}

/** Every gateway of a plan, primary first. */
export function planGateways (plan: TunnelPlan): GatewayPlan[] {
  const primary: GatewayPlan = {
    gatewayId: plan.gatewayId ?? null,
    role: 'primary',
    region: plan.region ?? null,
    gatewayAddress: plan.gatewayAddress,
    allowedIps: plan.allowedIps,
    peerPublicKey: plan.peerPublicKey,
    endpointHost: plan.endpointHost,
    endpointPort: plan.endpointPort,
    persistentKeepalive: plan.persistentKeepalive,
  }
  return [primary, ...(plan.backups ?? [])]
}

/** The plan for the same tunnel address with another set of gateways (a heartbeat's `peers`). */
export function planWithGateways (plan: TunnelPlan, gateways: CheckedGateway[]): TunnelPlan {
  const checked = checkPlan(plan)
  const first = gateways[0]
  return formatPlan({ tunnelIp: checked.tunnelIp, gatewayIp: first.gatewayIp, peerPublicKey: first.peerPublicKey, endpoint: first.endpoint, persistentKeepalive: first.persistentKeepalive, gateways })
}

/** The canonical tunnel_config (what the state file keeps): only the known fields, re-formatted. */
export function formatTunnelConfig (c: CheckedTunnelConfig): TunnelConfig {
  const plan = formatPlan(c)
  const config: TunnelConfig = {
    interface: { address: plan.addressCidr },
    peer: { public_key: plan.peerPublicKey, endpoint: formatEndpoint(c.endpoint), allowed_ips: plan.allowedIps, persistent_keepalive: plan.persistentKeepalive },
  }
  if (c.gateways[0].gatewayId !== null) {
    config.peers = c.gateways.map(g => ({
      gateway_id: g.gatewayId!,
      role: g.role,
      region: g.region,
      public_key: encodeKey(g.peerPublicKey),
      endpoint: formatEndpoint(g.endpoint),
      allowed_ips: `${formatIPv4(g.gatewayIp)}/32`,
      persistent_keepalive: g.persistentKeepalive,
    }))
  }
  return config
}

/**
 * Parses a plan again (for the writers: a plan built any other way than planFromConfig must not
 * reach a file unchecked). Throws TunnelConfigError.
 */
export function checkPlan (plan: TunnelPlan): CheckedTunnelConfig {
  const gateways = planGateways(plan)
  const peerOf = (g: GatewayPlan): Record<string, unknown> => {
    const host = g.endpointHost.includes(':') ? `[${g.endpointHost}]` : g.endpointHost
    return { public_key: g.peerPublicKey, endpoint: `${host}:${String(g.endpointPort)}`, allowed_ips: g.allowedIps, persistent_keepalive: g.persistentKeepalive }
  }
  const fleet = gateways.some(g => g.gatewayId !== null)
  if (!fleet && gateways.length > 1) throw new TunnelConfigError('peers', 'more than one gateway needs gateway ids')
  const checked = parseTunnelConfig({
    interface: { address: plan.addressCidr },
    peer: peerOf(gateways[0]),
    ...(fleet ? { peers: gateways.map(g => ({ ...peerOf(g), gateway_id: g.gatewayId, role: g.role, region: g.region })) } : {}),
  })
  const again = formatPlan(checked)
  if (again.address !== plan.address) throw new TunnelConfigError('interface.address', 'the plan\'s address and address/32 differ')
  const formatted = planGateways(again)
  for (let i = 0; i < gateways.length; i++) {
    if (formatted[i].gatewayAddress !== gateways[i].gatewayAddress) throw new TunnelConfigError(i === 0 ? 'peer.allowed_ips' : `peers[${i}].allowed_ips`, 'the plan\'s gateway address and allowed IPs differ')
  }
  return checked
}

export function formatEndpoint (endpoint: { host: EndpointHost, port: number }): string {
  return formatHostPort(formatHost(endpoint.host), endpoint.port)
}

export function formatHost (host: EndpointHost): string {
  if (host.kind === 'ipv4') return formatIPv4(host.address)
  if (host.kind === 'name') return host.labels.join('.')
  return formatIPv6(host.groups)
}

// ---- fields ----

/** `a.b.c.d/32` only: the explicit /32, no spaces, no list. */
function parseHostPrefix (value: unknown, field: string, expected: string): number {
  if (typeof value !== 'string') throw new TunnelConfigError(field, 'not a string')
  const m = /^([0-9.]{7,15})\/32$/.exec(value)
  let address: number
  try {
    if (m === null) throw new Error('shape')
    address = parseIPv4Address(m[1])
  } catch {
    throw new TunnelConfigError(field, `must be ${expected}${shown(value)}`)
  }
  const special = specialPurpose(address)
  if (special !== null) throw new TunnelConfigError(field, `is ${special} address${shown(value)}`)
  return address
}

/**
 * Addresses that would take over the container's own traffic if routed into the tunnel, or are no
 * unicast destination at all.
 */
function specialPurpose (address: number): string | null {
  const first = address >>> 24
  if (first === 0) return 'a "this network"' // RFC 1122 3.2.1.3 (a)
  if (first === 127) return 'a loopback' // RFC 1122 3.2.1.3 (g)
  if ((address >>> 16) === 0xa9fe) return 'a link-local' // RFC 3927 (169.254/16, cloud metadata services)
  if (first >= 224) return 'a multicast, reserved or broadcast' // RFC 5771, RFC 1112 4, RFC 919 7
  return null
}

function parseEndpoint (value: unknown, field: string): { host: EndpointHost, port: number } {
  if (typeof value !== 'string') throw new TunnelConfigError(field, 'not a string')
  const expected = `must be host:port (an RFC 1123 name, an IPv4 address or a bracketed IPv6 address; port 1-65535)${shown(value)}`
  const m = /^(?:\[([0-9A-Fa-f:.]{2,45})\]|([A-Za-z0-9.-]{1,253})):([0-9]{1,5})$/.exec(value)
  if (m === null) throw new TunnelConfigError(field, expected)
  // No leading zeros: one spelling per port.
  if (!/^[1-9][0-9]*$/.test(m[3]) || Number(m[3]) > 65535) throw new TunnelConfigError(field, expected)
  const port = Number(m[3])
  let host: EndpointHost | null
  if (m[1] !== undefined) {
    const groups = parseIPv6(m[1])
    host = groups === null || groups.every(g => g === 0) ? null : { kind: 'ipv6', groups }
  } else if (/^[0-9.]+$/.test(m[2])) {
    host = null
    try {
      const address = parseIPv4Address(m[2])
      if (address !== 0) host = { kind: 'ipv4', address }
    } catch { /* not a dotted quad */ }
  } else {
    const labels = parseHostName(m[2])
    host = labels === null ? null : { kind: 'name', labels }
  }
  if (host === null) throw new TunnelConfigError(field, expected)
  return { host, port }
}

// RFC 1123 2.1: letters, digits and hyphens, a digit may come first; RFC 1035 2.3.4: 1-63 octets.
const LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/

/** Lower-cased labels (RFC 4343: names compare case-insensitively), or null. */
function parseHostName (text: string): string[] | null {
  if (text.length > MAX_NAME_LENGTH) return null
  const labels = text.split('.')
  if (!labels.every(l => LABEL.test(l))) return null
  // RFC 3696 2: a top-level label is never all-numeric (getaddrinfo would read "10.1" as an address).
  if (/^[0-9]+$/.test(labels[labels.length - 1])) return null
  return labels.map(l => l.toLowerCase())
}

/** RFC 4291 2.2 text forms (no zone index) into eight 16-bit groups, or null. */
function parseIPv6 (text: string): number[] | null {
  const halves = text.split('::')
  if (halves.length > 2) return null
  const groups = (part: string, last: boolean): number[] | null => {
    if (part === '') return []
    const pieces = part.split(':')
    const out: number[] = []
    for (let i = 0; i < pieces.length; i++) {
      const piece = pieces[i]
      if (last && i === pieces.length - 1 && piece.includes('.')) {
        // RFC 4291 2.2 (3): the low 32 bits as a dotted quad.
        try {
          const v4 = parseIPv4Address(piece)
          out.push(v4 >>> 16, v4 & 0xffff)
        } catch {
          return null
        }
      } else if (/^[0-9A-Fa-f]{1,4}$/.test(piece)) {
        out.push(parseInt(piece, 16))
      } else {
        return null
      }
    }
    return out
  }
  const head = groups(halves[0], halves.length === 1)
  const tail = halves.length === 2 ? groups(halves[1], true) : []
  if (head === null || tail === null) return null
  if (halves.length === 1) return head.length === 8 ? head : null
  const zeros = 8 - head.length - tail.length
  // RFC 4291 2.2 (2): "::" stands for one or more groups of zeros.
  if (zeros < 1) return null
  return [...head, ...new Array<number>(zeros).fill(0), ...tail]
}

/** RFC 5952 4: lower case, no leading zeros, the longest run (2+) of zero groups as "::", the first on a tie. */
function formatIPv6 (groups: number[]): string {
  let bestStart = -1
  let bestLength = 1
  for (let i = 0; i < groups.length;) {
    if (groups[i] !== 0) {
      i++
      continue
    }
    let j = i
    while (j < groups.length && groups[j] === 0) j++
    if (j - i > bestLength) {
      bestStart = i
      bestLength = j - i
    }
    i = j
  }
  const hex = (gs: number[]): string => gs.map(g => g.toString(16)).join(':')
  if (bestStart < 0) return hex(groups)
  return `${hex(groups.slice(0, bestStart))}::${hex(groups.slice(bestStart + bestLength))}`
}

// ---- the rest of the answer ----

function checkDomains (value: unknown): RegisterTunnelResponse['domains'] {
  if (!isRecord(value)) throw new TunnelConfigError('domains', 'not a JSON object')
  refuseControlCharacters(value, 'domains', 0)
  const { subdomain, custom_domains: custom } = value
  if (typeof subdomain !== 'string' || subdomain.length === 0 || subdomain.length > MAX_NAME_LENGTH) throw new TunnelConfigError('domains.subdomain', 'must be a domain name')
  if (!Array.isArray(custom) || !custom.every(d => typeof d === 'string' && d.length > 0 && d.length <= MAX_DOMAIN_LENGTH)) {
    throw new TunnelConfigError('domains.custom_domains', 'must be a list of domain names')
  }
  return { subdomain, custom_domains: custom as string[] }
}

/** Walks keys and values (bounded by MAX_DEPTH); a control character anywhere refuses the lot. `path` '' is the root. */
function refuseControlCharacters (value: unknown, path: string, depth: number): void {
  if (typeof value === 'string') {
    if (CONTROL.test(value)) throw new TunnelConfigError(path, 'holds a control character')
    return
  }
  if (typeof value !== 'object' || value === null) return
  if (depth >= MAX_DEPTH) throw new TunnelConfigError(path, 'nested too deeply')
  for (const [key, inner] of Object.entries(value)) {
    const name = CONTROL.test(key) ? '?' : key
    const innerPath = Array.isArray(value) ? `${path}[${key}]` : path === '' ? name : `${path}.${name}`
    if (CONTROL.test(key)) throw new TunnelConfigError(innerPath, 'a key holds a control character')
    refuseControlCharacters(inner, innerPath, depth + 1)
  }
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** ` (got "…")` for short values of address and key characters only: a hostile answer is not echoed into logs. */
function shown (value: unknown): string {
  const text = typeof value === 'string' ? value : typeof value === 'number' ? String(value) : null
  if (text === null || text.length > 64 || !/^[A-Za-z0-9.:/[\]+=_-]*$/.test(text)) return ''
  return ` (got ${JSON.stringify(text)})`
}
