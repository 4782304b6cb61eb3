/**
 * Challenge solvers. Each presents a challenge before the CA is told to validate and removes it
 * afterwards (RFC 8555 8). HTTP-01 answers on the edge's HTTP listener (it is the edge's
 * ChallengeResponder); DNS-01 goes through a DnsProvider (dns-provider.ts).
 */
import type { ChallengeResponder } from '../http-listener.ts'

export type ChallengeType = 'http-01' | 'tls-alpn-01' | 'dns-01'

export interface ChallengeSolver {
  readonly type: ChallengeType
  /** Make `keyAuthorization` answerable for (identifier, token) before validation starts. */
  present (identifier: string, token: string, keyAuthorization: string): Promise<void>
  /** Remove it again (always called, success or not). */
  cleanup (identifier: string, token: string): Promise<void>
}

/**
 * HTTP-01 (RFC 8555 8.3): the key authorization at /.well-known/acme-challenge/<token> of the
 * identifier. In memory: the CA validates against the gateway that placed the order, because the
 * order's lock keeps the other gateways out while it runs. (Behind a load balancer that spreads
 * port 80 over several gateways, use a shared responder or DNS-01.)
 */
export class HttpChallenges implements ChallengeSolver, ChallengeResponder {
  readonly type = 'http-01'
  private readonly answers = new Map<string, string>()

  async present (identifier: string, token: string, keyAuthorization: string): Promise<void> {
    this.answers.set(`${identifier}/${token}`, keyAuthorization)
  }

  async cleanup (identifier: string, token: string): Promise<void> {
    this.answers.delete(`${identifier}/${token}`)
  }

  keyAuthorization (host: string, token: string): string | undefined {
    return this.answers.get(`${host}/${token}`)
  }

  get size (): number {
    return this.answers.size
  }
}
