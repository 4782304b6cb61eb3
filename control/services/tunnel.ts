/**
 * The container side of an instance (spec "Instance Authenticated Endpoints"): WireGuard key
 * registration, heartbeats, status; and the peer list gateways are configured from.
 *
 * Every write is conditional on the presented token still being the instance's current one
 * (`token_jti`), so a request that passed authentication just before a regeneration or a delete
 * committed cannot register a key afterwards.
 */
import type { Knex } from 'knex'
import type { InstanceStatus, SuspendedReason } from '../../proto/api/instances.ts'
import { PERSISTENT_KEEPALIVE_SECONDS, type DomainStatus, type RegisterTunnelResponse, type TunnelFleetPeer, type TunnelPeer, type TunnelStatusResponse } from '../../proto/api/tunnel.ts'
import { decodeKey, generatePrivateKey, x25519Backend } from '../../proto/noise/keys.ts'
import { formatIPv4 } from '../../proto/wire/ipv4.ts'
import { isUniqueViolation, type Db, type Queryable } from '../db/knex.ts'
import { apiError } from '../errors.ts'
import { toAddress, type IpamService } from './ipam.ts'
import { bumpConfigVersion } from '../db/notify.ts'

/** What a container needs to know about the gateway it connects to. */
export interface GatewayEndpoint {
  /** WireGuard public key, base64. */
  publicKey: string
  /** host:port of the gateway's WireGuard listener. */
  endpoint: string
}

/**
 * Where the gateway's key and endpoint come from: configuration (ConfiguredGateway), or what
 * gateways said in their hello (control/rpc GatewayRegistry, configuration as the fallback).
 * Rejects with an ApiError when no gateway is known.
 */
export interface GatewayInfo {
  current (): Promise<GatewayEndpoint>
  /**
   * Fleet-aware sources (control/rpc GatewayRegistry): the gateways the instance is placed on,
   * primary first, placing it when it has none yet; [] when no gateway is alive to place it on.
   * Without this method (configuration only) there is one gateway and no `peers` list.
   */
  placedPeers? (db: Queryable, instanceId: string, region?: string | null): Promise<TunnelFleetPeer[]>
}

export class ConfiguredGateway implements GatewayInfo {
  readonly #endpoint: GatewayEndpoint | undefined

  constructor (publicKey: string | undefined, endpoint: string) {
    this.#endpoint = publicKey === undefined ? undefined : { publicKey, endpoint }
  }

