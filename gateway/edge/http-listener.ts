/**
 * The plain-HTTP listener: ACME HTTP-01 challenges (RFC 8555 8.3) go to the challenge responder;
 * every other request for a routed hostname is redirected to HTTPS with its path and query kept;
 * an unknown hostname gets the 404 page.
 */
import type http from 'node:http'
import type { Logger } from 'pino'
import type { RouteTable } from './routes.ts'
import { normalizeHost } from './routes.ts'
import { pageHeaders, renderPage } from './pages.ts'
import { nextRequestId } from './exchange.ts'
import { plainIp } from './headers.ts'

/**
 * Answers HTTP-01 challenges. The ACME issuer implements it; the default knows no tokens.
 * Return the key authorization for (host, token), or undefined for "no such challenge" (404).
 */
export interface ChallengeResponder {
  keyAuthorization (host: string, token: string): string | undefined | Promise<string | undefined>
}

export const noChallenges: ChallengeResponder = { keyAuthorization: () => undefined }

export const ACME_CHALLENGE_PREFIX = '/.well-known/acme-challenge/'
/** RFC 8555 8.1: tokens are base64url. */
const TOKEN = /^[A-Za-z0-9_-]{1,256}$/

export interface HttpListenerOptions {
  routes: RouteTable
  challenges: ChallengeResponder
  logger: Logger
  /** The public HTTPS port for Location (443 is left out of the URL). */
  httpsPort: number
}

export function createHttpHandler (options: HttpListenerOptions): (req: http.IncomingMessage, res: http.ServerResponse) => void {
  const { routes, challenges, logger, httpsPort } = options
  const portSuffix = httpsPort === 443 ? '' : `:${httpsPort}`

  const finish = (req: http.IncomingMessage, res: http.ServerResponse, requestId: string, status: number, started: number): void => {
    logger.info({
      reqId: requestId, method: req.method, host: req.headers.host, path: (req.url ?? '').split('?', 1)[0], status,
      bytesIn: 0, bytesOut: Number(res.getHeader('content-length') ?? 0), durationMs: Math.round(performance.now() - started),
      client: plainIp(req.socket.remoteAddress), proto: 'http',
    }, 'request')
  }

  const send = (req: http.IncomingMessage, res: http.ServerResponse, status: number, headers: Record<string, string>, body: string): void => {
    // The body of a request we only redirect or refuse is not read: close rather than drain it.
    if (!req.complete) headers.connection = 'close'
    res.writeHead(status, headers)
    res.end(req.method === 'HEAD' ? undefined : body)
    req.resume()
  }

  return (req, res) => {
    const started = performance.now()
    const requestId = nextRequestId()
    res.on('error', () => {})
    req.on('error', () => {})
    const url = req.url ?? ''
    const host = normalizeHost(req.headers.host)

    if (url.startsWith(ACME_CHALLENGE_PREFIX)) {
      const token = url.slice(ACME_CHALLENGE_PREFIX.length)
      const answer = async (): Promise<string | undefined> => TOKEN.test(token) && host !== '' ? await challenges.keyAuthorization(host, token) : undefined
      answer().then(keyAuthorization => {
        if (keyAuthorization === undefined) {
          send(req, res, 404, { 'content-type': 'text/plain', 'content-length': '10', 'cache-control': 'no-store' }, 'not found\n')
          finish(req, res, requestId, 404, started)
          return
        }
        const body = keyAuthorization
        send(req, res, 200, { 'content-type': 'application/octet-stream', 'content-length': String(Buffer.byteLength(body)), 'cache-control': 'no-store' }, body)
        finish(req, res, requestId, 200, started)
      }, err => {
        logger.warn({ err, host, token }, 'challenge responder failed')
        send(req, res, 500, { 'content-type': 'text/plain', 'content-length': '15', 'cache-control': 'no-store' }, 'internal error\n')
        finish(req, res, requestId, 500, started)
      })
      return
    }

    if (host === '' || routes.lookup(host) === undefined || !url.startsWith('/')) {
      const body = renderPage('unknown-host', { host: req.headers.host, requestId })
      send(req, res, 404, pageHeaders(body, requestId), body)
      finish(req, res, requestId, 404, started)
      return
    }
    // 301 keeps GET/HEAD as they are; 308 (RFC 9110 15.4.9) also keeps the method and body of others.
    const status = req.method === 'GET' || req.method === 'HEAD' ? 301 : 308
    const location = `https://${host}${portSuffix}${url}`
    const body = `Redirecting to ${location}\n`
    send(req, res, status, {
      location,
      'content-type': 'text/plain; charset=utf-8',
      'content-length': String(Buffer.byteLength(body)),
      'cache-control': 'no-store',
    }, body)
    finish(req, res, requestId, status, started)
  }
}
