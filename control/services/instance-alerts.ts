/**
 * Owner alerts: one mail when an instance has been offline longer than CC_ALERT_OFFLINE_AFTER, and
 * one when it is back online. Offline is the `disconnected` of instanceStatus (services/tunnel.ts):
 * no fresh handshake within the status window, or a goodbye newer than the last handshake. It
 * began at the goodbye, else when the last handshake went stale (handshake + status window).
 *
 * Only instances that were connected once are watched (a handshake seen), with `alerts_offline`
 * on, not suspended. Each mail is claimed by a conditional UPDATE (offline_alerted_at,
 * alert_mail_at) before it is queued, so two replicas or a restart never send one twice; and no
 * instance gets two mails within one threshold period (a back-online mail waits for the period to
 * end, and is dropped if the instance went offline again meanwhile).
 */
import type { Logger } from 'pino'
import type { Db } from '../db/knex.ts'
import { instanceBackOnlineMail, instanceOfflineMail, type Mailer } from './mail.ts'
import { instanceStatus, type TunnelStateRow } from './tunnel.ts'

export interface InstanceAlertOptions {
  db: Db
  mailer: Mailer
  now: () => Date
  logger: Logger
  /** CC_ALERT_OFFLINE_AFTER. */
  offlineAfterSeconds: number
  /** CC_TUNNEL_STATUS_WINDOW: how recent a handshake must be for `connected`. */
  statusWindowSeconds: number
  /** The dashboard's origin (CC_PUBLIC_URL): mails link to /instances/{id}. */
  publicUrl: string
  fullDomain: (subdomain: string) => string
  /** Rows looked at per query (default 200); a pass runs at most `maxBatches` (default 10) of each kind. */
  batchSize?: number
  maxBatches?: number
}

interface CandidateRow extends TunnelStateRow {
  id: string
  subdomain: string
  email: string
}

export interface InstanceAlertResult { offline: number, backOnline: number }

export class InstanceAlertService {
  readonly #o: InstanceAlertOptions

  constructor (options: InstanceAlertOptions) {
    this.#o = options
  }

  /** When an offline instance went offline: its goodbye, else when its last handshake went stale. */
  offlineSince (row: TunnelStateRow): Date | null {
    if (row.last_handshake_at === null) return null
    const handshakeAt = new Date(row.last_handshake_at).getTime()
    if (row.disconnected_at !== null && new Date(row.disconnected_at).getTime() >= handshakeAt) return new Date(row.disconnected_at)
    return new Date(handshakeAt + this.#o.statusWindowSeconds * 1000)
  }

  /** One pass: offline mails, then back-online mails. Safe to run on several replicas at once. */
  async run (): Promise<InstanceAlertResult> {
    const now = this.#o.now()
    const result = { offline: 0, backOnline: 0 }
    const batches = this.#o.maxBatches ?? 10
    for (let i = 0; i < batches; i++) {
      const sent = await this.#offlinePass(now)
      result.offline += sent.sent
      if (sent.seen < (this.#o.batchSize ?? 200)) break
    }
    for (let i = 0; i < batches; i++) {
      const sent = await this.#backOnlinePass(now)
      result.backOnline += sent.sent
      if (sent.seen < (this.#o.batchSize ?? 200)) break
    }
    if (result.offline > 0 || result.backOnline > 0) this.#o.logger.info(result, 'instance alert mails queued')
    return result
  }

  #link (instanceId: string): string {
    return `${this.#o.publicUrl}/instances/${encodeURIComponent(instanceId)}`
  }

  #candidates (now: Date): ReturnType<Db> {
    const mailBefore = new Date(now.getTime() - this.#o.offlineAfterSeconds * 1000)
    return this.#o.db('instances as i').join('users as u', 'u.id', 'i.user_id')
      .where('i.alerts_offline', true).whereNull('i.suspended_at').whereNotNull('i.public_key').whereNotNull('i.last_handshake_at')
      .andWhere(q => { void q.whereNull('i.alert_mail_at').orWhere('i.alert_mail_at', '<=', mailBefore) })
      .select('i.id', 'i.subdomain', 'i.public_key', 'i.tunnel_state', 'i.last_seen', 'i.last_handshake_at', 'i.disconnected_at', 'i.suspended_at', 'u.email')
      .orderBy('i.id').limit(this.#o.batchSize ?? 200)
  }

  async #offlinePass (now: Date): Promise<{ seen: number, sent: number }> {
    const threshold = this.#o.offlineAfterSeconds * 1000
    const offlineBefore = new Date(now.getTime() - threshold)
    const staleBefore = new Date(now.getTime() - threshold - this.#o.statusWindowSeconds * 1000)
    const rows = await this.#candidates(now).whereNull('i.offline_alerted_at')
      .andWhere(q => {
        void q.where('i.last_handshake_at', '<=', staleBefore)
          .orWhere(g => { void g.whereRaw('i.disconnected_at >= i.last_handshake_at').andWhere('i.disconnected_at', '<=', offlineBefore) })
      }) as CandidateRow[]
    let sent = 0
    for (const row of rows) {
      const since = this.offlineSince(row)
      if (instanceStatus(row, now, this.#o.statusWindowSeconds) !== 'disconnected' || since === null || now.getTime() - since.getTime() < threshold) continue
      const claimed = await this.#claim(row.id, now, 'offline')
      if (!claimed) continue
      this.#o.mailer.send(instanceOfflineMail(row.email, this.#o.fullDomain(row.subdomain), this.#link(row.id), since))
      sent++
    }
    return { seen: rows.length, sent }
  }

  async #backOnlinePass (now: Date): Promise<{ seen: number, sent: number }> {
    const freshSince = new Date(now.getTime() - this.#o.statusWindowSeconds * 1000)
    const rows = await this.#candidates(now).whereNotNull('i.offline_alerted_at')
      .where('i.last_handshake_at', '>=', freshSince)
      .andWhere(q => { void q.whereNull('i.disconnected_at').orWhereRaw('i.disconnected_at < i.last_handshake_at') }) as CandidateRow[]
    let sent = 0
    for (const row of rows) {
      if (instanceStatus(row, now, this.#o.statusWindowSeconds) !== 'connected') continue
      const claimed = await this.#claim(row.id, now, 'back-online')
      if (!claimed) continue
      this.#o.mailer.send(instanceBackOnlineMail(row.email, this.#o.fullDomain(row.subdomain), this.#link(row.id)))
      sent++
    }
    return { seen: rows.length, sent }
  }

  /** Records the mail before it is queued; false when another pass already did (or the owner opted out). */
  async #claim (instanceId: string, now: Date, kind: 'offline' | 'back-online'): Promise<boolean> {
    const mailBefore = new Date(now.getTime() - this.#o.offlineAfterSeconds * 1000)
    const rows = await this.#o.db('instances')
      .where({ id: instanceId, alerts_offline: true })
      .modify(q => { if (kind === 'offline') void q.whereNull('offline_alerted_at'); else void q.whereNotNull('offline_alerted_at') })
      .andWhere(q => { void q.whereNull('alert_mail_at').orWhere('alert_mail_at', '<=', mailBefore) })
      .update({ offline_alerted_at: kind === 'offline' ? now : null, alert_mail_at: now })
      .returning('id') as unknown[]
    return rows.length > 0
  }
}
