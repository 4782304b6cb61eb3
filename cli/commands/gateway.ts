/** `cloud-connect gateway`: the WireGuard edge, run from a static JSON config file. */
import { parseArgs } from 'node:util'
import { CliError } from '../errors.ts'
import { createLogger, parseLogLevel } from '../log.ts'
import { Gateway } from '../../gateway/index.ts'
import { loadConfigFile } from '../../gateway/config/load.ts'
import { ConfigError, type GatewayConfig } from '../../gateway/config/schema.ts'
import { encodeKey } from '../../proto/noise/index.ts'

const HELP = `Usage: cloud-connect gateway --config FILE [--log-level LEVEL]

Runs the userspace WireGuard gateway with a static control plane read from FILE (JSON):

  {
    "privateKey": "<cloud-connect keygen>",
    "listenPort": 51820,                  UDP port (0 = any free port)
    "listenAddress": "0.0.0.0",           UDP bind address
    "address": "10.100.0.1",              the gateway's tunnel address
    "metricsListen": "127.0.0.1:9091",    optional: GET /metrics (Prometheus), GET /status (JSON)
    "peers": [
      { "publicKey": "...", "allowedIPs": ["10.100.0.2/32"],
        "endpoint": "198.18.0.2:51820",   optional: lets the gateway initiate
        "persistentKeepalive": 25,        optional, seconds
        "presharedKey": "..." }           optional
    ],
    "faults": { "seed": 1, "drop": 0.01, "duplicate": 0, "reorder": 0, "delayMs": 0, "jitterMs": 0 },
                                          optional, TEST ONLY: datagram faults in both directions
    "dos": { "underLoadHandshakesPerSecond": 128, "rateLimitPerSecond": 20, "rateLimitBurst": 5 },
    "testing": { "rekeyAfterTimeMs": 5000 }   optional, TEST ONLY: sessions rotate after this long
  }

Options:
  --config FILE       the config file (required)
  --log-level LEVEL   fatal, error, warn, info (default), debug, trace or silent
  -h, --help          this help

Signals: SIGINT/SIGTERM stop cleanly; SIGHUP reloads the peer list from FILE.
A bad config stops the program with one line naming the field (exit status 2).
`

export async function run (argv: string[]): Promise<void> {
  let values: { config?: string, 'log-level'?: string, help?: boolean }
  try {
    ({ values } = parseArgs({
      args: argv,
      options: { config: { type: 'string', short: 'c' }, 'log-level': { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      strict: true,
    }))
  } catch (err) {
    throw new CliError((err as Error).message, 2)
  }
  if (values.help === true) {
    process.stdout.write(HELP)
    return
  }
  const level = parseLogLevel(values['log-level'])
  const path = values.config
  if (path === undefined) throw new CliError('--config FILE is required (see --help)', 2)
  const config = readConfig(path)
  const logger = createLogger({ level })

  let gateway: Gateway
  try {
    gateway = await Gateway.start(config, logger)
  } catch (err) {
    const e = err as NodeJS.ErrnoException
    throw new CliError(`cannot listen: ${e.code ?? ''} ${e.message}`.trim())
  }
  logger.info({
    publicKey: encodeKey(config.publicKey),
    listen: gateway.listen,
    address: gateway.status().address,
    metricsListen: gateway.metricsListen,
    peers: config.peers.length,
  }, 'gateway listening')

  await new Promise<void>(resolve => {
    let stopping = false
    const stop = (signal: NodeJS.Signals): void => {
      if (stopping) return
      stopping = true
      logger.info({ signal }, 'stopping')
      process.off('SIGHUP', reload)
      gateway.close().then(() => {
        logger.info('stopped')
        resolve()
      }, err => {
        logger.error({ err }, 'error while stopping')
        process.exitCode = 1
        resolve()
      })
    }
    const reload = (): void => {
      try {
        const next = loadConfigFile(path)
        const result = gateway.reloadPeers(next.peers)
        logger.info(result, 'peers reloaded')
      } catch (err) {
        logger.error({ err: err instanceof ConfigError ? err.message : err }, 'reload failed; keeping the current peers')
      }
    }
    process.once('SIGINT', stop)
    process.once('SIGTERM', stop)
    process.on('SIGHUP', reload)
  })
}

function readConfig (path: string): GatewayConfig {
  try {
    return loadConfigFile(path)
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(`config ${path}: ${err.message}`, 2)
    throw err
  }
}
