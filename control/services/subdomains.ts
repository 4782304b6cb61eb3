/**
 * Subdomains: which labels are valid, which are reserved for our own services, which are free, and
 * free alternatives to offer when one is not.
 *
 * A subdomain is one DNS label under the base domain, in the LDH form browsers and certificate
 * authorities accept without surprises: 1-63 characters (RFC 1035 2.3.4) of a-z, 0-9 and hyphen,
 * no hyphen first or last (RFC 1123 2.1), stored lower-case.
 */
import { randomInt } from 'node:crypto'
import type { Queryable } from '../db/knex.ts'

export const SUBDOMAIN_MAX_LENGTH = 63
export const SUBDOMAIN_PATTERN = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

/**
 * Names our own services use or may use (API, dashboard, WireGuard endpoint, the CNAME target of
 * custom domains), mail and DNS conventions, and names that invite phishing of our users.
 * Names that mail and web clients look up under a domain and trust are here too: whoever held
 * them could publish keys or policy for the whole base domain (openpgpkey: OpenPGP WKD; mta-sts:
 * RFC 8461; autoconfig/autodiscover: mail client set-up; wpad: proxy auto-discovery; isatap:
 * RFC 5214). `_`-prefixed names (_dmarc, _acme-challenge, _mta-sts) never pass SUBDOMAIN_PATTERN.
 */
export const RESERVED_SUBDOMAINS: ReadonlySet<string> = new Set([
  'www', 'api', 'dashboard', 'connect', 'tunnel', 'tunnels', 'mail', 'admin', 'administrator',
  'app', 'apps', 'auth', 'login', 'signin', 'signup', 'register', 'account', 'accounts', 'billing',
  'pay', 'payment', 'payments', 'checkout', 'status', 'health', 'docs', 'doc', 'help', 'support',
  'blog', 'news', 'about', 'static', 'assets', 'cdn',
  'gateway', 'edge', 'relay', 'proxy', 'vpn', 'wg', 'wireguard', 'internal', 'intranet', 'control',
  'console', 'portal', 'root', 'system', 'security', 'abuse', 'postmaster', 'hostmaster', 'webmaster',
  'noreply', 'no-reply', 'smtp', 'imap', 'pop', 'pop3', 'mx', 'email', 'webmail', 'autodiscover',
  'autoconfig', 'ns', 'ns1', 'ns2', 'ns3', 'ns4', 'dns', 'ftp', 'sftp', 'ssh', 'git', 'acme',
  'erugo', 'cloud', 'localhost', 'local', 'test', 'dev', 'staging', 'demo', 'beta', 'example',
  'openpgpkey', 'mta-sts', 'wpad', 'isatap',
])

export type LabelVerdict = 'ok' | 'invalid' | 'reserved'

/** RFC 5891 4.2.3.1: hyphens in positions 3 and 4 are reserved (xn-- is punycode: lookalike names). */
function hasReservedHyphens (label: string): boolean {
  return label.length >= 4 && label[2] === '-' && label[3] === '-'
}

/** Lower-cases and trims; say nothing about validity. */
export function normalizeSubdomain (value: string): string {
  return value.trim().toLowerCase()
}

export function classifySubdomain (label: string): LabelVerdict {
  if (label.length === 0 || label.length > SUBDOMAIN_MAX_LENGTH || !SUBDOMAIN_PATTERN.test(label)) return 'invalid'
  if (hasReservedHyphens(label)) return 'invalid'
  if (RESERVED_SUBDOMAINS.has(label)) return 'reserved'
  return 'ok'
}

/** A human-readable reason for a verdict other than 'ok' (used in VALIDATION_ERROR field messages). */
export function verdictMessage (verdict: LabelVerdict): string {
  return verdict === 'reserved'
    ? 'is reserved'
    : 'must be 1-63 characters of a-z, 0-9 and hyphens, not starting or ending with a hyphen'
}

/** `base` with `suffix`, the base cut so the result stays a valid label. */
function withSuffix (base: string, suffix: string): string {
  const room = SUBDOMAIN_MAX_LENGTH - suffix.length
  const head = base.slice(0, room).replace(/-+$/, '')
  return head + suffix
}

