/**
 * The Edge alone, for bench/edge.ts: loopback HTTPS in front of loopback origins, local CA.
 *
 *   node bin/run-ts.js bench/edge-server.ts '{"dataDir":"/tmp/x","port":8443,"routes":[...],"logFile":"/tmp/x/access.log"}'
 *
 * Prints one JSON line {"ready":true,"caPath":...} on stdout once it serves. Access log lines go to
 * logFile (the production default is info: one line per request), or nowhere with "logLevel":"warn".
 * With "workers": N > 1, N processes (node:cluster) each run an Edge on the same listener, the
 * kernel spreading connections over them (SCHED_NONE): TLS and HTTP on more than one core. The
 * first worker issues the certificates; the others start once it is ready and load them.
 */
import cluster from 'node:cluster'
import { fileURLToPath } from 'node:url'
import pino from 'pino'
import { Edge, netConnector, type Route } from '../gateway/edge/index.ts'

interface Settings { dataDir: string, port: number, routes: Route[], logFile?: string, logLevel?: string, http2?: boolean, workers?: number }

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
const workers = Math.min(Math.max(1, o.workers ?? 1), 16)

if (workers > 1 && cluster.isPrimary) {
  // Accepts go to whichever worker the kernel wakes, not round-robin through this process.
  cluster.schedulingPolicy = cluster.SCHED_NONE
  // Workers start through the same TypeScript loader (bin/run-ts.js) with the same settings.
  cluster.setupPrimary({ exec: fileURLToPath(new URL('../bin/run-ts.js', import.meta.url)), args: [fileURLToPath(import.meta.url), process.argv[2] ?? ''] })
  const ready = (w: ReturnType<typeof cluster.fork>): Promise<string> => new Promise((resolve, reject) => {
    w.once('message', (m: { caPath: string }) => { resolve(m.caPath) })
    w.once('exit', code => { reject(new Error(`edge worker exited (${code})`)) })
  })
  const caPath = await ready(cluster.fork())
  await Promise.all(Array.from({ length: workers - 1 }, async () => await ready(cluster.fork())))
  process.stdout.write(JSON.stringify({ ready: true, caPath, workers }) + '\n')
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.on(sig, () => {
      for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGTERM')
      setTimeout(() => process.exit(0), 1_500).unref()
    })
  }
} else {
  await serve()
}

async function serve (): Promise<void> {
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
  if (cluster.isWorker) process.send!({ caPath: edge.caCertificatePath })
  else process.stdout.write(JSON.stringify({ ready: true, caPath: edge.caCertificatePath }) + '\n')
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => { void edge.close(1_000).then(() => process.exit(0)) })
}
