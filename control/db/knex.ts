/**
 * The database handle: knex over `pg` when a Postgres URL is given, otherwise an embedded PGlite
 * database in `<dataDir>/pglite` (or in memory) through the knex-pglite dialect. Same migrations,
 * same queries either way.
 */
import { PGlite } from '@electric-sql/pglite'
import knexFactory, { type Knex } from 'knex'
import ClientPGLite from 'knex-pglite'
import { join } from 'node:path'
import type { Logger } from 'pino'
import { ensurePrivateDirectory, restrictTree, usePrivateUmask } from './private-files.ts'

export type Db = Knex
/** A knex instance or an open transaction: what services accept. */
export type Queryable = Knex | Knex.Transaction

export interface DbOptions {
  /** postgres://... ; unset = PGlite. */
  url?: string
  /** PGlite data directory parent; unset with no url = in-memory PGlite. */
  dataDir?: string
  /** An open PGlite instance to use instead (tests start from a migrated snapshot). */
  pglite?: PGlite
  /** Postgres schema to use (created if missing); tests use one per file. */
  schema?: string
  /** Fail a request instead of queueing when the database is unreachable (ms). */
  acquireTimeoutMs?: number
  poolMax?: number
  /** Postgres application_name: shows in pg_stat_activity. */
  applicationName?: string
  /** Where knex's own warnings go (e.g. "Connection Error" while the server is away). */
  logger?: Logger
}

function knexLog (logger: Logger | undefined): Knex.Config['log'] {
  if (logger === undefined) return { warn () {}, error () {}, deprecate () {}, debug () {} }
  return {
    warn: (message: unknown) => { logger.warn({ knex: String(message) }, 'database warning') },
    error: (message: unknown) => { logger.error({ knex: String(message) }, 'database error') },
    deprecate: (message: unknown) => { logger.debug({ knex: String(message) }, 'database deprecation') },
    debug: () => {},
  }
}

/**
 * PGlite runs each query synchronously on this thread (WebAssembly), and an awaited result comes
 * back as a microtask: a run of queries (a report's access log in 500-row chunks, a migration)
 * would hold the event loop for its whole length, and in `cloud-connect start` that loop also
 * carries the gateway's WireGuard, TCP timers and HTTPS. After each query this client lets the
 * loop poll for I/O once (setImmediate), so the longest hold is one query, not a run of them.
 */
interface QueryingClient { _query (connection: unknown, obj: unknown): Promise<unknown> }
class YieldingPGLite extends (ClientPGLite as unknown as new (config: Knex.Config) => QueryingClient) {
  override async _query (connection: unknown, obj: unknown): Promise<unknown> {
    const out = await super._query(connection, obj)
    await new Promise(resolve => { setImmediate(resolve) })
    return out
  }
}

export function createDb (options: DbOptions): Db {
  if (options.schema !== undefined && !/^[a-z_][a-z0-9_]{0,62}$/.test(options.schema)) {
    throw new Error(`invalid schema name ${JSON.stringify(options.schema)}`)
  }
  const acquireConnectionTimeout = options.acquireTimeoutMs ?? 5000
  if (options.url !== undefined) {
    return knexFactory({
      client: 'pg',
      connection: {
        connectionString: options.url,
        // Bound connection attempts so an unreachable server yields 503 quickly, not a hang.
        connectionTimeoutMillis: acquireConnectionTimeout,
        keepAlive: true,
        application_name: options.applicationName ?? 'erugo-cloud-control',
      },
      searchPath: options.schema !== undefined ? [options.schema] : undefined,
      pool: {
        min: 0,
        max: options.poolMax ?? 10,
        // Schema must exist before search_path is useful; harmless when it does.
        afterCreate: options.schema !== undefined
          ? (conn: { query: (sql: string, cb: (err: Error | null) => void) => void }, done: (err: Error | null, conn: unknown) => void) => {
              conn.query(`create schema if not exists "${options.schema}"`, err => { done(err, conn) })
            }
          : undefined,
      },
      acquireConnectionTimeout,
      log: knexLog(options.logger),
    })
  }
  const pglite = options.pglite ?? (options.dataDir !== undefined ? openPrivatePglite(options.dataDir, options.logger) : undefined)
  return knexFactory({
    client: YieldingPGLite as unknown as typeof ClientPGLite,
    // knex-pglite reads `pglite` from the connection object (knex's type does not know it).
    connection: (pglite !== undefined ? { pglite } : {}) as Knex.StaticConnectionConfig,
    acquireConnectionTimeout: 60_000,
    log: knexLog(options.logger),
  })
}

/** Whether `db` talks to a Postgres server (as opposed to the embedded PGlite, one process only). */
/** A unique-constraint violation (SQLSTATE 23505, Postgres and PGlite alike), of `constraint` when named. */
export function isUniqueViolation (err: unknown, constraint?: string): boolean {
  const e = err as { code?: unknown, constraint?: unknown }
  return e.code === '23505' && (constraint === undefined || e.constraint === constraint)
}

export function isPostgres (db: Knex): boolean {
  return (db.client as { config?: { client?: unknown } }).config?.client === 'pg'
}

/**
 * PGlite on disk in `<dataDir>/pglite`, readable by this user only (db/private-files.ts): the
 * directories 0700 before PGlite writes, a private umask for what it creates later, and once it
 * has opened the directory (initdb chmods its files 0666) group and other bits removed.
 */
function openPrivatePglite (dataDir: string, logger: Logger | undefined): PGlite {
  const dir = join(dataDir, 'pglite')
  ensurePrivateDirectory(dataDir)
  ensurePrivateDirectory(dir)
  usePrivateUmask()
  const pglite = new PGlite(dir)
  // Registered before knex-pglite awaits waitReady, so it runs before the first query.
  // A failed open is reported by the first query; here only the modes.
  pglite.waitReady.then(() => {
    try {
      const changed = restrictTree(dir)
      if (changed > 0) logger?.debug({ dir, changed }, 'database files made private')
    } catch (err) {
      logger?.error({ dir, err }, 'cannot make the database files private')
    }
  }, () => {})
  return pglite
}

/**
 * One round trip; throws when the database is unreachable. Pooled connections whose backends were
 * terminated (a database restart, `pg_terminate_backend`) can each fail one query before the pool
 * learns they are gone and discards them, so a lost connection is retried, at most once per pooled
 * connection, before the database counts as down. Refused connects and pool timeouts fail at once.
 */
export async function ping (db: Db): Promise<void> {
  const poolMax = (db.client as { pool?: { max?: number } }).pool?.max ?? 1
  for (let attempt = 0; ; attempt++) {
    try {
      await db.raw('select 1')
      return
    } catch (err) {
      if (attempt >= poolMax || !isLostConnection(err)) throw err
    }
  }
}

function isLostConnection (err: unknown): boolean {
  const { code, message } = err as { code?: unknown, message?: unknown }
  // 57P01 admin_shutdown, 57P02 crash_shutdown: the server ended this session.
  return code === '57P01' || code === '57P02' || (typeof message === 'string' && message.includes('Connection terminated'))
}
