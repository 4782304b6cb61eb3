/**
 * DNS checks behind custom-domain verification, through configurable resolvers with a timeout
 * (node's dns.promises.Resolver: c-ares, no system cache in the way).
 *
 * A domain is verified when either
 *   - its CNAME points at the instance's target `<instance id>.tunnel.<base domain>` (directly or
 *     through a short chain of CNAMEs), or
 *   - it proves ownership with a TXT record `_erugo-verify.<domain>` = `erugo-verify=<token>` and
 *     every A/AAAA record of the name is a gateway address. This is the path for a zone apex,
 *     which cannot hold a CNAME (RFC 1034 3.6.2), and for providers that flatten CNAMEs.
 *
 * Each failure carries a reason and whether it is definitive: NXDOMAIN, a missing or wrong record
 * say something about the domain; a timeout or SERVFAIL only about the path to it, so the periodic
 * re-check never takes a domain down for those.
 */
import { Resolver } from 'node:dns/promises'

export const OWNERSHIP_LABEL = '_erugo-verify'
export const OWNERSHIP_PREFIX = 'erugo-verify='
/** Longest CNAME chain followed (resolvers themselves stop around 8-16). */
const MAX_CNAME_HOPS = 8

export type DnsFailureReason =
  | 'record_not_found' | 'wrong_target' | 'nxdomain' | 'ownership_not_found' | 'ownership_mismatch'
  | 'wrong_address' | 'timeout' | 'servfail' | 'lookup_failed'

export type DnsCheck =
  | { ok: true, method: 'cname' | 'ownership' }
  | { ok: false, reason: DnsFailureReason, message: string, definitive: boolean }

/** The resolver calls we make (node's Resolver has them; tests may substitute). */
export interface DnsLookup {
  resolveCname (name: string): Promise<string[]>
  resolveTxt (name: string): Promise<string[][]>
  resolve4 (name: string): Promise<string[]>
  resolve6 (name: string): Promise<string[]>
}

export interface DnsVerifierOptions {
  /** `ip` or `ip:port`; empty: the system's resolvers. */
  servers: string[]
  timeoutMs: number
  tries: number
  /** The gateway's public addresses; empty: whatever the tunnel target resolves to. */
  gatewayAddresses: string[]
  /** Replaces the resolver (tests). */
  lookup?: DnsLookup
}

export interface DomainToCheck {
  domain: string
  apex: boolean
  token: string
  /** `<instance id>.tunnel.<base domain>`. */
  target: string
}

const DEFINITIVE = new Set<DnsFailureReason>(['record_not_found', 'wrong_target', 'nxdomain', 'ownership_not_found', 'ownership_mismatch', 'wrong_address'])

function fail (reason: DnsFailureReason, message: string): DnsCheck {
  return { ok: false, reason, message, definitive: DEFINITIVE.has(reason) }
}

function canonicalName (name: string): string {
  return name.toLowerCase().replace(/\.$/, '')
}

/** One spelling per address (`2001:DB8::0:1` and `2001:db8::1` are the same). */
export function canonicalAddress (address: string): string {
  if (!address.includes(':')) return address
  try {
    return new URL(`http://[${address}]/`).hostname.slice(1, -1)
  } catch {
    return address.toLowerCase()
  }
}

function codeOf (err: unknown): string {
  return String((err as { code?: unknown }).code ?? '')
}

/** A lookup error other than "no such record" as a failure; undefined for ENODATA. */
function lookupFailure (err: unknown, name: string): DnsCheck | undefined {
  switch (codeOf(err)) {
    case 'ENODATA': return undefined
    case 'ENOTFOUND': return fail('nxdomain', `${name} does not exist (NXDOMAIN)`)
    case 'ETIMEOUT': return fail('timeout', `DNS lookup of ${name} timed out`)
    case 'ESERVFAIL': return fail('servfail', `DNS server failure (SERVFAIL) looking up ${name}`)
    default: return fail('lookup_failed', `DNS lookup of ${name} failed (${codeOf(err) || 'error'})`)
  }
}

export class DnsVerifier {
  readonly #lookup: DnsLookup
  readonly #gatewayAddresses: string[]

