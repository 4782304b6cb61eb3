/**
 * Shared pieces for the edge tests: an Edge on loopback with its own data directory and local CA,
 * loopback origins, and clients that resolve every name to 127.0.0.1 and trust only that CA.
 */
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import http from 'node:http'
import https from 'node:https'
import type net from 'node:net'
import { Writable } from 'node:stream'
import pino, { type Logger } from 'pino'
import { Edge, netConnector, type EdgeOptions, type Route } from '../../../gateway/edge/index.ts'

/** Closing hooks, as tap's `t` has them. */
export interface Teardown { teardown (fn: () => unknown): void }

export function tempDir (t: Teardown, prefix = 'cc-edge-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** dns.lookup replacement: every name is 127.0.0.1 (the TLS servername stays the name). */
export const loopbackLookup = ((_host: string, options: unknown, cb: (...args: unknown[]) => void): void => {
  const all = typeof options === 'object' && options !== null && (options as { all?: boolean }).all === true
  if (all) cb(null, [{ address: '127.0.0.1', family: 4 }])
  else cb(null, '127.0.0.1', 4)
}) as unknown as net.LookupFunction

/** A logger whose JSON lines are kept in `lines` (for access-log assertions). */
export function captureLogger (): { logger: Logger, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const sink = new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line.trim() !== '') lines.push(JSON.parse(line) as Record<string, unknown>)
      cb()
    },
  })
  return { logger: pino({ level: 'info' }, sink), lines }
}

export interface TestEdge {
  edge: Edge
  port: number
  httpPort: number
  ca: Buffer
  dataDir: string
  lines: Array<Record<string, unknown>>
}

export async function startEdge (t: Teardown, routes: Route[], options: Partial<EdgeOptions> = {}): Promise<TestEdge> {
  const dataDir = options.dataDir ?? tempDir(t)
  const { logger, lines } = captureLogger()
  const edge = new Edge({
    dataDir,
    logger,
    connector: netConnector,
    https: { host: '127.0.0.1', port: 0 },
    http: { host: '127.0.0.1', port: 0 },
    connectionsCheckingIntervalMs: 200,
    ...options,
  })
  edge.updateRoutes(routes)
  t.teardown(() => edge.close(0))
  await edge.start()
  await edge.certificatesSettled()
  const { https: a, http: b } = edge.addresses()
  const ca = edge.caCertificatePath !== undefined ? fs.readFileSync(edge.caCertificatePath) : Buffer.alloc(0)
  return { edge, port: a.port, httpPort: b?.port ?? 0, ca, dataDir, lines }
}

export function route (instanceId: string, port: number, hostnames: string[], extra: Partial<Route> = {}): Route {
  return { instanceId, tunnelIp: '127.0.0.1', port, hostnames, ...extra }
}

/** A loopback HTTP origin; closed (with its connections) at teardown. */
export async function startOrigin (t: Teardown, handler: http.RequestListener): Promise<{ server: http.Server, port: number }> {
  const server = http.createServer({ keepAliveTimeout: 60_000, requestTimeout: 0 }, handler)
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => { server.closeAllConnections(); server.close(() => resolve()) }))
  return { server, port: (server.address() as net.AddressInfo).port }
}

/** An origin that announces a `length`-byte body, sends 1,000 bytes of it and drops the connection 50 ms later. */
export async function startDyingOrigin (t: Teardown, length: number): Promise<{ server: http.Server, port: number }> {
  return await startOrigin(t, (req, res) => {
    res.writeHead(200, { 'content-length': length })
    res.write(Buffer.alloc(1000))
    setTimeout(() => req.socket.destroy(), 50)
  })
}

/** GET `path` of a.example.test through the edge, reading the body: 'end' when it arrives whole, 'cut' when it breaks off. */
export function readToEnd (te: TestEdge, path = '/'): Promise<'end' | 'cut'> {
  return new Promise(resolve => {
    const req = https.request({ host: 'a.example.test', port: te.port, path, ca: te.ca, lookup: loopbackLookup, agent: false }, res => {
      res.resume()
      res.on('end', () => resolve('end'))
      res.on('aborted', () => resolve('cut'))
      res.on('error', () => resolve('cut'))
    })
    req.on('error', () => resolve('cut'))
    req.end()
  })
}

export interface Reply {
  status: number
  headers: http.IncomingHttpHeaders
  body: Buffer
}

export interface RequestOptions {
  method?: string
  path?: string
  headers?: http.OutgoingHttpHeaders
  body?: string | Buffer
  /** TLS servername; defaults to `host`. */
  servername?: string
  agent?: https.Agent | false
  /** The client's own address (a loopback one other than 127.0.0.1 tells it apart from a gateway's). */
  localAddress?: string
}

/** One HTTPS request to the edge for `host`, trusting only the edge's CA. */
export function request (te: TestEdge, host: string, options: RequestOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = https.request({
      host,
      port: te.port,
      method: options.method ?? 'GET',
      path: options.path ?? '/',
      headers: options.headers,
      ca: te.ca,
      ...(options.localAddress === undefined ? {} : { localAddress: options.localAddress }),
      servername: options.servername ?? host,
      lookup: loopbackLookup,
      agent: options.agent ?? false,
    }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }))
      res.on('error', reject)
    })
    req.on('error', reject)
    req.end(options.body)
  })
}

export function delay (ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}

/** Poll `check` until it returns true or `ms` pass. */
export async function waitFor (check: () => boolean, ms = 5_000): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    if (check()) return true
    await delay(20)
  }
  return check()
}
