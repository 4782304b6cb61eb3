/**
 * Stores what gateways report. Per peer (matched by the registered WireGuard key, and by instance
 * id when the gateway names one): the latest handshake only ever moves forward, `last_seen`
 * becomes the newest of what it was, the handshake and the last data received; endpoint and byte
 * counters are the gateway's current view. Per hostname: the certificate manager's state.
 *
 * A key that no instance holds any more (deleted, regenerated) matches nothing: a late report
 * cannot revive it. Gateway clocks are not trusted past control's: a time in the future counts as
 * now. One UPDATE ... FROM (VALUES ...) per chunk keeps a report of thousands of peers cheap.
 */
import type { CertificateReport, PeerReport } from '../../proto/rpc/index.ts'
import type { Queryable } from '../db/knex.ts'

/** Rows per statement when reports are written. */
export const CHUNK = 500

/** A gateway's time, never later than control's `now` (a gateway clock ahead must not make a handshake fresh for longer). */
export function clampToNow (iso: string | null | undefined, now: Date): Date | null {
  if (iso === null || iso === undefined) return null
  const t = Date.parse(iso)
  if (!Number.isFinite(t)) return null
  return t > now.getTime() ? now : new Date(t)
}

/** Applies peer reports; returns how many matched a registered instance. */
export async function recordPeerReports (db: Queryable, peers: PeerReport[], now: Date): Promise<number> {
  let matched = 0
  for (let i = 0; i < peers.length; i += CHUNK) {
    const chunk = peers.slice(i, i + CHUNK)
    const values = chunk.map(() => '(?::text, ?::text, ?::timestamptz, ?::timestamptz, ?::text, ?::bigint, ?::bigint)').join(', ')
    const bindings = chunk.flatMap(p => [
      p.publicKey,
      p.instanceId ?? null,
      clampToNow(p.lastHandshakeAt, now),
      clampToNow(p.lastRxAt, now),
      p.endpoint,
      p.rxBytes,
      p.txBytes,
    ])
    const result = await db.raw(`
      update instances as i set
        last_handshake_at = case
          when v.handshake_at is not null and (i.last_handshake_at is null or v.handshake_at > i.last_handshake_at) then v.handshake_at
          else i.last_handshake_at end,
        last_seen = greatest(i.last_seen, v.handshake_at, v.rx_at),
        tunnel_endpoint = coalesce(v.endpoint, i.tunnel_endpoint),
        tunnel_rx_bytes = v.rx_bytes,
        tunnel_tx_bytes = v.tx_bytes
      from (values ${values}) as v(public_key, instance_id, handshake_at, rx_at, endpoint, rx_bytes, tx_bytes)
      where i.public_key = v.public_key and (v.instance_id is null or i.id = v.instance_id)`, bindings) as { rowCount?: number, affectedRows?: number }
    matched += result.rowCount ?? result.affectedRows ?? 0
  }
  return matched
}

/** Upserts certificate states (the newest report per hostname wins). */
export async function recordCertificateReports (db: Queryable, gatewayId: string, certificates: CertificateReport[], now: Date): Promise<number> {
  for (let i = 0; i < certificates.length; i += CHUNK) {
    const rows = certificates.slice(i, i + CHUNK).map(c => ({
      hostname: c.hostname,
      gateway_id: gatewayId,
      state: c.state,
      not_after: c.notAfter === undefined ? null : new Date(c.notAfter),
      last_error: c.lastError ?? null,
      next_retry_at: c.nextRetryAt === undefined ? null : new Date(c.nextRetryAt),
      reported_at: now,
    }))
    await db('certificate_states').insert(rows).onConflict('hostname').merge()
  }
  return certificates.length
}

export interface CertificateStateRow {
  hostname: string
  gateway_id: string
  state: 'pending' | 'active' | 'failing'
  not_after: Date | null
  last_error: string | null
  next_retry_at: Date | null
  reported_at: Date
}

/** Certificate states of `hostnames` as last reported (for ssl_status; absent = never reported). */
export async function certificateStates (db: Queryable, hostnames: string[]): Promise<Map<string, CertificateStateRow>> {
  const out = new Map<string, CertificateStateRow>()
  if (hostnames.length === 0) return out
  const rows = await db('certificate_states').whereIn('hostname', hostnames) as CertificateStateRow[]
  for (const r of rows) out.set(r.hostname, r)
  return out
}