  constructor (options: DnsVerifierOptions) {
    if (options.lookup !== undefined) {
      this.#lookup = options.lookup
    } else {
      const resolver = new Resolver({ timeout: options.timeoutMs, tries: options.tries })
      if (options.servers.length > 0) resolver.setServers(options.servers)
      this.#lookup = resolver
    }
    this.#gatewayAddresses = options.gatewayAddresses.map(canonicalAddress)
  }

  /** Configured gateway addresses (empty: resolved from the target at check time). */
  get gatewayAddresses (): string[] {
    return [...this.#gatewayAddresses]
  }

  /** CNAME first; where the name has none, the ownership path. */
  async check (d: DomainToCheck): Promise<DnsCheck> {
    const cname = await this.checkCname(d.domain, d.target)
    if (cname.ok || cname.reason !== 'record_not_found') return cname
    const ownership = await this.checkOwnership(d)
    if (ownership.ok) return ownership
    // A name below the zone with neither: the CNAME is what we asked for, say that.
    if (!d.apex && ownership.reason === 'ownership_not_found') return cname
    return ownership
  }

  async checkCname (domain: string, target: string): Promise<DnsCheck> {
    const want = canonicalName(target)
    let name = domain
    let first: string | undefined
    for (let hop = 0; hop < MAX_CNAME_HOPS; hop++) {
      let answers: string[]
      try {
        answers = await this.#lookup.resolveCname(name)
      } catch (err) {
        const failure = lookupFailure(err, name)
        if (failure !== undefined) return failure
        answers = []
      }
      if (answers.length === 0) {
        return hop === 0 ? fail('record_not_found', 'CNAME record not found') : fail('wrong_target', `CNAME record points to ${first}, expected ${target}`)
      }
      const next = canonicalName(answers[0])
      first ??= next
      if (next === want) return { ok: true, method: 'cname' }
      name = next
    }
    return fail('wrong_target', `CNAME record points to ${first}, expected ${target}`)
  }

  async checkOwnership (d: DomainToCheck): Promise<DnsCheck> {
    const txtName = `${OWNERSHIP_LABEL}.${d.domain}`
    const expected = `${OWNERSHIP_PREFIX}${d.token}`
    let texts: string[]
    try {
      texts = (await this.#lookup.resolveTxt(txtName)).map(chunks => chunks.join(''))
    } catch (err) {
      const failure = lookupFailure(err, txtName)
      if (failure !== undefined && failure.ok === false && failure.reason !== 'nxdomain') return failure
      texts = []
    }
    if (texts.length === 0) return fail('ownership_not_found', `TXT record ${txtName} not found`)
    if (!texts.includes(expected)) return fail('ownership_mismatch', `TXT record ${txtName} does not contain ${expected}`)

    const addresses = await this.#addressesOf(d.domain)
    if (!Array.isArray(addresses)) return addresses
    if (addresses.length === 0) return fail('record_not_found', `No A or AAAA record found for ${d.domain}`)
    let gateway = this.#gatewayAddresses
    if (gateway.length === 0) {
      const resolved = await this.#addressesOf(canonicalName(d.target))
      if (!Array.isArray(resolved) || resolved.length === 0) {
        return fail('lookup_failed', `Could not find the gateway's address: ${d.target} ${Array.isArray(resolved) ? 'has no A or AAAA record' : resolved.ok ? '' : resolved.message}`)
      }
      gateway = resolved
    }
    const stray = addresses.filter(a => !gateway.includes(a))
    if (stray.length > 0) return fail('wrong_address', `${stray.join(', ')} ${stray.length === 1 ? 'is' : 'are'} not a gateway address (expected ${gateway.join(', ')})`)
    return { ok: true, method: 'ownership' }
  }

  /** A and AAAA records of `name` (canonical), or the failure. */
  async #addressesOf (name: string): Promise<string[] | DnsCheck> {
    const out: string[] = []
    for (const query of [this.#lookup.resolve4.bind(this.#lookup), this.#lookup.resolve6.bind(this.#lookup)]) {
      try {
        out.push(...(await query(name)).map(canonicalAddress))
      } catch (err) {
        const failure = lookupFailure(err, name)
        if (failure !== undefined) return failure
      }
    }
    return out
  }
}