  async current (): Promise<GatewayEndpoint> {
    if (this.#endpoint === undefined) throw apiError('SERVICE_UNAVAILABLE', 'The tunnel gateway is not configured yet', {}, { 'retry-after': '60' })
    return this.#endpoint
  }
}

/** A custom domain of an instance (services/domains.ts). */
export interface CustomDomainEntry {
  domain: string
  /** `active` (served), `pending` (not verified) or `suspended` (over the plan limit). */
  status: string
  ssl_status: string
  /** Verified and neither it nor its instance suspended: gateways serve it. */
  routed: boolean
}

/** Custom domains per instance id, for responses and for gateway hostnames. */
export interface CustomDomainSource {
  domainsOf (db: Queryable, instanceIds: string[]): Promise<Map<string, CustomDomainEntry[]>>
}

export const noCustomDomains: CustomDomainSource = {
  domainsOf: async () => new Map(),
}

/** The columns status derivation reads. */
export interface TunnelStateRow {
  public_key: string | null
  tunnel_state: 'pending' | 'connected' | 'disconnected'
  last_seen: Date | null
  /** Latest WireGuard handshake a gateway reported for the registered key (control/rpc). */
  last_handshake_at: Date | null
  /** When the container last said goodbye (POST /tunnel/disconnect). */
  disconnected_at: Date | null
  /** Set while the instance is over its owner's plan limit (services/plan-enforcement.ts): not routed. */
  suspended_at: Date | null
}

/**
 * How recent a handshake must be for a tunnel to count as up: 180 s. While any packet flows (and
 * the persistent keepalive of 25 s we hand out makes sure one does) the initiator rekeys after
 * REKEY_AFTER_TIME = 120 s (WireGuard paper 6.1 and 6.5), so a live tunnel shows a fresh handshake
 * at least every 120 + 25 s; gateways report every 5 s; the rest absorbs a lost initiation and
 * its REKEY_TIMEOUT retries. After REJECT_AFTER_TIME = 180 s without a handshake a session can no
 * longer carry data at all, so past the window the tunnel is down whatever else is said.
 */
export const HANDSHAKE_FRESH_SECONDS = 180

/**
 * The one place an instance's status is decided, from what the gateway saw, not from heartbeats
 * (a container can heartbeat over the API while its tunnel carries nothing). `suspended`: over the
 * plan limit, so no gateway has it as a peer, whatever the container says. `pending`: no key
 * registered (or the token was regenerated since), or registered but no handshake seen yet for it.
 * `connected`: a handshake within `windowSeconds` (HANDSHAKE_FRESH_SECONDS unless configured with
 * CC_TUNNEL_STATUS_WINDOW), newer than the container's last goodbye. `disconnected`: otherwise.
 */
export function instanceStatus (row: TunnelStateRow, now: Date, windowSeconds = HANDSHAKE_FRESH_SECONDS): InstanceStatus {
  if (row.suspended_at !== null) return 'suspended'
  if (row.public_key === null) return 'pending'
  if (row.last_handshake_at === null) return row.disconnected_at === null ? 'pending' : 'disconnected'
  const handshakeAt = new Date(row.last_handshake_at).getTime()
  if (row.disconnected_at !== null && handshakeAt <= new Date(row.disconnected_at).getTime()) return 'disconnected'
  return now.getTime() - handshakeAt <= windowSeconds * 1000 ? 'connected' : 'disconnected'
}

/**
 * The subdomain's own status: gateways serve it while a key is registered and the instance is not
 * suspended (listPeers). No key, as before registration or right after a token regeneration
 * dropped the old one, means no gateway routes it yet.
 */
export function subdomainStatus (row: TunnelStateRow): DomainStatus {
  if (row.suspended_at !== null) return 'suspended'
  return row.public_key === null ? 'pending' : 'active'
}

/** Suspension has one cause today: the owner's plan allows fewer instances (services/plan-enforcement.ts). */
export function suspendedReason (row: Pick<TunnelStateRow, 'suspended_at'>): SuspendedReason | null {
  return row.suspended_at === null ? null : 'plan_limit'
}

/** One WireGuard peer as gateways need it (the DESIGN's config snapshot entry). */
export interface PeerEntry {
  instanceId: string
  publicKey: string
  tunnelIp: string
  hostnames: string[]
  port: number
  /**
   * The UDP endpoint a gateway last reported for this key: lets a gateway that has no session yet
   * (restarted, or new) start the handshake itself instead of waiting for the container's next one.
   */
  endpoint?: string
}

export interface PeerSnapshot {
  version: number
  peers: PeerEntry[]
}

/** The upstream port behind every tunnel: Erugo's Caddy listens on 80. */
export const UPSTREAM_PORT = 80

/** The authenticated instance a request speaks for (from the instance token). */
export interface InstanceIdentity {
  instanceId: string
  userId: string
  /** The token's id; writes only apply while it is still the instance's current one. */
  jti: string
}

export interface TunnelServiceOptions {
  db: Db
  ipam: IpamService
  gateway: GatewayInfo
  customDomains: CustomDomainSource
  baseDomain: string
  now: () => Date
  /** instanceStatus window; default HANDSHAKE_FRESH_SECONDS. */
  statusWindowSeconds?: number
}

function unauthorized (): Error {
  return apiError('UNAUTHORIZED', 'Invalid or expired token', {}, { 'www-authenticate': 'Bearer error="invalid_token"' })
}

function invalidKey (reason: string): Error {
  return apiError('VALIDATION_ERROR', 'The request data is invalid', { fields: { public_key: [reason] } })
}

/** A fixed private key for the low-order check: any scalar works, a point of small order gives zero. */
const PROBE_PRIVATE_KEY = generatePrivateKey()

/**
 * Checks a WireGuard public key as the gateway would use it: canonical base64 of 32 bytes (what
 * `wg pubkey` prints), not a point of small order (the DH result would be all zeros, which
 * WireGuard refuses: paper 5.4.2, wireguard-go noise-protocol.go), not the gateway's own key.
 */
export function validatePeerKey (text: string, gatewayKey: string): void {
  let key: Buffer
  try {
    key = decodeKey(text)
  } catch {
    throw invalidKey('must be a WireGuard public key: 44 characters of canonical base64 (wg pubkey)')
  }
  if (x25519Backend().sharedSecret(PROBE_PRIVATE_KEY, key) === null) throw invalidKey('is not a usable Curve25519 public key')
  if (text === gatewayKey) throw invalidKey('is the gateway\'s own key')
}

/**
 * Appended to the WHERE of soft-state writes (heartbeats): the statement's implicit transaction
 * then commits without waiting for the WAL flush (set_config(..., true) is SET LOCAL). A database
 * crash can lose the last fraction of a second of heartbeats and nothing else; every other write
 * keeps synchronous commit. Measured here: ~8 ms per fsync-bound update vs ~1 ms.
 */
const ASYNC_COMMIT = "set_config('synchronous_commit', 'off', true) is not null"

/** Most heartbeats one statement carries. */
const HEARTBEAT_BATCH_MAX = 500

interface PendingHeartbeat {
  instanceId: string
  jti: string
  resolve: (current: boolean) => void
  reject: (err: unknown) => void
}

export class TunnelService {
  readonly #o: TunnelServiceOptions
  #pendingHeartbeats: PendingHeartbeat[] = []
  #heartbeatFlushScheduled = false

