/** Binding the edge's listeners: dual-stack where the host has IPv6, else IPv4 with a warning. */
import type net from 'node:net'
import type { Logger } from 'pino'
import { bindDualStack } from '../../proto/net/address.ts'

/** Binds `server`; `::` (dual-stack) falls back to 0.0.0.0, with a warning, on a host without IPv6. */
export async function listen (server: net.Server, host: string, port: number, logger: Logger, listener: string): Promise<void> {
  await bindDualStack(host, async h => await new Promise<void>((resolve, reject) => {
    const onError = (err: Error): void => { reject(err) }
    server.once('error', onError)
    server.listen({ host: h, port }, () => {
      server.off('error', onError)
      resolve()
    })
  }), err => noIpv6(logger, listener, port, err))
  // After binding, a listener error (EMFILE on accept, ...) is logged, never thrown.
  server.on('error', err => logger.error({ err }, 'edge listener error'))
}

export function noIpv6 (logger: Logger, listener: string, port: number, err: Error): void {
  logger.warn({ listener, port, err: err.message }, 'no IPv6 on this host: listening on 0.0.0.0 (IPv4 only)')
}
