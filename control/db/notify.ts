/**
 * Change notifications between control replicas over Postgres LISTEN/NOTIFY. A writer calls
 * `notifyConfigChanged` inside the transaction that bumps the gateway configuration version;
 * Postgres delivers the notification to every listening session when (and only if) that
 * transaction commits. Each replica keeps one dedicated LISTEN connection (`NotificationListener`,
 * outside the knex pool), reconnecting with backoff when it drops; the payload is the writer's
 * schema, so replicas of other deployments sharing the database (tests do) are not woken. PGlite
 * is one process: nothing to send.
 */
import pg from 'pg'
import type { Logger } from 'pino'
import { isPostgres, type Queryable } from './knex.ts'

/** The channel of gateway configuration version bumps (bumpConfigVersion). */
export const CONFIG_CHANNEL = 'cc_config_version'

export async function notifyConfigChanged (db: Queryable): Promise<void> {
  if (isPostgres(db)) await db.raw('select pg_notify(?, current_schema())', [CONFIG_CHANNEL])
}

/**
 * Raises the gateway configuration version; call inside the transaction that changes the peer set.
 * Every replica's long-polls hear of it at commit.
 */
export async function bumpConfigVersion (db: Queryable): Promise<number> {
  const rows = await db('gateway_config').where({ id: 1 }).increment('version', 1).returning('version') as Array<{ version: string | number }>
  await notifyConfigChanged(db)
  return Number(rows[0].version)
}

export interface NotificationListenerOptions {
  /** The DATABASE_URL (its search_path, if any, decides which schema's notifications count). */
  url: string
  channel: string
  /** A notification for this replica's schema arrived. */
  onNotify: () => void
  /**
   * The listener is up (true; notifications may have been missed while it was down, so reread)
   * or has lost its connection (false; until it is back, poll).
   */
  onListening: (listening: boolean) => void
  logger: Logger
  /** Reconnect backoff: first delay and ceiling (default 100 ms doubling up to 5 s). */
  retryMs?: number
  maxRetryMs?: number
}

export class NotificationListener {
  readonly #o: NotificationListenerOptions
  #client: pg.Client | null = null
  #retryTimer: NodeJS.Timeout | null = null
  #delayMs: number
  #closed = false
  #listening = false
  #backendPid: number | null = null

  constructor (options: NotificationListenerOptions) {
    this.#o = options
    this.#delayMs = options.retryMs ?? 100
  }

  get listening (): boolean { return this.#listening }
  /** The LISTEN session's server process (pg_stat_activity.pid), while connected. */
  get backendPid (): number | null { return this.#backendPid }

  /** Connects in the background; failures are retried until close(). */
  start (): void {
    void this.#connect()
  }

  async close (): Promise<void> {
    this.#closed = true
    if (this.#retryTimer !== null) clearTimeout(this.#retryTimer)
    this.#retryTimer = null
    const client = this.#client
    this.#client = null
    this.#setListening(false)
    if (client !== null) await client.end().catch(() => {})
  }

  async #connect (): Promise<void> {
    if (this.#closed) return
    const client = new pg.Client({ connectionString: this.#o.url, application_name: 'erugo-cloud-control-listen', keepAlive: true, connectionTimeoutMillis: 5_000 })
    this.#client = client
    let lost = false
    const onLost = (err?: Error): void => {
      if (lost) return
      lost = true
      if (this.#client === client) this.#client = null
      this.#backendPid = null
      client.removeAllListeners('notification')
      client.end().catch(() => {})
      if (this.#closed) return
      if (this.#listening) this.#o.logger.warn({ err: err?.message }, 'configuration change listener lost its connection: polling until it is back')
      this.#setListening(false)
      this.#scheduleReconnect()
    }
    client.on('error', onLost)
    client.on('end', () => { onLost() })
    try {
      await client.connect()
      const schema = (await client.query<{ schema: string }>('select current_schema() as schema')).rows[0].schema
      client.on('notification', message => {
        if (message.channel === this.#o.channel && message.payload === schema) this.#o.onNotify()
      })
      await client.query(`listen ${pg.escapeIdentifier(this.#o.channel)}`)
      if (lost || this.#closed) return
      this.#backendPid = (client as unknown as { processID: number | null }).processID
      this.#delayMs = this.#o.retryMs ?? 100
      this.#setListening(true)
    } catch (err) {
      onLost(err as Error)
    }
  }

  #scheduleReconnect (): void {
    if (this.#closed || this.#retryTimer !== null) return
    const delay = this.#delayMs
    this.#delayMs = Math.min(this.#delayMs * 2, this.#o.maxRetryMs ?? 5_000)
    this.#retryTimer = setTimeout(() => {
      this.#retryTimer = null
      void this.#connect()
    }, delay)
    this.#retryTimer.unref()
  }

  #setListening (listening: boolean): void {
    if (this.#listening === listening) return
    this.#listening = listening
    this.#o.onListening(listening)
  }
}
