/**
 * The running agent's status endpoint, on loopback only (settings refuse anything else): what
 * Erugo's settings page polls without spawning a process.
 *
 *   GET /status   the StatusReport JSON (same as `cloud-connect agent status --json`)
 *   GET /test     runs the checks inside the agent (same as `cloud-connect agent test --json`)
 */
import http from 'node:http'
import type { Logger } from 'pino'
import type { StatusReport } from './agent.ts'
import type { TestReport } from './checks.ts'
import { startListening } from '../proto/net/listen.ts'

/** Each returns null while the agent is still starting (answered 503). */
export interface StatusHandlers {
  status (): StatusReport | null
  test (): Promise<TestReport | null>
}

export async function startStatusServer (host: string, port: number, handlers: StatusHandlers, logger: Logger): Promise<http.Server> {
  let testing: Promise<TestReport | null> | null = null
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0]
    const send = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body) + '\n')
    }
    if (req.method !== 'GET' && req.method !== 'HEAD' && !(req.method === 'POST' && path === '/test')) {
      res.writeHead(405, { allow: 'GET' }).end()
      return
    }
    if (path === '/status') {
      const report = handlers.status()
      if (report === null) send(503, { error: 'starting' })
      else send(200, report)
    } else if (path === '/test') {
      // One run at a time: concurrent callers share it.
      testing ??= handlers.test().finally(() => { testing = null })
      testing.then(report => { if (report === null) send(503, { error: 'starting' }); else send(200, report) }, err => {
        logger.error({ err }, 'test failed')
        send(500, { error: 'test failed' })
      })
    } else {
      send(404, { error: 'not found' })
    }
  })
  // Only loopback clients are expected; keep idle sockets from piling up.
  server.keepAliveTimeout = 5_000
  server.headersTimeout = 10_000
  await startListening(server, port, host)
  return server
}

export async function closeStatusServer (server: http.Server): Promise<void> {
  server.closeAllConnections()
  await new Promise<void>(resolve => { server.close(() => { resolve() }) })
}

/** Fetches a running agent's JSON at `path`, or null when none answers. */
export async function askRunningAgent<T> (listen: string, path: string, timeoutMs: number): Promise<T | null> {
  try {
    const res = await fetch(`http://${listen}${path}`, { signal: AbortSignal.timeout(timeoutMs) })
    if (!res.ok) return null
    return await res.json() as T
  } catch {
    return null
  }
}
