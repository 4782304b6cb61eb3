/**
 * Origins behind many tunnels, in one process, for bench/scale.ts's connections curve and its test:
 * T userspace agents (agent/userspace.ts: our WireGuard, IP layer and TCP stack, port 80 spliced to
 * a local target) toward one gateway, all spliced to one local HTTP server that answers every GET
 * with a 2-byte body and accepts WebSocket upgrades (RFC 6455 4.2.2), then holds them silently.
 *
 *   node bin/run-ts.js bench/scale-origin.ts FILE   (FILE: JSON OriginOptions)
 * Prints {"event":"ready","tunnels":T} once every tunnel has had an ICMP echo answered by the
 * gateway, or {"event":"failed",...}; exits when stdin closes. Bounded: readiness waits limitMs.
 */
import http from 'node:http'
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import pino from 'pino'
import { UserspaceTunnel } from '../agent/userspace.ts'
import { planFromConfig } from '../agent/tunnel-config.ts'
import { decodeKey } from '../proto/noise/index.ts'

export interface OriginOptions {
  gatewayEndpoint: string
  gatewayPublicKey: string
  gatewayAddress: string
  tunnels: Array<{ privateKey: string, address: string }>
  limitMs?: number
}

/** RFC 6455 1.3: the GUID appended to Sec-WebSocket-Key. */
const WEBSOCKET_GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

export function websocketAccept (key: string): string {
  return createHash('sha1').update(key + WEBSOCKET_GUID).digest('base64')
}

export async function startOrigin (o: OriginOptions): Promise<{ tunnels: UserspaceTunnel[], close: () => Promise<void> }> {
  const server = http.createServer((req, res) => {
    req.resume()
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': '2' })
    res.end('ok')
  })
  server.keepAliveTimeout = 600_000
  server.on('upgrade', (req, socket) => {
    const key = req.headers['sec-websocket-key']
    if (typeof key !== 'string') { socket.destroy(); return }
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: ${websocketAccept(key)}\r\n\r\n`)
    socket.on('error', () => {})
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as { port: number }).port
  const logger = pino({ level: 'error' })
  const tunnels = o.tunnels.map(t => new UserspaceTunnel({ privateKey: decodeKey(t.privateKey), target: { host: '127.0.0.1', port }, tunnelPorts: [80], listenPort: 0, logger }))
  for (const [i, tunnel] of tunnels.entries()) {
    await tunnel.apply(planFromConfig({
      interface: { address: `${o.tunnels[i].address}/32` },
      peer: { public_key: o.gatewayPublicKey, endpoint: o.gatewayEndpoint, allowed_ips: `${o.gatewayAddress}/32`, persistent_keepalive: 25 },
    }))
  }
  const deadline = Date.now() + Math.min(o.limitMs ?? 60_000, 300_000)
  await Promise.all(tunnels.map(async tunnel => {
    while (Date.now() < deadline) if (await tunnel.probe(1_000) !== null) return
    throw new Error('a tunnel never had an echo answered')
  }))
  return {
    tunnels,
    close: async () => {
      await Promise.all(tunnels.map(async t => { await t.close() }))
      server.closeAllConnections()
      server.close()
    },
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const options = JSON.parse(readFileSync(process.argv[2], 'utf8')) as OriginOptions
  try {
    const origin = await startOrigin(options)
    process.stdout.write(JSON.stringify({ event: 'ready', tunnels: origin.tunnels.length }) + '\n')
    process.stdin.resume()
    await new Promise(resolve => process.stdin.once('end', resolve))
    await origin.close()
  } catch (err) {
    process.stdout.write(JSON.stringify({ event: 'failed', message: (err as Error).message }) + '\n')
  }
  process.exit(0)
}
