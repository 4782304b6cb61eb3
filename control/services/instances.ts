/**
 * Instances (spec "Instance Management Endpoints"): create with credentials, list, read, rename or
 * move to another subdomain, delete, regenerate the instance token; and the instance-token check
 * behind every /tunnel call.
 *
 * - Another user's instance is answered exactly like a missing one (404), so ids reveal nothing.
 * - Plan limits hold under concurrency: the create transaction locks the owner's user row, so two
 *   creates by one user count one after the other.
 * - A subdomain belongs to one instance: the unique index decides races; the loser gets 409
 *   SUBDOMAIN_TAKEN with suggestions that are free at that moment. One given up by a rename or a
 *   delete stays reserved for its owner for the quarantine (services/subdomains.ts): others get
 *   the same 409, which does not say whose it is.
 * - An instance token works while its `jti` is the instance's `token_jti`: regeneration replaces
 *   it and deletion removes the row, so the old token fails on its very next use. Regeneration
 *   also forgets the registered WireGuard key: whoever held the old token may have registered it.
 */
import type { Knex } from 'knex'
import type { CreateInstanceResponse, InstanceDetails, InstanceSummary, UpdateInstanceRequest, UpdateInstanceResponse } from '../../proto/api/instances.ts'
import type { TunnelFleetPeer } from '../../proto/api/tunnel.ts'
import { formatIPv4 } from '../../proto/wire/ipv4.ts'
import { isUniqueViolation, type Db, type Queryable } from '../db/knex.ts'
import { apiError } from '../errors.ts'
import { ID_PREFIX, looksLikeId, newId } from '../ids.ts'
import { isoSeconds } from '../time.ts'
import { toAddress, type IpamService } from './ipam.ts'
import type { PlanService } from './plans.ts'
import { classifySubdomain, normalizeSubdomain, verdictMessage, type SubdomainService } from './subdomains.ts'
import type { InstanceClaims, TokenService } from './tokens.ts'
import { bumpConfigVersion } from '../db/notify.ts'
import { instanceStatus, suspendedReason, type CustomDomainSource, type GatewayInfo, type InstanceIdentity, type TunnelService, type TunnelStateRow } from './tunnel.ts'

export interface InstanceRow extends TunnelStateRow {
  id: string
  user_id: string
  name: string
  subdomain: string
  token_jti: string
  registered_at: Date | null
  /** The owner gets offline and back-online mails (services/instance-alerts.ts). */
  alerts_offline: boolean
  created_at: Date
  updated_at: Date
  /** Joined from tunnel_ips. */
  address: string | number
}

export interface InstanceServiceOptions {
  db: Db
  ipam: IpamService
  subdomains: SubdomainService
  plans: PlanService
  tokens: TokenService
  tunnel: TunnelService
  gateway: GatewayInfo
  customDomains: CustomDomainSource
  now: () => Date
}

function notFound (): Error {
  return apiError('NOT_FOUND', 'Instance not found')
}

const SUBDOMAIN_CONSTRAINT = 'instances_subdomain_unique'

class SubdomainTakenSignal extends Error {}

/** Verified instance tokens remembered (each container presents the same one every minute). */
const VERIFIED_TOKEN_CACHE_SIZE = 100_000

export class InstanceService {
  readonly #o: InstanceServiceOptions
  /**
   * token -> claims for tokens whose signature and claims verified. Instance tokens never expire,
   * so this only memoises a pure function of the token; whether the token is still current is
   * checked against the database on every use regardless.
   */
  readonly #verified = new Map<string, InstanceClaims>()

  constructor (options: InstanceServiceOptions) {
    this.#o = options
  }

