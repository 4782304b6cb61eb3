/**
 * The agent's side of WireGuard over TLS (gateway/edge/wg-over-tls.ts): a TLS connection to the
 * gateway's HTTPS port that negotiates the ALPN protocol `cc-wireguard/1` (or, `via: 'upgrade'`,
 * an HTTP/1.1 upgrade on the reserved path of api.<base>), directly or through an HTTP proxy
 * (HTTP CONNECT, RFC 9110 9.3.6) named by HTTPS_PROXY / https_proxy.
 *
 * The gateway's certificate is not verified: TLS here only carries the tunnel past networks that
 * pass nothing but HTTPS. The WireGuard handshake inside authenticates the gateway by its public
 * key, exactly as over UDP, so a man in the middle learns nothing and can only drop the stream.
 */
import net from 'node:net'
import tls from 'node:tls'
import { CodedError } from '../proto/errors.ts'
import { WIREGUARD_ALPN, WIREGUARD_UPGRADE_PATH, WIREGUARD_UPGRADE_TOKEN } from '../gateway/edge/wg-over-tls.ts'

export type AgentTransport = 'udp' | 'tls'
export const TRANSPORT_SETTINGS = ['auto', 'udp', 'tls'] as const
export type TransportSetting = typeof TRANSPORT_SETTINGS[number]

export class TransportError extends CodedError {
  override readonly name = 'TransportError'
}

export interface StreamConnectOptions {
  host: string
  port: number
  /** SNI: a name the gateway has a certificate for (api.<base>). */
  servername: string
  /** http://[user:pass@]host:port of an HTTP CONNECT proxy, or null. */
  proxy: string | null
  timeoutMs: number
  via?: 'alpn' | 'upgrade'
}

/** The proxy from the environment for `host` (HTTPS_PROXY / https_proxy, unless NO_PROXY names it). */
export function proxyFromEnv (host: string, env: NodeJS.ProcessEnv = process.env): string | null {
  const proxy = env.https_proxy ?? env.HTTPS_PROXY ?? ''
  if (proxy === '') return null
  const noProxy = (env.no_proxy ?? env.NO_PROXY ?? '').split(',').map(s => s.trim().toLowerCase()).filter(s => s !== '')
  const h = host.toLowerCase()
  for (const entry of noProxy) {
    if (entry === '*') return null
    const suffix = entry.startsWith('.') ? entry : `.${entry}`
    if (h === entry || h.endsWith(suffix)) return null
  }
  return proxy
}

/** Opens a stream for framed WireGuard messages; rejects with a TransportError naming the step that failed. */
export async function connectStream (options: StreamConnectOptions): Promise<tls.TLSSocket> {
  const deadline = Date.now() + options.timeoutMs
  const raw = options.proxy === null ? null : await connectViaProxy(options.proxy, options.host, options.port, options.timeoutMs)
  const via = options.via ?? 'alpn'
  const socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
    const s = tls.connect({
      ...(raw === null ? { host: options.host, port: options.port } : { socket: raw }),
      servername: net.isIP(options.servername) === 0 ? options.servername : undefined,
      ALPNProtocols: via === 'alpn' ? [WIREGUARD_ALPN] : ['http/1.1'],
      rejectUnauthorized: false,
    })
    const timer = setTimeout(() => { s.destroy(); reject(new TransportError('tls_timeout', `TLS to ${options.host}:${options.port} did not complete in ${options.timeoutMs} ms`)) }, Math.max(1, deadline - Date.now()))
    s.once('secureConnect', () => { clearTimeout(timer); resolve(s) })
    s.once('error', err => { clearTimeout(timer); s.destroy(); reject(new TransportError('tls_failed', `TLS to ${options.host}:${options.port}: ${err.message}`)) })
  })
  if (via === 'alpn') {
    if (socket.alpnProtocol !== WIREGUARD_ALPN) {
      socket.destroy()
      throw new TransportError('alpn_refused', `${options.host}:${options.port} does not speak ${WIREGUARD_ALPN} (a gateway older than WireGuard over TLS, or a TLS-inspecting middlebox)`)
    }
    return socket
  }
  const head = await exchangeHead(socket,
    `GET ${WIREGUARD_UPGRADE_PATH} HTTP/1.1\r\nhost: ${options.servername}\r\nconnection: upgrade\r\nupgrade: ${WIREGUARD_UPGRADE_TOKEN}\r\n\r\n`,
    Math.max(1, deadline - Date.now()))
  if (!/^HTTP\/1\.1 101 /.test(head.status)) {
    socket.destroy()
    throw new TransportError('upgrade_refused', `${options.host}:${options.port} answered the WireGuard upgrade with "${head.status}"`)
  }
  return socket
}

