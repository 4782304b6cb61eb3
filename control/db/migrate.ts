/**
 * Migrations: every `control/db/migrations/<YYYYMMDDHHMMSS>_<name>.ts` exporting `up(knex)` and
 * `down(knex)`, applied in file-name order and recorded in knex's `knex_migrations` table.
 */
import type { Knex } from 'knex'
import { readdirSync } from 'node:fs'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { join } from 'node:path'

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
  const [, applied] = await db.migrate.latest(config) as [number, string[]]
  return applied
}

/** Rolls back the last batch; returns the names rolled back. */
export async function migrateRollback (db: Knex, all = false): Promise<string[]> {
  const [, rolledBack] = await db.migrate.rollback(config, all) as [number, string[]]
  return rolledBack
}

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
