/**
 * The ACME issuer (RFC 8555) over acme-client: one order per call for exactly one name, solved
 * with the first configured challenge type the CA offers for it (wildcards: DNS-01 only, RFC 8555
 * 7.1.3). Policy lives elsewhere: the CertificateManager decides which names (listed only), holds
 * the store's lock (one order per name across gateways), renews and backs off; this class adds
 * the per-account orders budget and turns the CA's Retry-After into IssuerError.retryAfterMs.
 */
import https from 'node:https'
import tls from 'node:tls'
import { AsyncLocalStorage } from 'node:async_hooks'
import type { Logger } from 'pino'
import * as acme from 'acme-client'
import type { CertStore } from '../cert-store.ts'
import { IssuerError, type Issuer, type IssuedCertificate } from '../issuer.ts'
import type { ChallengeSolver, ChallengeType } from './challenges.ts'
import { OrderBudget, type OrderBudgetOptions } from './budget.ts'
import { loadOrCreateAccountKey } from './account.ts'

export const LETS_ENCRYPT_STAGING = 'https://acme-staging-v02.api.letsencrypt.org/directory'
export const LETS_ENCRYPT_PRODUCTION = 'https://acme-v02.api.letsencrypt.org/directory'

export interface AcmeIssuerOptions {
  directoryUrl: string
  /** Account contact (CC_ACME_EMAIL). */
  email?: string
  /** Extra PEM roots to trust for the directory (pebble, a private CA); public roots stay trusted. */
  caBundlePem?: string
  /** Account key and certificates live here (shared store: one account for the fleet). */
  store: CertStore
  /** Solvers in order of preference. */
  solvers: ChallengeSolver[]
  logger: Logger
  budget?: OrderBudgetOptions
  /** One ACME request's timeout (default 30 s): a hung CA fails the attempt instead of hanging it. */
  requestTimeoutMs?: number
  /** Polling of pending challenges/orders: first delay, cap, attempts (default 250 ms, 5 s, 30). */
  pollMinMs?: number
  pollMaxMs?: number
  pollAttempts?: number
}

/** Retry-After seen during the current issue() call (acme-client drops response headers from errors). */
const retryAfter = new AsyncLocalStorage<{ ms?: number }>()
const settings = (acme.axios.defaults as unknown as { acmeSettings: { retryMaxAttempts: number } }).acmeSettings
// Our manager retries with backoff per hostname; acme-client's own waits (Retry-After slept inside
// one attempt, while holding the name's lock) are turned off. badNonce retries (RFC 8555 6.5) remain.
settings.retryMaxAttempts = 0
interface HttpFailure { response?: { status: number, headers: Record<string, unknown> }, code?: string, message: string }
acme.axios.interceptors.response.use(undefined, (error: HttpFailure) => {
  const response = error.response
  // An error without `config` passes acme-client's own handler untouched.
  if (response === undefined) throw new Error(`ACME CA unreachable: ${error.code ?? error.message}`)
  const header = response.headers['retry-after']
  const context = retryAfter.getStore()
  if ((response.status === 429 || response.status === 503) && typeof header === 'string') {
    // RFC 9110 10.2.3: delay-seconds or an HTTP-date.
    const ms = /^\d+$/.test(header) ? Number(header) * 1000 : Date.parse(header) - Date.now()
    if (context !== undefined && Number.isFinite(ms) && ms > 0) context.ms = Math.min(ms, 24 * 3_600_000)
    throw new Error(`ACME CA answered ${response.status}, retry after ${header}`)
  }
  return Promise.reject(error as unknown as Error)
})
{
  // Run ours before acme-client's handler (axios applies response interceptors in order).
  const manager = acme.axios.interceptors.response as unknown as { handlers: unknown[] }
  manager.handlers.unshift(manager.handlers.pop())
}

export class AcmeIssuer implements Issuer {
  readonly id: string
  readonly budget: OrderBudget
  /** Orders placed with the CA (for tests and metrics). */
  ordersPlaced = 0
  private readonly options: AcmeIssuerOptions
  private readonly logger: Logger
  private readonly agent: https.Agent
  private clientPromise: Promise<acme.Client> | undefined

  constructor (options: AcmeIssuerOptions) {
    if (options.solvers.length === 0) throw new Error('AcmeIssuer needs at least one challenge solver')
    this.options = options
    this.id = `acme:${options.directoryUrl}`
    this.logger = options.logger
    this.budget = new OrderBudget(options.budget)
    this.agent = new https.Agent({
      keepAlive: true,
      ca: options.caBundlePem === undefined ? undefined : [...tls.rootCertificates, options.caBundlePem],
    })
  }

