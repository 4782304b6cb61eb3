/**
 * DNS-01 (RFC 8555 8.4): a TXT record `_acme-challenge.<domain>` holding the base64url SHA-256 of
 * the key authorization (acme-client computes that value). Needed for wildcard certificates
 * (RFC 8555 7.1.3: wildcards are validated by DNS only).
 *
 * Adding a provider: implement DnsProvider for your DNS host's API (Cloudflare, Route 53, ...):
 * setTxt adds one TXT value at the name (several may exist at once: a wildcard and its base domain
 * share the name) and resolves once the authoritative servers answer it (poll them if the API is
 * asynchronous); clearTxt removes that value only. Then add an entry to DNS_PROVIDERS below: its
 * key is the CC_ACME_DNS_PROVIDER value, its settings the environment variables it reads (named
 * CC_ACME_DNS_<PROVIDER>_<SETTING>, each with a joi schema; gateway/control/env.ts validates them
 * with one-line errors), and create() builds the provider from their values. The gateway then
 * adds `new DnsChallenges(provider)` to the AcmeIssuer's solvers.
 */
import Joi from 'joi'
import type { ChallengeSolver } from './challenges.ts'

export interface DnsProvider {
  setTxt (fqdn: string, value: string): Promise<void>
  clearTxt (fqdn: string, value: string): Promise<void>
}

export class DnsChallenges implements ChallengeSolver {
  readonly type = 'dns-01'
  private readonly values = new Map<string, string>()

  constructor (private readonly provider: DnsProvider) {}

  async present (identifier: string, token: string, keyAuthorization: string): Promise<void> {
    this.values.set(`${identifier}/${token}`, keyAuthorization)
    await this.provider.setTxt(`_acme-challenge.${identifier}.`, keyAuthorization)
  }

  async cleanup (identifier: string, token: string): Promise<void> {
    const value = this.values.get(`${identifier}/${token}`)
    this.values.delete(`${identifier}/${token}`)
    if (value !== undefined) await this.provider.clearTxt(`_acme-challenge.${identifier}.`, value)
  }
}

/**
 * pebble-challtestsrv's management API (POST /set-txt, /clear-txt): the DNS server pebble's VA
 * asks in tests and local set-ups. clear-txt drops every value at the name.
 */
export class ChalltestsrvDnsProvider implements DnsProvider {
  constructor (private readonly managementUrl: string) {}

  async setTxt (fqdn: string, value: string): Promise<void> {
    await this.post('/set-txt', { host: fqdn, value })
  }

  async clearTxt (fqdn: string): Promise<void> {
    await this.post('/clear-txt', { host: fqdn })
  }

  private async post (path: string, body: object): Promise<void> {
    const res = await fetch(new URL(path, this.managementUrl), { method: 'POST', body: JSON.stringify(body), signal: AbortSignal.timeout(10_000) })
    if (!res.ok) throw new Error(`challtestsrv ${path}: HTTP ${res.status}`)
  }
}

/** A DNS provider selectable by CC_ACME_DNS_PROVIDER. */
export interface DnsProviderDefinition {
  /** What it is, for --help. */
  summary: string
  /** Its settings: environment variable -> joi schema (`.required()` for the mandatory ones). */
  settings: Record<string, Joi.Schema>
  create (settings: Record<string, string>): DnsProvider
}

export const DNS_PROVIDERS: Record<string, DnsProviderDefinition> = {
  challtestsrv: {
    summary: "pebble-challtestsrv's management API (tests, local set-ups with pebble)",
    settings: {
      CC_ACME_DNS_CHALLTESTSRV_URL: Joi.string().uri({ scheme: ['http', 'https'] }).required()
        .messages({ 'string.uriCustomScheme': 'must be the http(s) URL of the management API', 'string.uri': 'must be the http(s) URL of the management API' }),
    },
    create: settings => new ChalltestsrvDnsProvider(settings.CC_ACME_DNS_CHALLTESTSRV_URL!),
  },
}

/** The configured provider (names and settings checked by gateway/control/env.ts). */
export function createDnsProvider (name: string, settings: Record<string, string>): DnsProvider {
  const definition = Object.hasOwn(DNS_PROVIDERS, name) ? DNS_PROVIDERS[name] : undefined
  if (definition === undefined) throw new Error(`unknown DNS provider ${JSON.stringify(name)}`)
  return definition.create(settings)
}