  constructor (options: TunnelServiceOptions) {
    this.#o = options
  }

  /** Seconds a reported handshake keeps an instance `connected`. */
  get statusWindowSeconds (): number {
    return this.#o.statusWindowSeconds ?? HANDSHAKE_FRESH_SECONDS
  }

  fullDomain (subdomain: string): string {
    return `${subdomain}.${this.#o.baseDomain}`
  }

  /** `<gateway tunnel address>/32`: the only destination a container routes into the tunnel. */
  get allowedIps (): string {
    return `${formatIPv4(this.#o.ipam.pool.gatewayAddress)}/32`
  }

  /**
   * Registers (or replaces) the instance's WireGuard key. 422 for an unusable key, 409 KEY_IN_USE
   * when another instance has it, 401 when the token stopped being current meanwhile.
   */
  /** `region`: the container's (or null); kept for placements made later, never moving a placed instance. */
  async register (who: InstanceIdentity, publicKey: string, region: string | null = null): Promise<RegisterTunnelResponse> {
    const gateway = await this.#o.gateway.current()
    validatePeerKey(publicKey, gateway.publicKey)
    const now = this.#o.now()
    let row: { subdomain: string, address: string | number, peers: TunnelFleetPeer[] | undefined }
    try {
      row = await this.#o.db.transaction(async trx => {
        const current = await trx('instances').where({ id: who.instanceId, token_jti: who.jti }).forUpdate().first('public_key', 'subdomain', 'suspended_at') as { public_key: string | null, subdomain: string, suspended_at: Date | null } | undefined
        if (current === undefined) throw unauthorized()
        // Over the owner's plan limit (services/plan-enforcement.ts): kept, but not routed until the plan allows it.
        if (current.suspended_at !== null) {
          throw apiError('SUBSCRIPTION_REQUIRED', 'This instance is suspended: it is over your plan\'s instance limit. Upgrade the plan or delete another instance', { reason: 'instance_suspended' })
        }
        await trx('instances').where({ id: who.instanceId }).update({ region })
        const peers = await this.#o.gateway.placedPeers?.(trx, who.instanceId, region)
        for (const peer of peers ?? []) if (peer.public_key === publicKey) throw invalidKey('is the gateway\'s own key')
        if (current.public_key !== publicKey) {
          const holder = await trx('instances').where({ public_key: publicKey }).first('id')
          if (holder !== undefined) throw keyInUse()
        }
        // What a gateway saw belongs to the old key: a new key starts without handshakes.
        const keyEvidence = current.public_key === publicKey ? {} : { last_handshake_at: null, disconnected_at: null, tunnel_endpoint: null, tunnel_rx_bytes: null, tunnel_tx_bytes: null }
        await trx('instances').where({ id: who.instanceId }).update({
          public_key: publicKey,
          registered_at: now,
          tunnel_state: 'connected',
          ...keyEvidence,
          updated_at: now,
        })
        if (current.public_key !== publicKey) await bumpConfigVersion(trx)
        const address = await this.#o.ipam.addressOf(trx, who.instanceId)
        if (address === undefined) throw new Error(`instance ${who.instanceId} has no tunnel address`)
        return { subdomain: current.subdomain, address, peers }
      })
    } catch (err) {
      if (isUniqueViolation(err, 'instances_public_key_unique')) throw keyInUse()
      throw err
    }
    const custom = (await this.#o.customDomains.domainsOf(this.#o.db, [who.instanceId])).get(who.instanceId) ?? []
    const primary = row.peers?.[0]
    const peer: TunnelPeer = primary === undefined
      ? { public_key: gateway.publicKey, endpoint: gateway.endpoint, allowed_ips: this.allowedIps, persistent_keepalive: PERSISTENT_KEEPALIVE_SECONDS }
      : { public_key: primary.public_key, endpoint: primary.endpoint, allowed_ips: primary.allowed_ips, persistent_keepalive: primary.persistent_keepalive }
    return {
      status: 'registered',
      tunnel_config: {
        interface: { address: `${formatIPv4(toAddress(row.address))}/32` },
        peer,
        ...(row.peers !== undefined && row.peers.length > 0 ? { peers: row.peers } : {}),
      },
      domains: { subdomain: this.fullDomain(row.subdomain), custom_domains: custom.filter(d => d.routed).map(d => d.domain) },
    }
  }

