/**
 * `cloud-connect control`: the control API (accounts, instances, billing) on CC_API_PORT (default
 * 3000), and the internal RPC listener gateways call (CC_RPC_HOST:CC_RPC_PORT, default
 * 127.0.0.1:8081), with its housekeeping job.
 */
import { ConfigError, describeVariables, loadConfig, type ControlConfig } from '../../control/config.ts'
import { describeRpcVariables, loadRpcConfig, startControlPlane, type RpcConfig } from '../../control/rpc/index.ts'
import { CliError } from '../errors.ts'
import { createLogger, parseLogLevel } from '../log.ts'

const HELP = `Usage: cloud-connect control

Serves the control API (/v1, /health, /ready) on CC_API_HOST:CC_API_PORT. Without DATABASE_URL the data
lives in an embedded database under CC_DATA_DIR. Pending migrations are applied at start unless
CC_AUTO_MIGRATE=0. Without CC_SMTP_URL, mail is written to CC_DATA_DIR/outbox.

Gateways connect to the internal RPC listener on CC_RPC_HOST:CC_RPC_PORT (default 127.0.0.1:8081)
with the gateway secret: CC_GATEWAY_SECRET, or the one generated into CC_DATA_DIR/gateway-secret.
Run a gateway against it with: cloud-connect gateway --control http://HOST:8081 --secret SECRET
Each instance is placed on two alive gateways (primary and backup; one while only one is alive);
containers are told both. Until a gateway has said hello, CC_GATEWAY_PUBLIC_KEY and
CC_GATEWAY_ENDPOINT.

Environment:
`

/** A bad CC_* value is a usage error (exit status 2) with its one line, not a stack trace. */
function orUsageError<T> (load: (env: NodeJS.ProcessEnv) => T): T {
  try {
    return load(process.env)
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.message, 2)
    throw err
  }
}

export function configOrExit (): ControlConfig {
  return orUsageError(loadConfig)
}

export function rpcConfigOrExit (): RpcConfig {
  return orUsageError(loadRpcConfig)
}

export async function run (argv: string[]): Promise<void> {
  if (argv.includes('--help') || argv.includes('-h')) {
    process.stdout.write(HELP + describeVariables() + '\n' + describeRpcVariables() + '\n')
    return
  }
  if (argv.length > 0) throw new CliError(`unexpected argument '${argv[0]}' (see --help)`, 2)
  const config = configOrExit()
  const rpc = rpcConfigOrExit()
  const logger = createLogger({ level: parseLogLevel(config.logLevel) })
  let running
  try {
    running = await startControlPlane({ config, rpc, listen: true, logger })
  } catch (err) {
    throw new CliError(`cannot start: ${(err as Error).message}`)
  }
  await new Promise<void>(resolve => {
    const shutdown = (signal: string): void => {
      logger.info({ signal }, 'shutting down')
      process.off('SIGINT', shutdown)
      process.off('SIGTERM', shutdown)
      running.stop().then(resolve, err => { logger.error({ err }, 'shutdown failed'); resolve() })
    }
    process.on('SIGINT', shutdown)
    process.on('SIGTERM', shutdown)
  })
}
