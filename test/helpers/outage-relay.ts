/** A TCP relay in front of Postgres that can drop every connection and refuse new ones (an outage). */
import { createServer, connect, type Server, type Socket } from 'node:net'

export class OutageRelay {
  readonly #target: { host: string, port: number }
  #server: Server | undefined
  readonly #sockets = new Set<Socket>()
  port = 0

  constructor (target: { host: string, port: number }) {
    this.#target = target
  }

  /** Listens on 127.0.0.1 (the same port again after a down()). */
  async up (): Promise<void> {
    const server = createServer(client => {
      const upstream = connect(this.#target.port, this.#target.host)
      for (const s of [client, upstream]) {
        this.#sockets.add(s)
        s.on('close', () => this.#sockets.delete(s))
        s.on('error', () => { client.destroy(); upstream.destroy() })
      }
      client.pipe(upstream).pipe(client)
    })
    await new Promise<void>(resolve => server.listen(this.port, '127.0.0.1', resolve))
    this.port = (server.address() as { port: number }).port
    this.#server = server
  }

  /** Like a Postgres crash: established connections reset, new ones refused. */
  async down (): Promise<void> {
    const server = this.#server
    this.#server = undefined
    for (const s of this.#sockets) s.resetAndDestroy()
    if (server !== undefined) await new Promise<void>(resolve => server.close(() => resolve()))
  }
}

/** An OutageRelay in front of the Postgres at `url`, up (down at teardown); `url`: the same database through it. */
export async function relayedPostgres (t: { teardown (fn: () => unknown): void }, url: string): Promise<{ relay: OutageRelay, url: string }> {
  const target = new URL(url)
  const relay = new OutageRelay({ host: target.hostname, port: Number(target.port || 5432) })
  await relay.up()
  t.teardown(() => relay.down())
  const viaRelay = new URL(url)
  viaRelay.port = String(relay.port)
  return { relay, url: viaRelay.toString() }
}
