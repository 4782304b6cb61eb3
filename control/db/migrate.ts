/**
 * Migrations: every `control/db/migrations/<YYYYMMDDHHMMSS>_<name>.ts` exporting `up(knex)` and
 * `down(knex)`, applied in file-name order and recorded in knex's `knex_migrations` table.
 */
import type { Knex } from 'knex'
import { readdirSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { join } from 'node:path'
import { isPostgres } from './knex.ts'

const MIGRATIONS_DIR = fileURLToPath(new URL('./migrations/', import.meta.url))
const FILE_PATTERN = /^\d{14}_[a-z0-9_]+\.ts$/

interface MigrationModule {
  up: (knex: Knex) => Promise<void>
  down: (knex: Knex) => Promise<void>
}

/** Lists the migration files; the knex migration name is the file name without `.ts`. */
export function migrationNames (): string[] {
  return readdirSync(MIGRATIONS_DIR).filter(f => FILE_PATTERN.test(f)).sort().map(f => f.slice(0, -3))
}

const source: Knex.MigrationSource<string> = {
  getMigrations: async () => migrationNames(),
  getMigrationName: name => name,
  getMigration: async name => await import(pathToFileURL(join(MIGRATIONS_DIR, `${name}.ts`)).href) as MigrationModule,
}

const config: Knex.MigratorConfig = { migrationSource: source }

/** Applies every pending migration; returns the names applied. */
export async function migrateLatest (db: Knex): Promise<string[]> {
  return await underMigrationLock(db, async () => {
    const [, applied] = await db.migrate.latest(config) as [number, string[]]
    return applied
  })
}

/** Rolls back the last batch; returns the names rolled back. */
export async function migrateRollback (db: Knex, all = false): Promise<string[]> {
  return await underMigrationLock(db, async () => {
    const [, rolledBack] = await db.migrate.rollback(config, all) as [number, string[]]
    return rolledBack
  })
}

/**
 * Several control replicas starting at once on an empty database would race inside knex (its own
 * lock table is created with a check-then-create, so the loser fails with "relation
 * knex_migrations_lock already exists"). On Postgres the whole run is serialised by a session
 * advisory lock held on a dedicated connection, keyed on the schema; whoever comes second finds
 * nothing pending. PGlite is one process: no lock needed.
 */
async function underMigrationLock<T> (db: Knex, body: () => Promise<T>): Promise<T> {
  if (!isPostgres(db)) return await body()
  const connection = await db.client.acquireConnection() as unknown
  try {
    await db.raw('select pg_advisory_lock(?, hashtext(current_schema()))', [MIGRATION_LOCK_CLASS]).connection(connection)
    try {
      return await body()
    } finally {
      await db.raw('select pg_advisory_unlock(?, hashtext(current_schema()))', [MIGRATION_LOCK_CLASS]).connection(connection)
    }
  } finally {
    await db.client.releaseConnection(connection)
  }
}

/** First key of the two-key advisory locks control takes (any fixed number; "CC" in ASCII). */
export const MIGRATION_LOCK_CLASS = 0x4343

export interface MigrationStatus {
  applied: string[]
  pending: string[]
}

export async function migrationStatus (db: Knex): Promise<MigrationStatus> {
  const [completed, pending] = await db.migrate.list(config) as [Array<{ name: string } | string>, Array<{ file: string } | string>]
  return {
    applied: completed.map(c => typeof c === 'string' ? c : c.name),
    pending: pending.map(p => typeof p === 'string' ? p : p.file),
  }
}