  /**
   * The gateways the instance is placed on now, primary first (the heartbeat's `peers`); undefined
   * without a fleet-aware gateway source or while no gateway is alive.
   */
  async placedPeers (instanceId: string): Promise<TunnelFleetPeer[] | undefined> {
    const peers = await this.#o.gateway.placedPeers?.(this.#o.db, instanceId)
    return peers === undefined || peers.length === 0 ? undefined : peers
  }

  /**
   * Records that the container's agent runs. It does not make the tunnel `connected` nor move
   * `last_seen`: only a gateway's handshake report does (instanceStatus). The container's own
   * timestamp is not trusted for anything.
   */
  async heartbeat (who: InstanceIdentity): Promise<void> {
    const current = await new Promise<boolean>((resolve, reject) => {
      this.#pendingHeartbeats.push({ instanceId: who.instanceId, jti: who.jti, resolve, reject })
      if (!this.#heartbeatFlushScheduled) {
        this.#heartbeatFlushScheduled = true
        setImmediate(() => { this.#flushHeartbeats() })
      }
    })
    if (!current) throw unauthorized()
  }

  /**
   * Heartbeats that arrived in the same event-loop turn share one UPDATE: one round trip and one
   * statement for the lot instead of one each. Each row is updated only while the presented token
   * is its current one (that is the revocation check); rows are locked in id order, so batches
   * running side by side (several API processes) cannot deadlock.
   */
  #flushHeartbeats (): void {
    this.#heartbeatFlushScheduled = false
    const pending = this.#pendingHeartbeats
    this.#pendingHeartbeats = []
    pending.sort((a, b) => a.instanceId < b.instanceId ? -1 : a.instanceId > b.instanceId ? 1 : 0)
    for (let i = 0; i < pending.length; i += HEARTBEAT_BATCH_MAX) {
      const batch = pending.slice(i, i + HEARTBEAT_BATCH_MAX)
      this.#updateHeartbeats(batch).then(current => {
        for (const beat of batch) beat.resolve(current.has(`${beat.instanceId} ${beat.jti}`))
      }, err => {
        for (const beat of batch) beat.reject(err)
      })
    }
  }

  /** Returns "<instanceId> <jti>" of every row updated. */
  async #updateHeartbeats (batch: PendingHeartbeat[]): Promise<Set<string>> {
    const pairs = [...new Map(batch.map(b => [`${b.instanceId} ${b.jti}`, b])).values()]
    const result = await this.#o.db.raw(`
      with presented (id, jti) as (values ${pairs.map(() => '(?, ?)').join(', ')}),
           locked as (
             select i.id from instances i join presented p on i.id = p.id and i.token_jti = p.jti
              order by i.id for update of i)
      update instances as i set tunnel_state = 'connected'
        from locked
       where i.id = locked.id and ${ASYNC_COMMIT}
      returning i.id, i.token_jti`, pairs.flatMap(b => [b.instanceId, b.jti]))
    return new Set((result.rows as Array<{ id: string, token_jti: string }>).map(r => `${r.id} ${r.token_jti}`))
  }

  async disconnect (who: InstanceIdentity): Promise<void> {
    const now = this.#o.now()
    const updated = await this.#o.db('instances').where({ id: who.instanceId, token_jti: who.jti })
      .update({ tunnel_state: 'disconnected', disconnected_at: now, updated_at: now })
    if (updated === 0) throw unauthorized()
  }

  async status (who: InstanceIdentity): Promise<TunnelStatusResponse> {
    const row = await this.#o.db('instances').where({ id: who.instanceId, token_jti: who.jti })
      .first('subdomain', 'public_key', 'tunnel_state', 'last_seen', 'last_handshake_at', 'disconnected_at', 'suspended_at') as (TunnelStateRow & { subdomain: string }) | undefined
    if (row === undefined) throw unauthorized()
    const custom = (await this.#o.customDomains.domainsOf(this.#o.db, [who.instanceId])).get(who.instanceId) ?? []
    return {
      tunnel_status: instanceStatus(row, this.#o.now(), this.statusWindowSeconds),
      suspended_reason: suspendedReason(row),
      domains: {
        subdomain: { domain: this.fullDomain(row.subdomain), status: subdomainStatus(row) },
        custom_domains: custom.map(d => ({ domain: d.domain, status: d.status, ssl_status: d.ssl_status })),
      },
    }
  }

  /** Every instance with a registered key and not suspended, as gateways need them. */
  async listPeers (db: Queryable = this.#o.db): Promise<PeerEntry[]> {
    const rows = await db('instances as i')
      .join('tunnel_ips as t', 't.instance_id', 'i.id')
      .whereNotNull('i.public_key')
      .whereNull('i.suspended_at') // over the plan limit: not routed
      .orderBy('i.id')
      .select('i.id', 'i.public_key', 'i.subdomain', 't.address', 'i.tunnel_endpoint') as Array<{ id: string, public_key: string, subdomain: string, address: string | number, tunnel_endpoint: string | null }>
    const custom = await this.#o.customDomains.domainsOf(db, rows.map(r => r.id))
    return rows.map(r => ({
      instanceId: r.id,
      publicKey: r.public_key,
      tunnelIp: formatIPv4(toAddress(r.address)),
      hostnames: [this.fullDomain(r.subdomain), ...(custom.get(r.id) ?? []).filter(d => d.routed).map(d => d.domain)],
      port: UPSTREAM_PORT,
      ...(r.tunnel_endpoint !== null ? { endpoint: r.tunnel_endpoint } : {}),
    }))
  }

  async configVersion (db: Queryable = this.#o.db): Promise<number> {
    const row = await db('gateway_config').where({ id: 1 }).first('version') as { version: string | number }
    return Number(row.version)
  }

  /** Version and peers read from one snapshot, so the version describes exactly these peers. */
  async configSnapshot (): Promise<PeerSnapshot> {
    return await this.#o.db.transaction(async (trx: Knex.Transaction) => {
      const version = await this.configVersion(trx)
      const peers = await this.listPeers(trx)
      return { version, peers }
    }, { isolationLevel: 'repeatable read' })
  }
}

function keyInUse (): Error {
  return apiError('KEY_IN_USE', 'This WireGuard public key is already registered to another instance: generate a new key pair', {})
}
