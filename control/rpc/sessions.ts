/**
 * Which gateway holds a session with which instance, from the gateways' reports. A session is live
 * on gateway G for instance I when G's reports show a handshake from I's current key within the
 * session window (HANDSHAKE_FRESH_SECONDS: after REJECT_AFTER_TIME = 180 s a WireGuard session
 * carries nothing, paper 6.1) and G is alive. The live set is what snapshots route by, so every
 * change of it bumps the configuration version: here when a report changes it, and in the
 * placement sweep when sessions or gateways lapse.
 */
import type { PeerReport } from '../../proto/rpc/index.ts'
import type { Queryable } from '../db/knex.ts'
import { publishSessionLiveness } from './placement.ts'
import { CHUNK, clampToNow } from './reports.ts'

/**
 * Stores the handshakes of `gatewayId`'s report (newest wins per instance and key), marks the
 * gateway alive and republishes its sessions' liveness. Returns whether the published state
 * (the gateway's `alive`, its sessions' `live`) changed: then the caller bumps the version.
 */
export async function recordSessions (db: Queryable, gatewayId: string, peers: PeerReport[], now: Date, freshSince: Date): Promise<boolean> {
  const seen = peers.filter(p => p.lastHandshakeAt !== null && p.lastHandshakeAt !== undefined)
  for (let i = 0; i < seen.length; i += CHUNK) {
    const chunk = seen.slice(i, i + CHUNK)
    const values = chunk.map(() => '(?::text, ?::text, ?::timestamptz)').join(', ')
    const bindings = chunk.flatMap(p => [p.publicKey, p.instanceId ?? null, clampToNow(p.lastHandshakeAt, now)])
    await db.raw(`
      insert into gateway_sessions (instance_id, gateway_id, public_key, last_handshake_at, live)
      select i.id, ?, v.public_key, v.handshake_at, false
        from (values ${values}) as v(public_key, instance_id, handshake_at)
        join instances i on i.public_key = v.public_key and (v.instance_id is null or i.id = v.instance_id)
       where v.handshake_at is not null
      on conflict (instance_id, gateway_id) do update set
        last_handshake_at = case
          when excluded.public_key <> gateway_sessions.public_key or excluded.last_handshake_at > gateway_sessions.last_handshake_at then excluded.last_handshake_at
          else gateway_sessions.last_handshake_at end,
        public_key = excluded.public_key`, [gatewayId, ...bindings])
  }
  const revived = await db.raw('update gateways set alive = true where id = ? and not alive returning id', [gatewayId])
  const sessions = await publishSessionLiveness(db, freshSince, gatewayId)
  return (revived.rows as unknown[]).length > 0 || sessions > 0
}

/** Instance id -> gateway ids holding a live session with it, freshest first. */
export async function liveSessions (db: Queryable): Promise<Map<string, string[]>> {
  const rows = await db('gateway_sessions').where({ live: true })
    .orderBy([{ column: 'instance_id' }, { column: 'last_handshake_at', order: 'desc' }, { column: 'gateway_id' }])
    .select('instance_id', 'gateway_id') as Array<{ instance_id: string, gateway_id: string }>
  const out = new Map<string, string[]>()
  for (const r of rows) {
    const list = out.get(r.instance_id) ?? []
    list.push(r.gateway_id)
    out.set(r.instance_id, list)
  }
  return out
}
