/**
 * Running the control API: open the database, apply pending migrations (unless CC_AUTO_MIGRATE=0),
 * build the app and listen. Used by `cloud-connect control` and the all-in-one `start`.
 */
import type { Logger } from 'pino'
import { createApp, type AppDeps, type ControlApp } from './app.ts'
import type { ControlConfig } from './config.ts'
import { createDb, type Db } from './db/knex.ts'
import { migrateLatest } from './db/migrate.ts'
import { makeDataDirectoryPrivate } from './db/private-files.ts'
import { listeningUrl } from './listen-host.ts'

export interface RunningControl {
  app: ControlApp
  db: Db
  /** Stops listening (in-flight requests get `graceMs`), flushes mail, closes the database. */
  stop (graceMs?: number): Promise<void>
}

/** Also makes CC_DATA_DIR private (db/private-files.ts): it holds keys and mail even with Postgres. */
export function openDatabase (config: ControlConfig, logger?: Logger): Db {
  makeDataDirectoryPrivate(config.dataDir)
  return createDb(config.databaseUrl !== undefined ? { url: config.databaseUrl, logger } : { dataDir: config.dataDir, logger })
}

export async function startControl (config: ControlConfig, logger: Logger, extra: Partial<AppDeps> = {}): Promise<RunningControl> {
  const db = openDatabase(config, logger)
  try {
    if (config.autoMigrate) {
      const applied = await migrateLatest(db)
      if (applied.length > 0) logger.info({ applied }, 'migrations applied')
    }
    const app = await createApp(config, { db, logger, ...extra })
    await app.start()
    logger.info({ url: listeningUrl(app.info), database: config.databaseUrl !== undefined ? 'postgres' : 'pglite' }, 'control API listening')
    return {
      app,
      db,
      async stop (graceMs = 10_000) {
        await app.stop({ timeout: graceMs })
        await db.destroy()
      },
    }
  } catch (err) {
    await db.destroy()
    throw err
  }
}
