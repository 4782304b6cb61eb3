/**
 * Custom domains (spec "Custom Domain Endpoints", "Flow 3"): add with DNS instructions, list,
 * verify through DNS, delete; the per-instance view gateways and containers need
 * (CustomDomainSource); and the periodic re-check that stops serving a domain whose record has
 * been gone for longer than the grace period.
 *
 * - A domain belongs to one instance across all users (primary key); another user's instance is
 *   answered like a missing one (404).
 * - Plan limits per instance (services/plans.ts): Free none (402), Pro 1, Business 5 (403); the add
 *   transaction locks the instance row so two adds count one after the other.
 * - Served ("routed") = verified, not suspended, instance not suspended. Every change of that set
 *   bumps the gateway configuration version in the same transaction.
 * - ssl_status comes from what gateways report per hostname (certificate_states): `provisioning`
 *   once served until a certificate is reported active.
 * - A claim nobody verifies does not hold a name forever: a pending domain expires after
 *   CC_DOMAIN_PENDING_TTL (counted from its addition, or from its lapse), and while pending it is
 *   taken over by any other account whose instance the DNS already points at (the CNAME to its
 *   target, or the TXT record with that instance's takeover token). The 409 a claimant gets says
 *   which record proves it; it never says who holds the claim.
 */
import type { Knex } from 'knex'
import { createHmac } from 'node:crypto'
import type { Logger } from 'pino'
import { getDomain } from 'tldts'
import type { AddDomainResponse, DomainSummary, DomainVerification, DnsRecordInstruction, SslStatus, VerifyDomainResponse } from '../../proto/api/domains.ts'
import { isUniqueViolation, type Db, type Queryable } from '../db/knex.ts'
import { apiError } from '../errors.ts'
import { ID_PREFIX, looksLikeId, randomBase62 } from '../ids.ts'
import { isoSeconds } from '../time.ts'
import { enforcePlanLimits } from './plan-enforcement.ts'
import { OWNERSHIP_LABEL, OWNERSHIP_PREFIX, type DnsCheck, type DnsVerifier } from './dns.ts'
import { DomainNameError, normalizeDomain } from './dns-names.ts'
import type { MailMessage, Mailer } from './mail.ts'
import type { PlanService } from './plans.ts'
import type { CustomDomainEntry, CustomDomainSource } from './tunnel.ts'
import { bumpConfigVersion } from '../db/notify.ts'

export interface DomainServiceOptions {
  db: Db
  plans: PlanService
  dns: DnsVerifier
  mailer: Mailer
  baseDomain: string
  recheckIntervalSeconds: number
  lapseGraceSeconds: number
  /** A domain still pending this long after its addition (or lapse) is dropped. */
  pendingTtlSeconds: number
  /** Secret behind takeover tokens (HMAC key; any server-side secret, used with its own label). */
  takeoverKey: Uint8Array
  now: () => Date
  logger: Logger
}

export interface DomainRow {
  domain: string
  instance_id: string
  user_id: string
  kind: 'cname' | 'apex'
  verification_token: string
  status: 'pending_verification' | 'verified'
  verified_at: Date | null
  last_checked_at: Date | null
  last_error: string | null
  failing_since: Date | null
  lapse_notified_at: Date | null
  suspended_at: Date | null
  created_at: Date
}

type JoinedRow = DomainRow & { instance_suspended_at: Date | null }

interface CertificateRow { hostname: string, state: string, not_after: Date | null }

export interface RecheckResult { checked: number, failing: number, lapsed: number, restored: number }

const CHUNK = 1000
const RECHECK_BATCH = 100

function notFound (what = 'Domain'): Error {
  return apiError('NOT_FOUND', `${what} not found`)
}

function isRouted (row: JoinedRow): boolean {
  return row.status === 'verified' && row.suspended_at === null && row.instance_suspended_at === null
}

