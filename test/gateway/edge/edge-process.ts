/**
 * An Edge in a process of its own, for tests that measure its memory. Started with fork(); argv[2]
 * is JSON { dataDir, routes }. Sends { ready, port, caPath } over IPC, then answers
 * 'memory' with the peak rss/heapUsed sampled every 20 ms since the last 'reset'.
 */
import pino from 'pino'
import { Edge, netConnector, type Route } from '../../../gateway/edge/index.ts'

// Run directly (not forked by a test, e.g. by `tap <dir>`): nothing to do.
if (process.send === undefined || process.argv[2] === undefined) process.exit(0)
const { dataDir, routes } = JSON.parse(process.argv[2]) as { dataDir: string, routes: Route[] }
const edge = new Edge({
  dataDir,
  logger: pino({ level: 'warn' }),
  connector: netConnector,
  https: { host: '127.0.0.1', port: 0 },
  http: false,
})
edge.updateRoutes(routes)
await edge.start()
await edge.certificatesSettled()

let peak = { rss: 0, heapUsed: 0, external: 0 }
const sample = (): void => {
  const m = process.memoryUsage()
  peak = { rss: Math.max(peak.rss, m.rss), heapUsed: Math.max(peak.heapUsed, m.heapUsed), external: Math.max(peak.external, m.external + m.arrayBuffers) }
}
setInterval(sample, 20).unref()

process.on('message', (msg: string) => {
  if (msg === 'reset') {
    global.gc?.()
    peak = { rss: 0, heapUsed: 0, external: 0 }
    sample()
    process.send!({ reset: true, now: process.memoryUsage() })
  } else if (msg === 'memory') {
    sample()
    process.send!({ peak })
  } else if (msg === 'exit') {
    void edge.close(0).then(() => process.exit(0))
  }
})
process.send!({ ready: true, port: edge.addresses().https.port, caPath: edge.caCertificatePath })
