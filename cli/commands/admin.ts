/** `cloud-connect admin grant|revoke EMAIL`: the administrator role (the dashboard's operator view). */
import { migrateLatest } from '../../control/db/migrate.ts'
import { openDatabase } from '../../control/server.ts'
import { normalizeEmail } from '../../control/services/accounts.ts'
import type { UserRole } from '../../proto/api/user.ts'
import { CliError } from '../errors.ts'
import { configOrExit } from './control.ts'

const HELP = `Usage: cloud-connect admin <grant|revoke> EMAIL

  grant EMAIL    give the account the administrator role (GET /v1/admin/overview, the
                 dashboard's Operator page)
  revoke EMAIL   take it back (applies to the account's next request)

Uses DATABASE_URL, else the embedded database under CC_DATA_DIR (stop control first: the
embedded database serves one process at a time). Pending migrations are applied first unless
CC_AUTO_MIGRATE=0. Exit status 2 when the account does not exist.
`

const ROLE_OF: Record<string, UserRole> = { grant: 'admin', revoke: 'user' }

export async function run (argv: string[]): Promise<void> {
  const [action, email, ...rest] = argv
  if (action === undefined || action === '--help' || action === '-h' || argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(HELP)
    return
  }
  const role = ROLE_OF[action]
  if (role === undefined) throw new CliError(`unknown action '${action}' (grant or revoke)`, 2)
  if (email === undefined || email.trim() === '') throw new CliError(`${action}: which account? (cloud-connect admin ${action} EMAIL)`, 2)
  if (rest.length > 0) throw new CliError(`unexpected argument '${rest[0]}'`, 2)
  const config = configOrExit()
  const db = openDatabase(config)
  let found: boolean
  try {
    if (config.autoMigrate) await migrateLatest(db)
    const updated = await db('users').where({ email: normalizeEmail(email) }).update({ role, updated_at: new Date() })
    found = Number(updated) > 0
  } catch (err) {
    throw new CliError(`admin ${action}: ${(err as Error).message}`)
  } finally {
    await db.destroy()
  }
  if (!found) throw new CliError(`no account with the email ${JSON.stringify(normalizeEmail(email))}`, 2)
  process.stdout.write(role === 'admin' ? `${normalizeEmail(email)} is now an administrator\n` : `${normalizeEmail(email)} is no longer an administrator\n`)
}
