/**
 * The Edge alone, for bench/edge.ts: loopback HTTPS in front of loopback origins, local CA.
 *
 *   node bin/run-ts.js bench/edge-server.ts '{"dataDir":"/tmp/x","port":8443,"routes":[...],"logFile":"/tmp/x/access.log"}'
 *
 * Prints one JSON line {"ready":true,"caPath":...} on stdout once it serves. Access log lines go to
 * logFile (the production default is info: one line per request), or nowhere with "logLevel":"warn".
 */
import pino from 'pino'
import { Edge, netConnector, type Route } from '../gateway/edge/index.ts'

interface Settings { dataDir: string, port: number, routes: Route[], logFile?: string, logLevel?: string, http2?: boolean }

/** Started by bench/edge.ts only: anything but its JSON settings is refused in one line. */
function settings (arg: string | undefined): Settings {
  try {
    const o = JSON.parse(arg ?? '') as Partial<Settings> | null
    if (typeof o?.dataDir === 'string' && typeof o.port === 'number' && Array.isArray(o.routes)) return o as Settings
  } catch { /* refused below */ }
  process.stderr.write('bench/edge-server.ts: internal to bench/edge.ts; expects one JSON argument {"dataDir","port","routes",...}\n')
  process.exit(2)
}

const o = settings(process.argv[2])
const logger = pino({ level: o.logLevel ?? 'info' }, pino.destination({ dest: o.logFile ?? '/dev/null', sync: false }))
const edge = new Edge({
  dataDir: o.dataDir,
  logger,
  connector: netConnector,
  https: { host: '127.0.0.1', port: o.port },
  http: false,
  http2: o.http2 ?? true,
})
edge.updateRoutes(o.routes)
await edge.start()
await edge.certificatesSettled()
process.stdout.write(JSON.stringify({ ready: true, caPath: edge.caCertificatePath }) + '\n')
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => { void edge.close(1_000).then(() => process.exit(0)) })
