/**
 * Custom domain names as users type them -> the one form we store and compare: lower-case ASCII,
 * IDNA A-labels (UTS #46 processing via WHATWG URL's domainToASCII), no trailing dot. Anything
 * that cannot be a public host name we can get a certificate for is refused with a reason.
 */
import { isIP } from 'node:net'
import { domainToASCII, domainToUnicode } from 'node:url'
import { getDomain } from 'tldts'

/** RFC 1035 2.3.4: 63 octets per label; 255 octets on the wire = 253 characters in text form. */
export const MAX_LABEL_LENGTH = 63
export const MAX_DOMAIN_LENGTH = 253

export interface NormalizedDomain {
  /** Stored form: `share.example.com`, `xn--bcher-kva.de`. */
  domain: string
  /** The registrable domain (public suffix + 1 label): where the user's DNS zone is assumed to be. */
  zone: string
  /** `domain` relative to `zone`: `share`, or `@` for the zone itself. */
  relativeName: string
  /** The zone itself cannot hold a CNAME (RFC 1034 3.6.2: a CNAME excludes every other record). */
  apex: boolean
}

/**
 * Special-use names: never delegated in the public DNS, so nobody can prove control of one and no
 * public CA issues for it. RFC 6761 6.2-6.5 (test, localhost, invalid, example), RFC 6762 (local),
 * RFC 7686 (onion), RFC 8375 (home.arpa), RFC 9476 (alt), ICANN's 2024 reservation of internal.
 * Checked after the base domain, so a test deployment on, say, erugo.test keeps its own reason.
 */
export const SPECIAL_USE_SUFFIXES: readonly string[] = ['test', 'localhost', 'invalid', 'example', 'local', 'onion', 'home.arpa', 'alt', 'internal']

export class DomainNameError extends Error {
  constructor (reason: string) {
    super(reason)
    this.name = 'DomainNameError'
  }
}

function refuse (reason: string): never {
  throw new DomainNameError(reason)
}

/**
 * UTS #39 5.2 "Highly Restrictive": a label uses one script, or Latin with Han and Japanese kana,
 * or Latin with Han and Hangul, or Latin with Han and Bopomofo. Mixing, say, Latin and Cyrillic
 * (`pаypal` with a Cyrillic `а`) is how look-alike names are made.
 */
const SCRIPTS = [
  'Latin', 'Greek', 'Cyrillic', 'Armenian', 'Hebrew', 'Arabic', 'Syriac', 'Thaana', 'Devanagari', 'Bengali',
  'Gurmukhi', 'Gujarati', 'Oriya', 'Tamil', 'Telugu', 'Kannada', 'Malayalam', 'Sinhala', 'Thai', 'Lao', 'Tibetan',
  'Myanmar', 'Georgian', 'Hangul', 'Ethiopic', 'Cherokee', 'Khmer', 'Mongolian', 'Hiragana', 'Katakana', 'Bopomofo', 'Han',
].map(name => ({ name, pattern: new RegExp(`^\\p{Script=${name}}$`, 'u') }))
const NEUTRAL = /^[\p{Script=Common}\p{Script=Inherited}]$/u
const ALLOWED_MIXES = [
  new Set(['Latin', 'Han', 'Hiragana', 'Katakana']),
  new Set(['Latin', 'Han', 'Hangul']),
  new Set(['Latin', 'Han', 'Bopomofo']),
]

export function scriptsOf (label: string): Set<string> {
  const scripts = new Set<string>()
  for (const ch of label) {
    if (NEUTRAL.test(ch)) continue
    scripts.add(SCRIPTS.find(s => s.pattern.test(ch))?.name ?? 'Other')
  }
  return scripts
}

function mixesScripts (label: string): boolean {
  const scripts = scriptsOf(label)
  if (scripts.size <= 1) return false
  return !ALLOWED_MIXES.some(mix => [...scripts].every(s => mix.has(s)))
}

function isIpLiteral (text: string): boolean {
  return isIP(text) !== 0 || (text.startsWith('[') && text.endsWith(']'))
}

/**
 * Normalises `input` or throws DomainNameError saying why it cannot be a custom domain.
 * `baseDomain`: ours; it and every name below it are refused (they are instances' subdomains).
 */
export function normalizeDomain (input: string, baseDomain: string): NormalizedDomain {
  let text = input.trim()
  if (text === '') refuse('is empty')
  if (text.includes('*')) refuse('wildcards are not allowed: add each name separately')
  if (isIpLiteral(text) || isIpLiteral(text.replace(/\.$/, ''))) refuse('must be a domain name, not an IP address')
  // One trailing dot is the fully qualified form of the same name.
  if (text.endsWith('.')) text = text.slice(0, -1)
  if (text.startsWith('.') || text.endsWith('.') || text.includes('..')) refuse('has an empty label (two dots in a row, or a dot at either end)')
  // domainToASCII parses a URL host: it would stop at '/', '?', '#' or '\\' and decode '%41'.
  if (/[\u0000-\u0020\u007f/\\?#@%:<>[\]^|"'`{}]/.test(text)) refuse('may contain only letters, digits, hyphens and dots')
  const ascii = domainToASCII(text)
  if (ascii === '') refuse('is not a valid domain name')
  // WHATWG URL reads numeric hosts such as `127.1` or `0x7f.1` as IPv4 addresses.
  if (isIP(ascii) !== 0) refuse('must be a domain name, not an IP address')
  if (ascii.length > MAX_DOMAIN_LENGTH) refuse(`is longer than ${MAX_DOMAIN_LENGTH} characters`)
  const labels = ascii.split('.')
  if (labels.length < 2) refuse('must include a top-level domain, e.g. share.example.com')
  for (const label of labels) {
    if (label === '') refuse('has an empty label (two dots in a row)')
    if (label.length > MAX_LABEL_LENGTH) refuse(`has a label longer than ${MAX_LABEL_LENGTH} characters`)
    if (!/^[a-z0-9-]+$/.test(label)) refuse('may contain only letters, digits and hyphens in each label')
    if (label.startsWith('-') || label.endsWith('-')) refuse('has a label starting or ending with a hyphen')
    if (label.slice(2, 4) === '--' && !label.startsWith('xn--')) refuse('has a label with hyphens in the third and fourth positions (RFC 5891 4.2.3.1)')
    if (label.startsWith('xn--')) {
      const unicode = domainToUnicode(label)
      if (unicode === '' || domainToASCII(unicode) !== label) refuse('has an invalid internationalised (xn--) label')
      if (mixesScripts(unicode)) refuse('mixes writing systems in one label (look-alike names are refused)')
    }
  }
  if (/^\d+$/.test(labels[labels.length - 1])) refuse('has an all-numeric top-level domain')
  if (ascii === baseDomain || ascii.endsWith(`.${baseDomain}`)) refuse(`is ${baseDomain} or a name below it: instances get those as subdomains`)
  const specialUse = SPECIAL_USE_SUFFIXES.find(suffix => ascii === suffix || ascii.endsWith(`.${suffix}`))
  if (specialUse !== undefined) refuse(`is under .${specialUse}, a special-use name that never resolves publicly (no certificate can be issued for it)`)
  const zone = getDomain(ascii, { allowPrivateDomains: true })
  if (zone === null) refuse('is a public suffix (such as co.uk), not a domain someone owns')
  return { domain: ascii, zone, relativeName: ascii === zone ? '@' : ascii.slice(0, -(zone.length + 1)), apex: ascii === zone }
}

/** The Unicode form for display (`bücher.de`); the stored ASCII form when it has none. */
export function displayDomain (domain: string): string {
  return domainToUnicode(domain) || domain
}
