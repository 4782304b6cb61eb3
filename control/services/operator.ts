/**
 * The operator overview (GET /v1/admin/overview): one bounded query per section, each ordered so
 * its LIMIT keeps the newest or most urgent rows, and each served by an index or a small table.
 */
import {
  ADMIN_LIMITS, CANCELLATION_WINDOW_DAYS, CERTIFICATE_EXPIRY_WINDOW_DAYS,
  type AdminOverview,
} from '../../proto/api/admin.ts'
import type { Db } from '../db/knex.ts'
import { isoSeconds } from '../time.ts'
import { instanceStatus, type TunnelStateRow } from './tunnel.ts'

const DAY_MS = 24 * 3600 * 1000
/** Subscriptions that pay or are about to (Stripe's statuses; `past_due` still holds its plan for a while). */
const PAYING_STATUSES = ['active', 'trialing', 'past_due']

function iso (value: Date | string | null): string | null {
  return value === null ? null : isoSeconds(new Date(value))
}

export class OperatorService {
  readonly #db: Db
  readonly #now: () => Date
  readonly #statusWindowSeconds: number

  constructor (options: { db: Db, now: () => Date, statusWindowSeconds: number }) {
    this.#db = options.db
    this.#now = options.now
    this.#statusWindowSeconds = options.statusWindowSeconds
  }

  async overview (): Promise<AdminOverview> {
    const db = this.#db
    const now = this.#now()
    const [gateways, instances, signups, paying, cancellations, failures, certificates] = await Promise.all([
      db('gateways').orderBy([{ column: 'hello_at', order: 'desc' }, { column: 'id' }]).limit(ADMIN_LIMITS.gateways)
        .select('id', 'endpoint', 'software', 'hello_at', 'report_at', 'report_peers', 'region', 'alive', 'draining',
          db.raw('(select count(*) from placements p where p.primary_gateway = gateways.id or p.backup_gateway = gateways.id) as placed')),
      db('instances as i').join('users as u', 'u.id', 'i.user_id')
        .orderBy([{ column: 'i.created_at', order: 'desc' }, { column: 'i.id' }]).limit(ADMIN_LIMITS.instances)
        .select('i.id', 'i.name', 'i.subdomain', 'u.email as owner_email', 'i.public_key', 'i.tunnel_state', 'i.last_seen',
          'i.last_handshake_at', 'i.disconnected_at', 'i.suspended_at', 'i.created_at'),
      db('users').orderBy([{ column: 'created_at', order: 'desc' }, { column: 'id' }]).limit(ADMIN_LIMITS.recentSignups)
        .select('email', 'created_at', 'account_status'),
      db('billing_subscriptions as s').join('users as u', 'u.id', 's.user_id')
        .whereIn('s.status', PAYING_STATUSES).whereNull('s.ended_at')
        .orderBy([{ column: 's.updated_at', order: 'desc' }, { column: 's.id' }]).limit(ADMIN_LIMITS.payingAccounts)
        .select('u.email', 's.plan', 's.status', 's.current_period_end', 's.cancel_at_period_end'),
      db('billing_subscriptions as s').join('users as u', 'u.id', 's.user_id')
        .where('s.canceled_at', '>=', new Date(now.getTime() - CANCELLATION_WINDOW_DAYS * DAY_MS))
        .orderBy([{ column: 's.canceled_at', order: 'desc' }, { column: 's.id' }]).limit(ADMIN_LIMITS.cancellations)
        .select('u.email', 's.plan', 's.status', 's.canceled_at', 's.ended_at'),
      db('stripe_webhook_failures').orderBy([{ column: 'last_failed_at', order: 'desc' }, { column: 'event_id' }]).limit(ADMIN_LIMITS.webhookFailures)
        .select('event_id', 'event_type', 'attempts', 'last_error', 'first_failed_at', 'last_failed_at', 'resolved_at'),
      db('certificate_states').whereNotNull('not_after').where('not_after', '<=', new Date(now.getTime() + CERTIFICATE_EXPIRY_WINDOW_DAYS * DAY_MS))
        .orderBy([{ column: 'not_after' }, { column: 'hostname' }]).limit(ADMIN_LIMITS.expiringCertificates)
        .select('hostname', 'state', 'not_after', 'last_error', 'gateway_id', 'reported_at'),
    ])
    return {
      gateways: gateways.map(g => ({
        id: g.id, endpoint: g.endpoint, software: g.software, hello_at: iso(g.hello_at)!, last_report_at: iso(g.report_at), peer_count: g.report_peers,
        region: g.region, alive: g.alive, draining: g.draining, placed_instances: Number(g.placed),
      })),
      instances: instances.map(i => ({
        id: i.id,
        name: i.name,
        subdomain: i.subdomain,
        owner_email: i.owner_email,
        status: instanceStatus(i as TunnelStateRow, now, this.#statusWindowSeconds),
        last_seen: iso(i.last_seen),
        created_at: iso(i.created_at)!,
      })),
      recent_signups: signups.map(u => ({ email: u.email, created_at: iso(u.created_at)!, verified: u.account_status === 'active' })),
      paying_accounts: paying.map(p => ({
        email: p.email, plan: p.plan, status: p.status, current_period_end: iso(p.current_period_end), cancel_at_period_end: p.cancel_at_period_end,
      })),
      cancellations: cancellations.map(c => ({ email: c.email, plan: c.plan, status: c.status, canceled_at: iso(c.canceled_at)!, ended_at: iso(c.ended_at) })),
      webhook_failures: failures.map(f => ({
        event_id: f.event_id,
        event_type: f.event_type,
        attempts: f.attempts,
        last_error: f.last_error,
        first_failed_at: iso(f.first_failed_at)!,
        last_failed_at: iso(f.last_failed_at)!,
        resolved_at: iso(f.resolved_at),
      })),
      expiring_certificates: certificates.map(c => ({
        hostname: c.hostname, state: c.state, not_after: iso(c.not_after)!, last_error: c.last_error, gateway_id: c.gateway_id, reported_at: iso(c.reported_at)!,
      })),
    }
  }
}