export function sslStatusOf (routed: boolean, cert: CertificateRow | undefined, now: Date): SslStatus {
  if (!routed) return 'none'
  if (cert === undefined) return 'provisioning'
  if (cert.state === 'failing') return 'failed'
  if (cert.state === 'active' && (cert.not_after === null || new Date(cert.not_after).getTime() > now.getTime())) return 'active'
  return 'provisioning'
}

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz'
/** Labels the HMAC input, so the key's other uses (JWT signatures over base64url text) never collide. */
const TAKEOVER_LABEL = 'erugo custom-domain takeover\0'

/** Thrown inside the add transaction when the name turns out to be held: answered after it. */
class DomainHeldSignal extends Error {
  constructor (readonly pendingElsewhere: boolean) {
    super('domain held')
  }
}

export class DomainService implements CustomDomainSource {
  readonly #o: DomainServiceOptions

  constructor (options: DomainServiceOptions) {
    this.#o = options
  }

  /** What a domain's CNAME must point at (spec: `<instance id>.tunnel.<base domain>`). */
  targetOf (instanceId: string): string {
    return `${instanceId}.tunnel.${this.#o.baseDomain}`
  }

  #normalize (input: string): ReturnType<typeof normalizeDomain> {
    try {
      return normalizeDomain(input, this.#o.baseDomain)
    } catch (err) {
      if (err instanceof DomainNameError) throw apiError('VALIDATION_ERROR', 'The request data is invalid', { fields: { domain: [err.message] } })
      throw err
    }
  }

  /**
   * The TXT token by which `instanceId` proves control of `domain` to take over a pending claim:
   * stable (the claimant must know it before adding), and only its owner is told it.
   */
  takeoverToken (instanceId: string, domain: string): string {
    const mac = createHmac('sha256', this.#o.takeoverKey).update(`${TAKEOVER_LABEL}${instanceId}\0${domain}`).digest()
    let out = ''
    for (const byte of mac) out += BASE62[byte % 62]
    return out
  }

  /** Where a pending domain's time starts: its lapse if it had been verified, else its addition. */
  #pendingCutoff (): Date {
    return new Date(this.#o.now().getTime() - this.#o.pendingTtlSeconds * 1000)
  }

  #expiredPending (db: Queryable): Knex.QueryBuilder {
    return db('custom_domains').where({ status: 'pending_verification' })
      .whereRaw('coalesce(lapse_notified_at, created_at) <= ?', [this.#pendingCutoff()])
  }

  /** Drops every expired pending domain (the periodic job); returns how many. */
  async expirePending (): Promise<number> {
    return affected(await this.#expiredPending(this.#o.db).delete())
  }

  /** A path parameter: a name that does not normalise cannot exist (404, not 422). */
  #lookupName (input: string): string {
    try {
      return normalizeDomain(input, this.#o.baseDomain).domain
    } catch {
      throw notFound()
    }
  }

  async #instance (db: Queryable, userId: string, instanceId: string, lock = false): Promise<{ id: string, suspended_at: Date | null }> {
    if (!looksLikeId(ID_PREFIX.instance, instanceId)) throw notFound('Instance')
    const query = db('instances').where({ id: instanceId, user_id: userId })
    if (lock) void query.forUpdate()
    const row = await query.first('id', 'suspended_at') as { id: string, suspended_at: Date | null } | undefined
    if (row === undefined) throw notFound('Instance')
    return row
  }

  #select (db: Queryable): Knex.QueryBuilder {
    return db('custom_domains as d').join('instances as i', 'i.id', 'd.instance_id').select('d.*', 'i.suspended_at as instance_suspended_at')
  }

  async #find (db: Queryable, userId: string, instanceId: string, domain: string, lock = false): Promise<JoinedRow> {
    await this.#instance(db, userId, instanceId)
    const query = this.#select(db).where({ 'd.domain': domain, 'd.instance_id': instanceId, 'd.user_id': userId })
    if (lock) void query.forUpdate('d')
    const row = await query.first() as JoinedRow | undefined
    if (row === undefined) throw notFound()
    return row
  }

