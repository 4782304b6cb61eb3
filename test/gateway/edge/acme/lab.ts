/**
 * An edge whose issuer is ACME against a fresh pebble: the edge listens on ports chosen first so
 * pebble's VA can be pointed at them (httpPort / tlsPort in its config).
 */
import fs from 'node:fs'
import path from 'node:path'
import tls from 'node:tls'
import pino from 'pino'
import { startPebble, type Pebble, type PebbleOptions } from '../../../helpers/pebble.ts'
import { freePort } from '../../../helpers/ports.ts'
import { startEdge, tempDir, route, startOrigin, loopbackLookup, type Teardown, type TestEdge } from '../helpers.ts'
import { FileCertStore, type CertStore } from '../../../../gateway/edge/cert-store.ts'
import type { EdgeOptions, Route } from '../../../../gateway/edge/index.ts'
import { AcmeIssuer, type AcmeIssuerOptions } from '../../../../gateway/edge/acme/acme-issuer.ts'
import { HttpChallenges, type ChallengeSolver } from '../../../../gateway/edge/acme/challenges.ts'

export interface AcmeLab {
  pebble: Pebble
  issuer: AcmeIssuer
  http: HttpChallenges
  store: CertStore
  te: TestEdge
  originPort: number
  route (instanceId: string, hostnames: string[]): Route
}

export interface AcmeLabOptions {
  pebble?: Partial<PebbleOptions>
  issuer?: Partial<AcmeIssuerOptions>
  edge?: Partial<EdgeOptions>
  /** Solvers besides HTTP-01 (placed before it). */
  solvers?: (lab: { pebble: Pebble }) => ChallengeSolver[]
  hostnames?: string[]
}

export async function startAcmeLab (t: Teardown, options: AcmeLabOptions = {}): Promise<AcmeLab> {
  const [httpsPort, httpPort] = await Promise.all([freePort(), freePort()])
  const pebble = await startPebble(t, { httpPort, tlsPort: httpsPort, ...options.pebble })
  const dataDir = tempDir(t)
  const store = options.edge?.certStore ?? new FileCertStore({ directory: path.join(dataDir, 'tls') })
  const http = new HttpChallenges()
  const issuer = new AcmeIssuer({
    directoryUrl: pebble.directoryUrl,
    caBundlePem: pebble.listenerCaPem,
    store,
    solvers: [...(options.solvers?.({ pebble }) ?? []), http],
    logger: pino({ level: 'silent' }),
    ...options.issuer,
  })
  const origin = await startOrigin(t, (req, res) => { res.end(`hello ${req.headers.host ?? ''}\n`) })
  const mk = (instanceId: string, hostnames: string[]): Route => route(instanceId, origin.port, hostnames)
  const te = await startEdge(t, options.hostnames === undefined ? [] : [mk('inst-1', options.hostnames)], {
    dataDir,
    issuer,
    certStore: store,
    challenges: http,
    https: { host: '127.0.0.1', port: httpsPort },
    http: { host: '127.0.0.1', port: httpPort },
    ...options.edge,
  })
  return { pebble, issuer, http, store, te, originPort: origin.port, route: mk }
}

export interface HandshakeResult {
  ok: boolean
  authorized: boolean
  error?: string
  peerCertificate?: tls.PeerCertificate
}

/** One TLS handshake with `servername`, verifying against `ca`. */
export async function handshake (port: number, servername: string, ca: string | Buffer, timeoutMs = 20_000): Promise<HandshakeResult> {
  return await new Promise(resolve => {
    const socket = tls.connect({ host: '127.0.0.1', port, servername, ca, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'], lookup: loopbackLookup })
    const timer = setTimeout(() => { socket.destroy(); resolve({ ok: false, authorized: false, error: 'timeout' }) }, timeoutMs)
    socket.once('secureConnect', () => {
      clearTimeout(timer)
      const result: HandshakeResult = { ok: true, authorized: socket.authorized, peerCertificate: socket.getPeerCertificate() }
      if (!socket.authorized) result.error = String(socket.authorizationError)
      socket.destroy()
      resolve(result)
    })
    socket.once('error', err => { clearTimeout(timer); socket.destroy(); resolve({ ok: false, authorized: false, error: err.message }) })
  })
}

/** Run `task` over `items` with at most `limit` at once. */
export async function pool<T, R> (items: T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array<R>(items.length)
  let next = 0
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++
      results[i] = await task(items[i]!)
    }
  }))
  return results
}

/**
 * The CC_* environment of a gateway on loopback that gets certificates from `pebble` (its
 * listener's CA written as the bundle), plus `extra` (challenges, gateway id, DNS provider...).
 */
export function acmeGatewayEnv (t: Teardown, pebble: Pebble, ports: { https: number, http: number }, extra: Record<string, string>): Record<string, string> {
  const dataDir = tempDir(t)
  const caBundle = path.join(dataDir, 'pebble-listener.pem')
  fs.writeFileSync(caBundle, pebble.listenerCaPem)
  return {
    CC_DATA_DIR: dataDir,
    CC_WG_HOST: '127.0.0.1',
    CC_WG_PORT: '0',
    CC_EDGE_HOST: '127.0.0.1',
    CC_HTTPS_PORT: String(ports.https),
    CC_HTTP_PORT: String(ports.http),
    CC_ACME_DIRECTORY: pebble.directoryUrl,
    CC_ACME_CA_BUNDLE: caBundle,
    ...extra,
  }
}
