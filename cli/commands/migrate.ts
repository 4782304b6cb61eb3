/** `cloud-connect migrate up|down|status`: the control database's schema migrations. */
import { migrateLatest, migrateRollback, migrationStatus } from '../../control/db/migrate.ts'
import { openDatabase } from '../../control/server.ts'
import { CliError } from '../errors.ts'
import { configOrExit } from './control.ts'



const HELP = `Usage: cloud-connect migrate <up|down|status> [--all]

  up       apply every pending migration
  down     roll back the last batch (--all: every migration)
  status   list applied and pending migrations

Uses DATABASE_URL, else the embedded database under CC_DATA_DIR.
`

export async function run (argv: string[]): Promise<void> {
  const [action, ...rest] = argv
  if (action === undefined || action === '--help' || action === '-h') {
    process.stdout.write(HELP)
    return
  }
  if (!['up', 'down', 'status'].includes(action)) throw new CliError(`unknown action '${action}' (up, down or status)`, 2)
  const all = rest.includes('--all')
  const unknown = rest.find(a => a !== '--all' || action !== 'down')
  if (unknown !== undefined) throw new CliError(`unexpected argument '${unknown}'`, 2)
  const db = openDatabase(configOrExit())
  try {
    if (action === 'up') {
      const applied = await migrateLatest(db)
      process.stdout.write(applied.length === 0 ? 'already up to date\n' : applied.map(n => `applied ${n}\n`).join(''))
    } else if (action === 'down') {
      const rolledBack = await migrateRollback(db, all)
      process.stdout.write(rolledBack.length === 0 ? 'nothing to roll back\n' : rolledBack.map(n => `rolled back ${n}\n`).join(''))
    } else {
      const status = await migrationStatus(db)
      for (const name of status.applied) process.stdout.write(`applied  ${name}\n`)
      for (const name of status.pending) process.stdout.write(`pending  ${name}\n`)
      if (status.applied.length + status.pending.length === 0) process.stdout.write('no migrations\n')
    }
  } catch (err) {
    throw new CliError(`migrate ${action}: ${(err as Error).message}`)
  } finally {
    await db.destroy()
  }
}