  verification (row: Pick<DomainRow, 'domain' | 'instance_id' | 'kind' | 'verification_token'>): DomainVerification {
    const target = this.targetOf(row.instance_id)
    if (row.kind === 'cname') {
      const zone = getDomain(row.domain, { allowPrivateDomains: true }) ?? row.domain
      const record: DnsRecordInstruction = { type: 'CNAME', name: row.domain.slice(0, -(zone.length + 1)), value: target }
      return {
        ...record,
        instructions: `Add this CNAME record to your DNS provider: ${row.domain} CNAME ${target}. Then verify the domain.`,
        records: [record],
      }
    }
    const txt: DnsRecordInstruction = { type: 'TXT', name: OWNERSHIP_LABEL, value: `${OWNERSHIP_PREFIX}${row.verification_token}` }
    const addresses: DnsRecordInstruction[] = this.#o.dns.gatewayAddresses.map(a => ({ type: a.includes(':') ? 'AAAA' : 'A', name: '@', value: a }))
    const pointing = addresses.length > 0
      ? `point ${row.domain} at the gateway with ${addresses.map(a => `${a.type} ${a.value}`).join(', ')}`
      : `point ${row.domain} at the gateway with A/AAAA records holding the addresses of ${target} (or an ALIAS/ANAME record to it, if your provider has one)`
    return {
      ...txt,
      instructions: `${row.domain} is the apex of your DNS zone, which cannot hold a CNAME record. Add this TXT record (${OWNERSHIP_LABEL}.${row.domain}) to prove you own it, ${pointing}, and remove any other A/AAAA records of ${row.domain}. Then verify the domain.`,
      records: [txt, ...addresses],
    }
  }

