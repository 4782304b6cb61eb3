/**
 * The control API's bind address. Hapi binds once and cannot try again after a failure, so the
 * dual-stack wildcard is checked first with a throwaway listener: on a host without IPv6 the API
 * listens on 0.0.0.0 (with a warning) instead of failing to start.
 */
import net from 'node:net'
import type { Logger } from 'pino'
import { bindDualStack, DUAL_STACK_ANY, formatHostPort } from '../proto/net/address.ts'

export async function apiListenHost (host: string, logger: Logger, bindProbe: (host: string) => Promise<void> = probe): Promise<string> {
  if (host !== DUAL_STACK_ANY) return host
  return await bindDualStack(host, async h => { await bindProbe(h); return h },
    err => logger.warn({ listener: 'api', err: err.message }, 'no IPv6 on this host: listening on 0.0.0.0 (IPv4 only)'))
}

/** Binds `host` on a free port and closes at once. */
async function probe (host: string): Promise<void> {
  const server = net.createServer()
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen({ host, port: 0 }, () => { resolve() })
  })
  await new Promise<void>(resolve => { server.close(() => { resolve() }) })
}

/** `http://[::]:3000` for the API's bound address (hapi's own info.uri writes `http://:::3000`). */
export function listeningUrl (info: { protocol: string, address?: string, port: number | string }): string {
  return `${info.protocol}://${formatHostPort(info.address ?? 'localhost', Number(info.port))}`
}