/** A TCP connection to `host`:`port` through the HTTP proxy at `proxyUrl` (CONNECT). */
export async function connectViaProxy (proxyUrl: string, host: string, port: number, timeoutMs: number): Promise<net.Socket> {
  let url: URL
  try {
    url = new URL(proxyUrl.includes('://') ? proxyUrl : `http://${proxyUrl}`)
  } catch {
    throw new TransportError('proxy_invalid', 'HTTPS_PROXY is not a URL')
  }
  if (url.protocol !== 'http:') throw new TransportError('proxy_invalid', `HTTPS_PROXY must be an http:// proxy (got ${url.protocol})`)
  const proxyHost = url.hostname.replace(/^\[|\]$/g, '')
  const proxyPort = url.port === '' ? 80 : Number(url.port)
  const socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect({ host: proxyHost, port: proxyPort })
    const timer = setTimeout(() => { s.destroy(); reject(new TransportError('proxy_timeout', `proxy ${proxyHost}:${proxyPort} did not answer in ${timeoutMs} ms`)) }, timeoutMs)
    s.once('connect', () => { clearTimeout(timer); resolve(s) })
    s.once('error', err => { clearTimeout(timer); reject(new TransportError('proxy_failed', `proxy ${proxyHost}:${proxyPort}: ${err.message}`)) })
  })
  const authority = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
  const auth = url.username === '' ? '' : `proxy-authorization: Basic ${Buffer.from(`${decodeURIComponent(url.username)}:${decodeURIComponent(url.password)}`).toString('base64')}\r\n`
  const head = await exchangeHead(socket, `CONNECT ${authority} HTTP/1.1\r\nhost: ${authority}\r\n${auth}\r\n`, timeoutMs)
  // RFC 9110 9.3.6: any 2xx means the tunnel is established.
  if (!/^HTTP\/1\.[01] 2\d\d/.test(head.status)) {
    socket.destroy()
    throw new TransportError('proxy_refused', `proxy ${proxyHost}:${proxyPort} refused CONNECT ${authority}: "${head.status}"`)
  }
  return socket
}

const MAX_HEAD = 16 * 1024

/** Writes `request`, reads one HTTP response head; bytes after it are put back on the socket. */
async function exchangeHead (socket: net.Socket, request: string, timeoutMs: number): Promise<{ status: string }> {
  return await new Promise((resolve, reject) => {
    let buffered = Buffer.alloc(0)
    const done = (err: Error | null, status?: string): void => {
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('error', onError)
      socket.off('close', onClose)
      if (err !== null) { socket.destroy(); reject(err); return }
      resolve({ status: status! })
    }
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk])
      const end = buffered.indexOf('\r\n\r\n')
      if (end === -1) {
        if (buffered.length > MAX_HEAD) done(new TransportError('bad_response', 'response head too long'))
        return
      }
      socket.pause()
      const rest = buffered.subarray(end + 4)
      if (rest.length > 0) socket.unshift(rest)
      done(null, buffered.subarray(0, buffered.indexOf('\r\n')).toString('latin1'))
    }
    const onError = (err: Error): void => { done(new TransportError('connection_failed', err.message)) }
    const onClose = (): void => { done(new TransportError('connection_closed', 'closed before answering')) }
    const timer = setTimeout(() => { done(new TransportError('timeout', `no answer in ${timeoutMs} ms`)) }, timeoutMs)
    socket.on('data', onData)
    socket.on('error', onError)
    socket.on('close', onClose)
    socket.write(request)
  })
}

/** How the userspace tunnel picks and changes its transport (settings CC_AGENT_TRANSPORT and friends). */
export interface TransportOptions {
  /** auto: UDP, TLS when no handshake completes over UDP, UDP again when a probe succeeds. */
  setting: TransportSetting
  /** auto: how long UDP gets to complete a handshake before TLS is tried. */
  fallbackAfterMs: number
  /** auto, on TLS: how often a handshake is tried over UDP. */
  udpProbeIntervalMs: number
  /** The gateway's HTTPS port (its host is the gateway's endpoint host). */
  tlsPort: number
  /** SNI for the TLS connection (a name the gateway has a certificate for: api.<base>); null: the endpoint host. */
  serverName: string | null
  /** The proxy for a host (default: HTTPS_PROXY / https_proxy unless NO_PROXY names it). */
  proxyFor?: (host: string) => string | null
}

export const TRANSPORT_DEFAULTS: TransportOptions = {
  setting: 'auto',
  fallbackAfterMs: 5_000,
  udpProbeIntervalMs: 300_000,
  tlsPort: 443,
  serverName: null,
}

/** Whether a stream to the gateway's HTTPS port opens (`via` ALPN or upgrade); the error's message when not. */
export async function tryStream (options: StreamConnectOptions): Promise<{ ok: true } | { ok: false, error: string }> {
  try {
    const socket = await connectStream(options)
    socket.destroy()
    return { ok: true }
  } catch (err) {
    return { ok: false, error: (err as Error).message }
  }
}
