/**
 * server.listen(port, host) as a promise that rejects with the bind error (EADDRINUSE,
 * EADDRNOTAVAIL) instead of an unhandled 'error' event, and leaves no listener behind once bound.
 */
import type { Server } from 'node:net'

export async function startListening (server: Server, port: number, host: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve()
    })
  })
}
