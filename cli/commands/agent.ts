/**
 * `cloud-connect agent`: the container side of Cloud Connect (agent/). Three forms:
 *   agent [run]          connect and stay connected until SIGTERM/SIGINT
 *   agent status [--json] the connection state Erugo's settings page shows
 *   agent test [--json]   each step of the connection checked, with a verdict per step
 */
import { parseArgs } from 'node:util'
import {
  describeSettings, EXIT_CODES_HELP, EXIT_FAILURE, EXIT_OK, EXIT_TOKEN_REJECTED, EXIT_USAGE, formatReport,
  loadSettings, readStatus, runAgent, runTest, settingFlags, SettingsError, type AgentSettings, type StatusReport,
} from '../../agent/index.ts'
import { CliError } from '../errors.ts'
import { createLogger, parseLogLevel } from '../log.ts'

const HELP = `Usage: cloud-connect agent [run] [options]
       cloud-connect agent status [--json] [options]
       cloud-connect agent test [--json] [options]

Connects this container to Erugo Cloud Connect (spec "Flow 2"): generates a WireGuard key pair
locally (kept in the state file, mode 0600; the private key never leaves the container), registers
the public key with POST /tunnel/register, brings the tunnel up, heartbeats at the interval the API
asks for, and on SIGTERM/SIGINT takes the tunnel down and calls POST /tunnel/disconnect.

Modes:
  userspace (default)  WireGuard and TCP in this process: no privileges, no TUN device. Each
                       connection from the gateway to the tunnel address is forwarded to --target.
  kernel               a wg-quick configuration brought up with wg-quick (kernel module, or
                       wireguard-go where it is missing): needs NET_ADMIN and /dev/net/tun; the web
                       server must listen on the tunnel address (e.g. 0.0.0.0:80).

Subcommands:
  run (default)  connect and stay connected; logs JSON lines on stdout
  status         print the state: disconnected, connecting, connected or error, last error,
                 subdomain, custom domains (asks the running agent, else reads the state file)
  test           check API reachability, token validity, UDP reachability of the gateway, a round
                 trip through the tunnel and the local web server, one verdict per step (inside the
                 running agent when one answers, else with a temporary userspace tunnel)

Options (flag, then environment variable):
${describeSettings()}
  --json                                           status/test: print JSON
  -h, --help                                       this help
  CC_AGENT_ALLOW_HTTP=1                            allow a plain http:// API that is not on loopback (labs only)

The running agent serves the status JSON at http://<status-listen>/status and runs the checks at
/test (loopback only).

${EXIT_CODES_HELP}
`

export async function run (argv: string[]): Promise<void> {
  const sub = argv[0] === 'status' || argv[0] === 'test' || argv[0] === 'run' ? argv[0] : 'run'
  const rest = sub === argv[0] ? argv.slice(1) : argv
  let values: Record<string, string | boolean | undefined>
  try {
    ({ values } = parseArgs({ args: rest, options: { ...settingFlags(), json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' } }, strict: true, allowPositionals: false }))
  } catch (err) {
    throw new CliError((err as Error).message, EXIT_USAGE)
  }
  if (values.help === true) {
    process.stdout.write(HELP)
    return
  }
  const flags: Record<string, string | undefined> = {}
  for (const [k, v] of Object.entries(values)) if (typeof v === 'string') flags[k] = v
  let settings: AgentSettings
  try {
    settings = loadSettings(flags, process.env, { requireToken: sub !== 'status' })
  } catch (err) {
    if (err instanceof SettingsError) throw new CliError(err.message, EXIT_USAGE)
    throw err
  }
  const level = parseLogLevel(settings.logLevel)
  if (sub === 'run') {
    process.exitCode = await runAgent(settings, createLogger({ level, name: 'cloud-connect-agent' }))
    return
  }
  if (sub === 'status') {
    const report = await readStatus(settings)
    process.stdout.write(values.json === true ? JSON.stringify(report) + '\n' : formatStatus(report))
    process.exitCode = EXIT_OK
    return
  }
  // test: logs go to stderr so that --json output stays parseable.
  const logger = createLogger({ level: settings.logLevel === undefined ? 'warn' : level, name: 'cloud-connect-agent', fd: 2 })
  const report = await runTest(settings, logger)
  process.stdout.write(values.json === true ? JSON.stringify(report) + '\n' : formatReport(report))
  process.exitCode = report.ok ? EXIT_OK : report.token_rejected ? EXIT_TOKEN_REJECTED : EXIT_FAILURE
}

function formatStatus (r: StatusReport): string {
  const rows: Array<[string, string]> = [
    ['Status', `${r.status} (since ${r.since})${r.running ? '' : ', agent not running'}`],
    ['Last error', r.last_error ?? '-'],
    ['Subdomain', r.subdomain ?? '-'],
    ['Custom domains', r.custom_domains.length === 0 ? '-' : r.custom_domains.join(', ')],
    ['Tunnel address', r.tunnel_ip ?? '-'],
    ['Gateway', r.gateway_endpoint ?? '-'],
    ['Mode', r.mode ?? '-'],
    ['Last handshake', r.last_handshake_at ?? '-'],
    ['Public key', r.public_key ?? '-'],
  ]
  return rows.map(([k, v]) => `${k.padEnd(15)} ${v}`).join('\n') + '\n'
}