  #select (db: Queryable): Knex.QueryBuilder {
    return db('instances as i')
      .join('tunnel_ips as t', 't.instance_id', 'i.id')
      .select('i.*', 't.address')
  }

  async #customDomain (ids: string[]): Promise<Map<string, string | null>> {
    const byInstance = await this.#o.customDomains.domainsOf(this.#o.db, ids)
    const out = new Map<string, string | null>()
    for (const id of ids) out.set(id, byInstance.get(id)?.find(d => d.routed)?.domain ?? null)
    return out
  }

  #summary (row: InstanceRow, customDomain: string | null, now: Date): InstanceSummary {
    return {
      id: row.id,
      name: row.name,
      subdomain: row.subdomain,
      custom_domain: customDomain,
      status: instanceStatus(row, now, this.#o.tunnel.statusWindowSeconds),
      suspended_reason: suspendedReason(row),
      tunnel_ip: formatIPv4(toAddress(row.address)),
      last_seen: row.last_seen === null ? null : isoSeconds(row.last_seen),
      created_at: isoSeconds(row.created_at),
    }
  }

  async list (userId: string): Promise<InstanceSummary[]> {
    const rows = await this.#select(this.#o.db).where('i.user_id', userId).orderBy([{ column: 'i.created_at' }, { column: 'i.id' }]) as InstanceRow[]
    const custom = await this.#customDomain(rows.map(r => r.id))
    const now = this.#o.now()
    return rows.map(r => this.#summary(r, custom.get(r.id) ?? null, now))
  }

  async #find (userId: string, instanceId: string, db: Queryable = this.#o.db, lock = false): Promise<InstanceRow> {
    if (!looksLikeId(ID_PREFIX.instance, instanceId)) throw notFound()
    const query = this.#select(db).where({ 'i.id': instanceId, 'i.user_id': userId })
    if (lock) void query.forUpdate('i')
    const row = await query.first() as InstanceRow | undefined
    if (row === undefined) throw notFound()
    return row
  }

  async get (userId: string, instanceId: string): Promise<InstanceDetails> {
    const row = await this.#find(userId, instanceId)
    const custom = await this.#customDomain([row.id])
    const { id, name, subdomain, custom_domain: customDomain, status, suspended_reason: reason, tunnel_ip: tunnelIp, last_seen: lastSeen, created_at: createdAt } = this.#summary(row, custom.get(row.id) ?? null, this.#o.now())
    return { id, name, subdomain, full_domain: this.#o.tunnel.fullDomain(subdomain), custom_domain: customDomain, status, suspended_reason: reason, tunnel_ip: tunnelIp, last_seen: lastSeen, created_at: createdAt, alerts: { offline: row.alerts_offline } }
  }

  /** 422 for an invalid or reserved label (with suggestions for a reserved one). */
  async #usableSubdomain (value: string, userId: string): Promise<string> {
    const label = normalizeSubdomain(value)
    const verdict = classifySubdomain(label)
    if (verdict === 'ok') return label
    const details: Record<string, unknown> = { fields: { subdomain: [verdictMessage(verdict)] } }
    if (verdict === 'reserved') details.suggestions = await this.#o.subdomains.suggestionsFor(label, userId)
    throw apiError('VALIDATION_ERROR', 'The request data is invalid', details)
  }

  async #taken (label: string, userId: string): Promise<Error> {
    return apiError('SUBDOMAIN_TAKEN', 'This subdomain is already in use', { subdomain: label, suggestions: await this.#o.subdomains.suggestionsFor(label, userId) })
  }

  async create (userId: string, input: { name: string, subdomain: string }): Promise<CreateInstanceResponse> {
    const subdomain = await this.#usableSubdomain(input.subdomain, userId)
    const name = input.name.trim()
    const gateway = await this.#o.gateway.current()
    if (!await this.#o.subdomains.isFree(subdomain, userId)) throw await this.#taken(subdomain, userId)

    const id = newId(ID_PREFIX.instance)
    const token = await this.#o.tokens.signInstance(id, userId)
    const now = this.#o.now()
    let address: number
    let primary: TunnelFleetPeer | undefined
    try {
      address = await this.#o.db.transaction(async trx => {
        // Serialises this user's creates: the count below cannot go stale before commit.
        const owner = await trx('users').where({ id: userId }).forUpdate().first('id')
        if (owner === undefined) throw apiError('UNAUTHORIZED', 'Invalid or expired token')
        const limits = await this.#o.plans.limitsOf(userId, trx)
        const count = Number((await trx('instances').where({ user_id: userId }).count('* as n').first() as { n: string | number }).n)
        if (count >= limits.instances) {
          throw apiError('LIMIT_EXCEEDED', `Your ${limits.plan} plan allows ${limits.instances} instance${limits.instances === 1 ? '' : 's'}`, { resource: 'instances', limit: limits.instances, plan: limits.plan })
        }
        await trx('instances').insert({ id, user_id: userId, name, subdomain, token_jti: token.jti, tunnel_state: 'pending', created_at: now, updated_at: now })
        const leased = await this.#o.ipam.allocate(trx, id)
        await bumpConfigVersion(trx)
        primary = (await this.#o.gateway.placedPeers?.(trx, id))?.[0]
        return leased
      })
    } catch (err) {
      if (isUniqueViolation(err, SUBDOMAIN_CONSTRAINT)) throw await this.#taken(subdomain, userId)
      throw err
    }

    const tunnelIp = formatIPv4(address)
    return {
      instance: {
        id,
        name,
        subdomain,
        full_domain: this.#o.tunnel.fullDomain(subdomain),
        status: 'pending',
        tunnel_ip: tunnelIp,
        created_at: isoSeconds(now),
      },
      credentials: {
        instance_token: token.token,
        wireguard: {
          server_public_key: primary?.public_key ?? gateway.publicKey,
          server_endpoint: primary?.endpoint ?? gateway.endpoint,
          client_ip: `${tunnelIp}/32`,
          allowed_ips: primary?.allowed_ips ?? this.#o.tunnel.allowedIps,
        },
      },
    }
  }

  async update (userId: string, instanceId: string, changes: UpdateInstanceRequest): Promise<UpdateInstanceResponse> {
    const subdomain = changes.subdomain === undefined ? undefined : await this.#usableSubdomain(changes.subdomain, userId)
    if (!looksLikeId(ID_PREFIX.instance, instanceId)) throw notFound()
    let row: InstanceRow
    try {
      row = await this.#o.db.transaction(async trx => {
        const current = await this.#find(userId, instanceId, trx, true)
        const update: Record<string, unknown> = { updated_at: this.#o.now() }
        if (changes.name !== undefined) update.name = changes.name.trim()
        if (changes.alerts?.offline !== undefined) {
          update.alerts_offline = changes.alerts.offline
          // Off means no mail at all, not even the back-online one for an outage already mailed.
          if (!changes.alerts.offline) update.offline_alerted_at = null
        }
        const moving = subdomain !== undefined && subdomain !== current.subdomain
        if (moving) {
          // Suggestions are looked up after the transaction (PGlite has a single connection).
          if (!await this.#o.subdomains.isFree(subdomain, userId, trx)) throw new SubdomainTakenSignal()
          update.subdomain = subdomain
          // Old links keep pointing at this owner, not at whoever would take the name next.
          await this.#o.subdomains.release(trx, current.subdomain, userId)
        }
        await trx('instances').where({ id: current.id }).update(update)
        if (moving) await bumpConfigVersion(trx)
        return { ...current, ...update } as InstanceRow
      })
    } catch (err) {
      if (subdomain !== undefined && (err instanceof SubdomainTakenSignal || isUniqueViolation(err, SUBDOMAIN_CONSTRAINT))) throw await this.#taken(subdomain, userId)
      throw err
    }
    return { id: row.id, name: row.name, subdomain: row.subdomain, full_domain: this.#o.tunnel.fullDomain(row.subdomain), alerts: { offline: row.alerts_offline } }
  }

  /** Deletes the instance: its token, key and subdomain stop working; its address and subdomain enter quarantine. */
  async remove (userId: string, instanceId: string): Promise<void> {
    await this.#o.db.transaction(async trx => {
      const current = await this.#find(userId, instanceId, trx, true)
      await this.#o.ipam.release(trx, current.id)
      await this.#o.subdomains.release(trx, current.subdomain, userId)
      await trx('instances').where({ id: current.id }).delete()
      await bumpConfigVersion(trx)
    })
  }

  /** A new token; the old one fails from the moment this returns, and the registered key is dropped. */
  async regenerateToken (userId: string, instanceId: string): Promise<string> {
    if (!looksLikeId(ID_PREFIX.instance, instanceId)) throw notFound()
    const token = await this.#o.tokens.signInstance(instanceId, userId)
    await this.#o.db.transaction(async trx => {
      const current = await this.#find(userId, instanceId, trx, true)
      await trx('instances').where({ id: current.id }).update({
        token_jti: token.jti,
        public_key: null,
        registered_at: null,
        tunnel_state: 'pending',
        updated_at: this.#o.now(),
      })
      if (current.public_key !== null) await bumpConfigVersion(trx)
    })
    return token.token
  }

  /**
   * The instance an instance token speaks for: signature, kind and claims (TokenService), then the
   * token must still be the instance's current one. 401 otherwise.
   */
  async authenticate (token: string): Promise<InstanceIdentity> {
    const claims = await this.verifyToken(token)
    const row = await this.#o.db('instances').where({ id: claims.instanceId, token_jti: claims.jti }).first('user_id') as { user_id: string } | undefined
    if (row === undefined || row.user_id !== claims.userId) {
      throw apiError('UNAUTHORIZED', 'Invalid or expired token', {}, { 'www-authenticate': 'Bearer error="invalid_token"' })
    }
    return { instanceId: claims.instanceId, userId: claims.userId, jti: claims.jti }
  }

  /**
   * Signature and claims only (TokenService.verifyInstance), memoised. The caller must still check
   * that `jti` is the instance's current token id.
   */
  async verifyToken (token: string): Promise<InstanceClaims> {
    const known = this.#verified.get(token)
    if (known !== undefined) return known
    const claims = await this.#o.tokens.verifyInstance(token)
    if (this.#verified.size >= VERIFIED_TOKEN_CACHE_SIZE) this.#verified.delete(this.#verified.keys().next().value as string)
    this.#verified.set(token, claims)
    return claims
  }
}
