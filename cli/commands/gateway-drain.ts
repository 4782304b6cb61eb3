/**
 * `cloud-connect gateway drain|undrain GATEWAY_ID`: takes a fleet gateway out of placement (or puts
 * it back), against control's database as `cloud-connect admin` does.
 */
import { migrateLatest } from '../../control/db/migrate.ts'
import { setGatewayDraining } from '../../control/rpc/placement.ts'
import { openDatabase } from '../../control/server.ts'
import { CliError } from '../errors.ts'
import { configOrExit } from './control.ts'

export const DRAIN_HELP = `Usage: cloud-connect gateway drain GATEWAY_ID
       cloud-connect gateway undrain GATEWAY_ID

  drain     the gateway takes no new placements; control's fleet sweep (every report interval)
            moves its instances to other alive gateways, each one only once its tunnel to the
            replacement is up. The gateway keeps serving until it carries nothing
            (GET /v1/admin/overview: placed_instances 0); then stop it.
  undrain   the gateway takes new placements again (nothing moves back to it)

Uses DATABASE_URL, else the embedded database under CC_DATA_DIR (stop control first: the
embedded database serves one process at a time). Exit status 2 when no gateway has that id.
`

const DRAINING_OF: Record<string, boolean> = { drain: true, undrain: false }

export async function run (argv: string[]): Promise<void> {
  const [action, gatewayId, ...rest] = argv
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(DRAIN_HELP)
    return
  }
  const draining = DRAINING_OF[action ?? '']
  if (draining === undefined) throw new CliError(`unknown action '${action ?? ''}' (drain or undrain)`, 2)
  if (gatewayId === undefined || gatewayId.trim() === '') throw new CliError(`${action}: which gateway? (cloud-connect gateway ${action} GATEWAY_ID)`, 2)
  if (rest.length > 0) throw new CliError(`unexpected argument '${rest[0]}'`, 2)
  const config = configOrExit()
  const db = openDatabase(config)
  let found: boolean
  let placed = 0
  try {
    if (config.autoMigrate) await migrateLatest(db)
    found = await setGatewayDraining(db, gatewayId, draining)
    if (found) {
      const row = await db('placements').where({ primary_gateway: gatewayId }).orWhere({ backup_gateway: gatewayId }).count({ n: '*' }).first() as { n: string | number }
      placed = Number(row.n)
    }
  } catch (err) {
    throw new CliError(`gateway ${action}: ${(err as Error).message}`)
  } finally {
    await db.destroy()
  }
  if (!found) throw new CliError(`no gateway with the id ${JSON.stringify(gatewayId)}`, 2)
  process.stdout.write(draining
    ? `gateway ${gatewayId} is draining: no new placements; its ${placed} placed instance(s) move to other gateways at the next fleet sweep\n`
    : `gateway ${gatewayId} takes new placements again (${placed} placed instance(s))\n`)
}