  async add (userId: string, instanceId: string, input: string): Promise<AddDomainResponse> {
    const name = this.#normalize(input)
    const kind = name.apex ? 'apex' as const : 'cname' as const
    const now = this.#o.now()
    // A pending claim of another account: whether the DNS already names this instance is asked
    // before the transaction (lookups take seconds; no row stays locked meanwhile).
    const holder = await this.#o.db('custom_domains').where({ domain: name.domain }).first('user_id', 'status') as { user_id: string, status: string } | undefined
    let takeover = false
    if (holder !== undefined && holder.status === 'pending_verification' && holder.user_id !== userId) {
      await this.#instance(this.#o.db, userId, instanceId)
      const proof = await this.#o.dns.check({ domain: name.domain, apex: name.apex, token: this.takeoverToken(instanceId, name.domain), target: this.targetOf(instanceId) })
      takeover = proof.ok
    }
    const row = {
      domain: name.domain,
      instance_id: instanceId,
      user_id: userId,
      kind,
      verification_token: takeover ? this.takeoverToken(instanceId, name.domain) : randomBase62(32),
      status: 'pending_verification' as const,
      created_at: now,
      updated_at: now,
    }
    try {
      await this.#o.db.transaction(async trx => {
        const instance = await this.#instance(trx, userId, instanceId, true)
        const limits = await this.#o.plans.limitsOf(userId, trx)
        if (limits.customDomainsPerInstance === 0) {
          throw apiError('SUBSCRIPTION_REQUIRED', 'Custom domains need the Pro or Business plan', { plan: limits.plan, resource: 'custom_domains' })
        }
        if (instance.suspended_at !== null) {
          throw apiError('SUBSCRIPTION_REQUIRED', 'This instance is suspended: it is over your plan\'s instance limit', { plan: limits.plan, resource: 'instances' })
        }
        await this.#expiredPending(trx).where({ domain: name.domain }).delete()
        const current = await trx('custom_domains').where({ domain: name.domain }).forUpdate().first('user_id', 'status') as { user_id: string, status: string } | undefined
        if (current !== undefined) {
          const pendingElsewhere = current.status === 'pending_verification' && current.user_id !== userId
          // The DNS names this instance: the unverified claim gives way (it was never served).
          if (pendingElsewhere && takeover) await trx('custom_domains').where({ domain: name.domain, status: 'pending_verification' }).delete()
          else throw new DomainHeldSignal(pendingElsewhere)
        }
        const count = Number((await trx('custom_domains').where({ instance_id: instanceId }).count('* as n').first() as { n: string | number }).n)
        if (count >= limits.customDomainsPerInstance) {
          const n = limits.customDomainsPerInstance
          throw apiError('LIMIT_EXCEEDED', `Your ${limits.plan} plan allows ${n} custom domain${n === 1 ? '' : 's'} per instance`, { resource: 'custom_domains', limit: n, plan: limits.plan })
        }
        await trx('custom_domains').insert(row)
      })
    } catch (err) {
      if (err instanceof DomainHeldSignal) throw this.#held(name.domain, err.pendingElsewhere ? { instanceId, kind } : undefined)
      if (isUniqueViolation(err)) throw this.#held(name.domain)
      throw err
    }
    if (takeover) this.#o.logger.info({ domain: name.domain, instanceId }, 'pending custom domain taken over: its DNS names another account\'s instance')
    return { domain: row.domain, status: 'pending_verification', verification: this.verification(row) }
  }

  /**
   * 409 for a name another instance holds. When the holder's claim is still pending and belongs
   * to another account, `claimant` is told how to take it over: the records for its own instance.
   * Nothing says which account holds it.
   */
  #held (domain: string, claimant?: { instanceId: string, kind: 'cname' | 'apex' }): Error {
    if (claimant === undefined) return taken(domain)
    const verification = this.verification({ domain, instance_id: claimant.instanceId, kind: claimant.kind, verification_token: this.takeoverToken(claimant.instanceId, domain) })
    return apiError('DOMAIN_ALREADY_EXISTS', 'This domain has been added to another instance but not verified yet. To take it over, create the DNS record in details.verification, then add the domain again', { domain, verification })
  }

  async list (userId: string, instanceId: string): Promise<DomainSummary[]> {
    await this.#instance(this.#o.db, userId, instanceId)
    const rows = await this.#select(this.#o.db).where({ 'd.instance_id': instanceId }).orderBy([{ column: 'd.created_at' }, { column: 'd.domain' }]) as JoinedRow[]
    const certs = await this.#certificates(this.#o.db, rows.filter(isRouted).map(r => r.domain))
    const now = this.#o.now()
    return rows.map(r => ({
      domain: r.domain,
      status: r.suspended_at !== null || (r.instance_suspended_at !== null && r.status === 'verified') ? 'suspended' : r.status,
      ssl_status: sslStatusOf(isRouted(r), certs.get(r.domain), now),
      verified_at: r.verified_at === null ? null : isoSeconds(r.verified_at),
      error: r.last_error,
      verification: this.verification(r),
    }))
  }

  async remove (userId: string, instanceId: string, input: string): Promise<void> {
    const domain = this.#lookupName(input)
    await this.#o.db.transaction(async trx => {
      // The owner first, as enforcePlanLimits locks: the same order everywhere, no deadlock.
      await trx('users').where({ id: userId }).forUpdate().first('id')
      const row = await this.#find(trx, userId, instanceId, domain, true)
      await trx('custom_domains').where({ domain }).delete()
      if (isRouted(row)) await bumpConfigVersion(trx)
      // Room for a domain suspended over the limit: it comes back now.
      if (row.suspended_at === null) await enforcePlanLimits(trx, userId, this.#o.plans, this.#o.now())
    })
  }

  /** Checks DNS now. Failure is not an error: the spec's pending shape with the reason. */
  async verify (userId: string, instanceId: string, input: string): Promise<VerifyDomainResponse> {
    const domain = this.#lookupName(input)
    const row = await this.#find(this.#o.db, userId, instanceId, domain)
    if (row.status === 'verified' && row.failing_since === null) return await this.#verifiedView(row)
    const result = await this.#check(row)
    const now = this.#o.now()
    if (result.ok) {
      const updated = await this.#o.db.transaction(async trx => {
        const current = await this.#find(trx, userId, instanceId, domain, true)
        const next = { status: 'verified' as const, verified_at: current.verified_at ?? now, last_checked_at: now, last_error: null, failing_since: null, lapse_notified_at: null, updated_at: now }
        await trx('custom_domains').where({ domain }).update(next)
        const after = { ...current, ...next }
        if (isRouted(after) !== isRouted(current)) await bumpConfigVersion(trx)
        return after
      })
      return await this.#verifiedView(updated)
    }
    await this.#o.db('custom_domains').where({ domain, instance_id: instanceId }).update({ last_checked_at: now, last_error: result.message, updated_at: now })
    if (row.status === 'verified') return await this.#verifiedView(row)
    return { domain, status: 'pending_verification', error: result.message }
  }

  async #verifiedView (row: JoinedRow): Promise<VerifyDomainResponse> {
    const routed = isRouted(row)
    const certs = await this.#certificates(this.#o.db, routed ? [row.domain] : [])
    return { domain: row.domain, status: routed || row.suspended_at === null ? 'verified' : 'suspended', ssl_status: sslStatusOf(routed, certs.get(row.domain), this.#o.now()) }
  }

  async #check (row: DomainRow): Promise<DnsCheck> {
    return await this.#o.dns.check({ domain: row.domain, apex: row.kind === 'apex', token: row.verification_token, target: this.targetOf(row.instance_id) })
  }

  async #certificates (db: Queryable, hostnames: string[]): Promise<Map<string, CertificateRow>> {
    const out = new Map<string, CertificateRow>()
    for (let i = 0; i < hostnames.length; i += CHUNK) {
      const rows = await db('certificate_states').whereIn('hostname', hostnames.slice(i, i + CHUNK)).select('hostname', 'state', 'not_after') as CertificateRow[]
      for (const r of rows) out.set(r.hostname, r)
    }
    return out
  }

  /** CustomDomainSource: per instance, served domains first, then by age. */
  async domainsOf (db: Queryable, instanceIds: string[]): Promise<Map<string, CustomDomainEntry[]>> {
    const out = new Map<string, CustomDomainEntry[]>()
    const rows: JoinedRow[] = []
    for (let i = 0; i < instanceIds.length; i += CHUNK) {
      rows.push(...await this.#select(db).whereIn('d.instance_id', instanceIds.slice(i, i + CHUNK)).orderBy([{ column: 'd.created_at' }, { column: 'd.domain' }]) as JoinedRow[])
    }
    if (rows.length === 0) return out
    const certs = await this.#certificates(db, rows.filter(isRouted).map(r => r.domain))
    const now = this.#o.now()
    for (const r of rows) {
      const routed = isRouted(r)
      const entry: CustomDomainEntry = {
        domain: r.domain,
        status: routed ? 'active' : r.suspended_at !== null || r.instance_suspended_at !== null ? 'suspended' : 'pending',
        ssl_status: sslStatusOf(routed, certs.get(r.domain), now),
        routed,
      }
      const list = out.get(r.instance_id)
      if (list === undefined) out.set(r.instance_id, [entry])
      else list.push(entry)
    }
    for (const list of out.values()) list.sort((a, b) => Number(b.routed) - Number(a.routed))
    return out
  }

  /**
   * One pass of the periodic re-check over verified domains not checked for an interval. A
   * definitive failure starts the grace period (the owner is mailed); past it the domain stops
   * being served and goes back to pending (mailed again). Timeouts and SERVFAIL change nothing.
   * Rows are claimed with SKIP LOCKED, so several control replicas share the work.
   */
  async recheckDue (): Promise<RecheckResult> {
    const now = this.#o.now()
    const cutoff = new Date(now.getTime() - this.#o.recheckIntervalSeconds * 1000)
    const claimed = await this.#o.db.raw(`
      update custom_domains set last_checked_at = ? where domain in (
        select domain from custom_domains where status = 'verified' and (last_checked_at is null or last_checked_at <= ?)
        order by last_checked_at nulls first limit ? for update skip locked)
      returning *`, [now, cutoff, RECHECK_BATCH]) as { rows: DomainRow[] }
    const result: RecheckResult = { checked: 0, failing: 0, lapsed: 0, restored: 0 }
    for (const row of claimed.rows) {
      result.checked++
      const check = await this.#check(row)
      if (check.ok) {
        if (row.failing_since !== null) result.restored++
        await this.#o.db('custom_domains').where({ domain: row.domain, status: 'verified' }).update({ failing_since: null, last_error: null, lapse_notified_at: null, updated_at: now })
        continue
      }
      if (!check.definitive) {
        this.#o.logger.warn({ domain: row.domain, reason: check.reason }, 'domain re-check inconclusive')
        await this.#o.db('custom_domains').where({ domain: row.domain }).update({ last_error: check.message, updated_at: now })
        continue
      }
      result.failing++
      const since = row.failing_since === null ? now : new Date(row.failing_since)
      const deadline = new Date(since.getTime() + this.#o.lapseGraceSeconds * 1000)
      if (now.getTime() >= deadline.getTime()) {
        if (await this.#lapse(row, check.message, now)) result.lapsed++
        continue
      }
      const started = affected(await this.#o.db('custom_domains').where({ domain: row.domain, status: 'verified' }).whereNull('failing_since')
        .update({ failing_since: now, last_error: check.message, updated_at: now }))
      if (row.failing_since === null && started > 0) await this.#mailOwner(row.user_id, owner => domainFailingMail(owner.email, row.domain, check.message, deadline))
      else await this.#o.db('custom_domains').where({ domain: row.domain }).update({ last_error: check.message, updated_at: now })
    }
    return result
  }

  /** Stops serving a domain whose record stayed wrong past the grace period. */
  async #lapse (row: DomainRow, reason: string, now: Date): Promise<boolean> {
    const lapsed = await this.#o.db.transaction(async trx => {
      const current = await this.#select(trx).where({ 'd.domain': row.domain }).forUpdate('d').first() as JoinedRow | undefined
      if (current?.status !== 'verified') return false
      await trx('custom_domains').where({ domain: row.domain }).update({ status: 'pending_verification', last_error: reason, lapse_notified_at: now, updated_at: now })
      if (isRouted(current)) await bumpConfigVersion(trx)
      return true
    })
    if (lapsed) {
      this.#o.logger.info({ domain: row.domain, reason }, 'custom domain no longer served: DNS record gone past the grace period')
      await this.#mailOwner(row.user_id, owner => domainLapsedMail(owner.email, row.domain, reason))
    }
    return lapsed
  }

  async #mailOwner (userId: string, build: (owner: { email: string }) => MailMessage): Promise<void> {
    const owner = await this.#o.db('users').where({ id: userId }).first('email') as { email: string } | undefined
    if (owner !== undefined) this.#o.mailer.send(build(owner))
  }
}

/** Rows an update touched: pg answers a number, the PGlite dialect may answer a result object. */
function affected (result: unknown): number {
  if (typeof result === 'number') return result
  const r = result as { rowCount?: number, affectedRows?: number } | null
  return r?.rowCount ?? r?.affectedRows ?? 0
}

function taken (domain: string): Error {
  return apiError('DOMAIN_ALREADY_EXISTS', 'This domain has already been added to an instance', { domain })
}

export function domainFailingMail (to: string, domain: string, reason: string, deadline: Date): MailMessage {
  return {
    to,
    subject: `Check the DNS record of ${domain}`,
    text: `Hello,\n\nOur periodic check of ${domain} failed: ${reason}.\n\nThe domain keeps working until ${isoSeconds(deadline)}. If the DNS record is not back by then, we stop serving ${domain} and you will need to verify it again from your Erugo admin panel.\n`,
    links: [],
  }
}

export function domainLapsedMail (to: string, domain: string, reason: string): MailMessage {
  return {
    to,
    subject: `${domain} is no longer served`,
    text: `Hello,\n\nThe DNS record of ${domain} has not pointed at your Erugo instance for the whole grace period (${reason}), so we stopped serving it. Restore the record shown in your Erugo admin panel and verify the domain again to bring it back.\n`,
    links: [],
  }
}