  async issue (name: string): Promise<IssuedCertificate> {
    const context: { ms?: number } = {}
    return await retryAfter.run(context, async () => {
      try {
        return await this.order(name)
      } catch (err) {
        if (err instanceof IssuerError) throw err
        // The next attempt starts from the directory again: the CA may have restarted or lost
        // our account (accountDoesNotExist), and a new client costs two requests.
        this.clientPromise = undefined
        const message = err instanceof Error ? err.message : String(err)
        throw new IssuerError('ACME_FAILED', message, true, context.ms)
      }
    })
  }

  private async order (name: string): Promise<IssuedCertificate> {
    const waitMs = this.budget.take()
    if (waitMs > 0) throw new IssuerError('ORDER_BUDGET', `orders budget for this account used up (${this.budget.limit} per ${this.budget.windowMs} ms)`, true, waitMs)
    const client = await this.client()
    this.ordersPlaced++
    const order = await client.createOrder({ identifiers: [{ type: 'dns', value: name }] })
    this.logger.info({ hostname: name, order: order.url }, 'ACME order placed')
    const authorizations = await client.getAuthorizations(order)
    for (const authz of authorizations) {
      if (authz.status === 'valid') continue // reused authorization (RFC 8555 7.1.4)
      await this.solve(client, authz)
    }
    const certificateKey = await acme.crypto.createPrivateEcdsaKey('P-256')
    // RFC 5280 A.1: a CN longer than 64 characters is invalid; the SAN alone names it then.
    const [, csr] = await acme.crypto.createCsr({ altNames: [name], ...(name.length <= 64 ? { commonName: name } : {}) }, certificateKey)
    const finalized = await client.finalizeOrder(order, csr)
    const certificatePem = await client.getCertificate(finalized)
    return { certificatePem, privateKeyPem: certificateKey.toString() }
  }

  private async solve (client: acme.Client, authz: acme.Authorization): Promise<void> {
    const identifier = authz.identifier.value
    const offered = new Map<string, acme.Authorization['challenges'][number]>(authz.challenges.map(c => [c.type, c]))
    const solver = this.options.solvers.find(s => offered.has(s.type) && (authz.wildcard !== true || s.type === 'dns-01'))
    if (solver === undefined) {
      const types = [...offered.keys()].join(', ')
      throw new IssuerError('NO_SOLVER', `no configured challenge solver for ${authz.wildcard === true ? '*.' : ''}${identifier} (CA offers ${types})`, false)
    }
    const challenge = offered.get(solver.type)!
    const keyAuthorization = await client.getChallengeKeyAuthorization(challenge)
    await solver.present(identifier, challenge.token, keyAuthorization)
    try {
      await client.completeChallenge(challenge)
      await client.waitForValidStatus(challenge)
    } finally {
      await solver.cleanup(identifier, challenge.token).catch(err => { this.logger.warn({ err, identifier }, 'challenge cleanup failed') })
    }
  }

  private async client (): Promise<acme.Client> {
    this.clientPromise ??= this.createClient()
    try {
      return await this.clientPromise
    } catch (err) {
      this.clientPromise = undefined // CA unreachable at first use: try again next time
      throw err
    }
  }

  private async createClient (): Promise<acme.Client> {
    const o = this.options
    const accountKey = await loadOrCreateAccountKey(o.store, o.directoryUrl)
    acme.axios.defaults.httpsAgent = this.agent
    acme.axios.defaults.timeout = o.requestTimeoutMs ?? 30_000
    const client = new acme.Client({
      directoryUrl: o.directoryUrl,
      accountKey,
      backoffMin: o.pollMinMs ?? 250,
      backoffMax: o.pollMaxMs ?? 5_000,
      backoffAttempts: o.pollAttempts ?? 30,
    })
    // RFC 8555 7.3: newAccount with an existing key returns that account (200). acme-client follows
    // a 200 with an update carrying the same payload, which a CA may refuse (pebble: "empty update")
    // or lose to a bad nonce; once the CA has named the account URL the account is usable, so only
    // a failure before that counts. Without this, a retry after any failure found the account
    // existing and failed the same way for good.
    try {
      await client.createAccount({ termsOfServiceAgreed: true, ...(o.email !== undefined ? { contact: [`mailto:${o.email}`] } : {}) })
    } catch (err) {
      if (!hasAccountUrl(client)) throw err
      this.logger.warn({ err: (err as Error).message }, 'ACME account exists; its update was refused (kept as it is)')
    }
    this.logger.info({ directory: o.directoryUrl, account: client.getAccountUrl() }, 'ACME account ready')
    return client
  }
}

function hasAccountUrl (client: acme.Client): boolean {
  try {
    client.getAccountUrl()
    return true
  } catch {
    return false
  }
}

export type { ChallengeType }
