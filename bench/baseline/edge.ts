/**
 * An Edge for the loopback benches (tls-memory, tls-writes, relay-loopback): its own data directory,
 * removed when the process exits, warnings-only logs, upstreams dialled over node:net, HTTPS on an
 * ephemeral loopback port. Each bench adds its own options and routes.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { Edge, netConnector, type Route } from '../../gateway/edge/index.ts'
import type { EdgeOptions } from '../../gateway/edge/options.ts'

/** A fresh data directory named `cc-PREFIX-...`, removed when the process exits. */
export function benchDataDir (prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), `cc-${prefix}-`))
  process.once('exit', () => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

/** Started, with `routes` and every certificate they need settled. */
export async function startLoopbackEdge (dataDir: string, routes: Route[], options: Partial<EdgeOptions> = {}): Promise<Edge> {
  const edge = new Edge({
    dataDir,
    logger: pino({ level: 'warn' }),
    connector: netConnector,
    https: { host: '127.0.0.1', port: 0 },
    ...options,
  })
  edge.updateRoutes(routes)
  await edge.start()
  await edge.certificatesSettled()
  return edge
}