/** Candidate alternatives in the order we prefer them. */
export function suggestionCandidates (base: string, year: number): string[] {
  const cleaned = base.replace(/[^a-z0-9-]/g, '').replace(/^-+|-+$/g, '') || 'erugo'
  const candidates = [
    withSuffix(cleaned, '1'),
    withSuffix(cleaned, '-share'),
    withSuffix(cleaned, String(year)),
    withSuffix(cleaned, '2'),
    withSuffix(cleaned, '-files'),
    withSuffix(cleaned, '-cloud'),
    withSuffix(cleaned, '3'),
  ]
  for (let i = 0; i < 8; i++) candidates.push(withSuffix(cleaned, `-${randomInt(1000, 100_000)}`))
  return [...new Set(candidates)].filter(c => classifySubdomain(c) === 'ok' && c !== base)
}

export const SUGGESTION_COUNT = 3

export interface SubdomainServiceOptions {
  db: Queryable
  now: () => Date
  /** How long a released subdomain stays reserved for its previous owner (CC_SUBDOMAIN_QUARANTINE). */
  quarantineSeconds: number
}

/**
 * Which labels are free. A label is held by the instance that has it, and after a rename or a
 * delete by its previous owner for the quarantine (released_subdomains): links shared under the
 * old name must not reach someone else's instance. The owner may take it back meanwhile.
 */
export class SubdomainService {
  readonly #db: Queryable
  readonly #now: () => Date
  readonly #quarantineMs: number

  constructor (options: SubdomainServiceOptions) {
    this.#db = options.db
    this.#now = options.now
    this.#quarantineMs = options.quarantineSeconds * 1000
  }

  #cutoff (): Date {
    return new Date(this.#now().getTime() - this.#quarantineMs)
  }

  /**
   * Labels among `labels` that `userId` cannot take: an instance has them, or they are in another
   * account's quarantine. Instances are read first: a rename committing between the two reads
   * is seen as held by the instance, never as free.
   */
  async #held (labels: string[], userId: string, db: Queryable): Promise<Set<string>> {
    const held = new Set((await db('instances').whereIn('subdomain', labels).select('subdomain') as Array<{ subdomain: string }>).map(r => r.subdomain))
    const quarantined = await db('released_subdomains').whereIn('subdomain', labels).where('released_at', '>', this.#cutoff())
      .where(q => { void q.whereNull('user_id').orWhereNot('user_id', userId) })
      .select('subdomain') as Array<{ subdomain: string }>
    for (const r of quarantined) held.add(r.subdomain)
    return held
  }

  /** True when `userId` may take `label` now (the label must be valid and not reserved to be usable). */
  async isFree (label: string, userId: string, db: Queryable = this.#db): Promise<boolean> {
    return (await this.#held([label], userId, db)).size === 0
  }

  /**
   * Records that `userId` gave `label` up (call in the transaction of the rename or delete); it
   * stays theirs for the quarantine. Quarantines already over are forgotten on the way.
   */
  async release (db: Queryable, label: string, userId: string): Promise<void> {
    const now = this.#now()
    await db('released_subdomains').where('released_at', '<=', this.#cutoff()).delete()
    await db('released_subdomains').insert({ subdomain: label, user_id: userId, released_at: now })
      .onConflict('subdomain').merge(['user_id', 'released_at'])
  }

  /** Up to SUGGESTION_COUNT valid, unreserved labels near `base` that `userId` could take. */
  async suggestionsFor (base: string, userId: string, db: Queryable = this.#db): Promise<string[]> {
    const candidates = suggestionCandidates(base, this.#now().getUTCFullYear())
    const held = await this.#held(candidates, userId, db)
    return candidates.filter(c => !held.has(c)).slice(0, SUGGESTION_COUNT)
  }

  /** The check endpoint's answer for `userId`: free, or not with suggestions. `label` must be valid. */
  async check (label: string, userId: string): Promise<{ available: boolean, suggestions?: string[] }> {
    if (classifySubdomain(label) === 'ok' && await this.isFree(label, userId)) return { available: true }
    return { available: false, suggestions: await this.suggestionsFor(label, userId) }
  }
}
