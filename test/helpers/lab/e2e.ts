/**
 * End-to-end lab helpers: our programs (`cloud-connect start`, `control`, `gateway --control`) run
 * inside a lab namespace, Erugo-like containers (wireguard-go + nginx + upload sink + WebSocket
 * echo) in others, and the clients (curl, a `ws` client) beside the service, as a user would run
 * them. Every call is bounded in time; every process is the lab's, so its cleanup stops them.
 *
 *   const svc = await startAllInOne(lab, gwNs, serviceEnv({ CC_DATA_DIR: dir, ... }))
 *   const api = new ApiClient(lab, gwNs, svc.api)
 *   const access = await signUp(api, svc.outbox, 'a@example.com')
 *   const inst = await createInstance(api, access, 'files')
 *   const peer = await connectPeer(lab, peerNs, new ApiClient(lab, peerNs, apiFromPeer), inst.token)
 *   await startOrigin(lab, peerNs, filesDir)
 */
import { randomBytes } from 'node:crypto'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import net from 'node:net'
import { join } from 'node:path'
import type { Lab, LinkEnds } from '../lab.ts'
import { REPO_ROOT } from './gateway.ts'
import { StopWaiting, runOk, waitUntil, type ExecResult, type LabProcess } from './process.ts'
import type { WireguardGo } from './wireguard-go.ts'
import type { RawOptions, RawResult } from './e2e-tools.ts'
import pg from 'pg'
import type { Test } from 'tap'

export type { RawOptions, RawResult } from './e2e-tools.ts'

export const CLI = join(REPO_ROOT, 'bin/cloud-connect.js')
const RUN_TS = join(REPO_ROOT, 'bin/run-ts.js')
const TOOLS = join(REPO_ROOT, 'test/helpers/lab/e2e-tools.ts')
export const PASSWORD = 'correct horse battery staple'

/** Variables a developer's shell may carry that would change what the programs under test do. */
const INHERITED = ['DATABASE_URL', 'CC_BASE_DOMAIN', 'CC_PUBLIC_URL', 'CC_GATEWAY_ENDPOINT', 'CC_GATEWAY_PUBLIC_KEY',
  'CC_SMTP_URL', 'CC_CONTROL_URL', 'CC_GATEWAY_SECRET', 'CC_DATA_DIR', 'CC_METRICS_LISTEN']

/** The environment for a program under test: cheap password hashing, no rate limits in the way, JSON logs at info. */
export function serviceEnv (extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const name of INHERITED) delete env[name]
  return {
    ...env,
    CC_LOG_LEVEL: 'info',
    CC_ARGON2_MEMORY_KIB: '64',
    CC_ARGON2_TIME_COST: '1',
    CC_RATE_AUTH_PER_IP: '1000/1000',
    CC_RATE_LOGIN_FAILURES_PER_ADDRESS: '1000/1000',
    CC_RATE_LOGIN_FAILURES_PER_ACCOUNT: '1000/1000',
    CC_RATE_MAIL_PER_ACCOUNT: '1000/1000',
    CC_RATE_AUTH_FAILURES_PER_IP: '1000/1000',
    CC_RATE_PER_TOKEN: '10000/10000',
    CC_RATE_PER_IP: '10000/10000',
    CC_REPORT_INTERVAL: '0.5',
    ...extra,
  }
}

/**
 * An all-in-one service's listeners in its namespace: every address, with the API and WireGuard
 * reached from the containers at `publicIp` (for serviceEnv).
 */
export function listenEnv (publicIp: string, ports: { api: number, wg: number, https: number }): Record<string, string> {
  return {
    CC_API_HOST: '0.0.0.0',
    CC_API_PORT: String(ports.api),
    CC_PUBLIC_URL: `http://${publicIp}:${ports.api}`,
    CC_WG_HOST: '0.0.0.0',
    CC_WG_PORT: String(ports.wg),
    CC_GATEWAY_ENDPOINT: `${publicIp}:${ports.wg}`,
    CC_EDGE_HOST: '0.0.0.0',
    CC_HTTPS_PORT: String(ports.https),
  }
}

export interface Reply { status: number, body: any } // eslint-disable-line @typescript-eslint/no-explicit-any

/** The control API's JSON, spoken with curl from inside a namespace. */
export class ApiClient {
  constructor (readonly lab: Lab, readonly ns: string, readonly base: string) {}

  async call (method: string, path: string, options: { body?: unknown, token?: string } = {}): Promise<Reply> {
    const args = ['-sS', '--max-time', '20', '-X', method, '-w', '\n%{http_code}']
    if (options.token !== undefined) args.push('-H', `authorization: Bearer ${options.token}`)
    if (options.body !== undefined) args.push('-H', 'content-type: application/json', '--data-binary', '@-')
    const r = await this.lab.curl(this.ns, [...args, `${this.base}${path}`], { input: options.body === undefined ? '' : JSON.stringify(options.body), timeoutMs: 30_000 })
    if (r.code !== 0) throw new Error(`${method} ${path}: curl exit ${r.code}: ${r.stderr.trim()}`)
    const cut = r.stdout.lastIndexOf('\n')
    const text = r.stdout.slice(0, cut)
    let body: unknown = text
    try { body = text === '' ? undefined : JSON.parse(text) } catch { /* not JSON: keep the text */ }
    return { status: Number(r.stdout.slice(cut + 1)), body }
  }

  async ok (method: string, path: string, expected: number, options: { body?: unknown, token?: string } = {}): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
    const r = await this.call(method, path, options)
    if (r.status !== expected) throw new Error(`${method} ${path}: ${r.status} (expected ${expected}): ${JSON.stringify(r.body)}`)
    return r.body
  }
}

/** The first JSON log line of `proc` whose msg is `msg` (after `from` characters of output). */
export async function logLine (proc: LabProcess, msg: string, timeoutMs = 60_000): Promise<Record<string, any>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const m = await proc.waitForOutput(new RegExp(`^\\{[^\\n]*"msg":"${msg.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}"[^\\n]*\\}$`, 'm'), timeoutMs)
  return JSON.parse(m[0])
}

/**
 * A service namespace with two container namespaces, each on a link of its own. The service has
 * one public address (its end of link A); container B reaches it through link B.
 */
export interface TwoContainerLab { gwNs: string, nsA: string, nsB: string, linkA: LinkEnds, linkB: LinkEnds, publicIp: string }

export async function twoContainerLab (lab: Lab): Promise<TwoContainerLab> {
  const gwNs = await lab.namespace('gw')
  const nsA = await lab.namespace('peera')
  const nsB = await lab.namespace('peerb')
  const linkA = await lab.link(gwNs, nsA)
  const linkB = await lab.link(gwNs, nsB)
  const publicIp = linkA.a.ip
  await runOk('ip', ['-n', nsB, 'route', 'add', `${publicIp}/32`, 'via', linkB.a.ip])
  return { gwNs, nsA, nsB, linkA, linkB, publicIp }
}

export interface AllInOne {
  process: LabProcess
  /** http://127.0.0.1:PORT (inside the namespace). */
  api: string
  wgPort: number
  publicKey: string
  httpsPort: number
  ca: string
  outbox: string
}

/** `cloud-connect start` inside `ns` (`nodeArgs` before the script, e.g. --cpu-prof); resolves once it printed its banner. */
export async function startAllInOne (lab: Lab, ns: string, env: NodeJS.ProcessEnv, nodeArgs: string[] = []): Promise<AllInOne> {
  const proc = lab.spawn(ns, 'cloud-connect start', process.execPath, [...nodeArgs, CLI, 'start'], { cwd: REPO_ROOT, env })
  await proc.waitForOutput(/^ {2}Data +\S+$/m, 90_000)
  const text = proc.output()
  const find = (re: RegExp): RegExpExecArray => {
    const m = re.exec(text)
    if (m === null) throw new Error(`no ${String(re)} in the banner:\n${text.slice(-4000)}`)
    return m
  }
  const wg = find(/^ {2}WireGuard +\S+:(\d+) +public key (\S+)$/m)
  return {
    process: proc,
    api: `http://127.0.0.1:${find(/^ {2}API +http:\/\/[^:]+:(\d+)\/v1 /m)[1]}`,
    wgPort: Number(wg[1]),
    publicKey: wg[2],
    httpsPort: Number(find(/^ {2}HTTPS +https:\/\/<subdomain>\.\S+:(\d+)/m)[1]),
    ca: find(/^ {2}CA certificate +(\S+)/m)[1],
    outbox: find(/^ {2}Mail outbox +(\S+)$/m)[1],
  }
}

export interface ControlProcess { process: LabProcess, api: string, rpc: string }

/** `cloud-connect control` inside `ns`; resolves once the API and the RPC listener are up. */
export async function startControl (lab: Lab, ns: string, env: NodeJS.ProcessEnv): Promise<ControlProcess> {
  const proc = lab.spawn(ns, 'cloud-connect control', process.execPath, [CLI, 'control'], { cwd: REPO_ROOT, env })
  const api = (await logLine(proc, 'control API listening', 90_000)).url as string
  const rpc = (await logLine(proc, 'gateway RPC listening', 30_000)).url as string
  return { process: proc, api: api.replace('//0.0.0.0:', '//127.0.0.1:'), rpc }
}

export interface GatewayProcess { process: LabProcess, publicKey: string, ca: string | null }

/** `cloud-connect gateway --control URL` inside `ns`; resolves once it listens. */
export async function startGatewayProcess (lab: Lab, ns: string, controlUrl: string, env: NodeJS.ProcessEnv): Promise<GatewayProcess> {
  const proc = lab.spawn(ns, 'cloud-connect gateway', process.execPath, [CLI, 'gateway', '--control', controlUrl], { cwd: REPO_ROOT, env })
  const line = await logLine(proc, 'gateway listening', 90_000)
  return { process: proc, publicKey: line.publicKey as string, ca: line.caCertificate as string | null }
}

/** The verification link's token from the newest mail to `email` in the outbox directory. */
export async function outboxToken (outbox: string, email: string, kind = 'verify-email'): Promise<string> {
  return await waitUntil(`a ${kind} mail to ${email} in ${outbox}`, () => {
    if (!existsSync(outbox)) return false
    for (const file of readdirSync(outbox).sort().reverse()) {
      const text = readFileSync(join(outbox, file), 'utf8')
      if (!text.includes(email)) continue
      const m = new RegExp(`${kind}\\?token=([^\\s&"<]+)`).exec(text)
      if (m !== null) return decodeURIComponent(m[1])
    }
    return false
  }, 20_000, 100)
}

/** Register -> verify through the outbox link -> log in; returns the access token. */
export async function signUp (api: ApiClient, outbox: string, email: string): Promise<string> {
  await api.ok('POST', '/v1/auth/register', 201, {
    body: { name: 'E2E User', email, password: PASSWORD, password_confirmation: PASSWORD, accept_terms: true, accept_privacy: true, accept_marketing: false, erugo_version: '1.0.0' },
  })
  const token = await outboxToken(outbox, email)
  await api.ok('GET', `/v1/auth/verify-email?token=${encodeURIComponent(token)}`, 200)
  const login = await api.ok('POST', '/v1/auth/login', 200, { body: { email, password: PASSWORD } })
  return login.access_token as string
}

export interface CreatedInstance { id: string, token: string, tunnelIp: string, fullDomain: string, serverPublicKey: string, serverEndpoint: string }

export async function createInstance (api: ApiClient, access: string, subdomain: string): Promise<CreatedInstance> {
  const body = await api.ok('POST', '/v1/instances', 201, { body: { name: `E2E ${subdomain}`, subdomain }, token: access })
  return {
    id: body.instance.id,
    token: body.credentials.instance_token,
    tunnelIp: body.instance.tunnel_ip,
    fullDomain: body.instance.full_domain,
    serverPublicKey: body.credentials.wireguard.server_public_key,
    serverEndpoint: body.credentials.wireguard.server_endpoint,
  }
}

export interface TunnelConfigReply {
  interface: { address: string }
  peer: { public_key: string, endpoint: string, allowed_ips: string, persistent_keepalive: number }
  peers?: Array<{ gateway_id: string, role: string, region: string | null, public_key: string, endpoint: string, allowed_ips: string, persistent_keepalive: number }>
}

export interface ConnectedPeer { wg: WireguardGo, privateKey: string, publicKey: string, config: TunnelConfigReply, domains: { subdomain: string, custom_domains: string[] } }

/**
 * What an Erugo container does (spec Flow 2): generate its own key pair with `wg genkey`, call
 * POST /v1/tunnel/register with the instance token (from its own namespace), and bring up
 * wireguard-go from the returned tunnel_config alone.
 */
export async function connectPeer (lab: Lab, api: ApiClient, instanceToken: string, listenPort = 51820): Promise<ConnectedPeer> {
  const ns = api.ns
  const gen = await lab.exec(ns, 'wg', ['genkey'])
  const privateKey = gen.stdout.trim()
  const publicKey = (await lab.exec(ns, 'wg', ['pubkey'], { input: `${privateKey}\n` })).stdout.trim()
  if (gen.code !== 0 || publicKey.length !== 44) throw new Error(`wg genkey/pubkey failed: ${gen.stderr}`)
  const reply = await api.ok('POST', '/v1/tunnel/register', 200, { body: { public_key: publicKey }, token: instanceToken })
  const config = reply.tunnel_config as TunnelConfigReply
  const wg = await lab.startWireguardGo(ns, {
    address: config.interface.address,
    privateKey,
    listenPort,
    peers: [{
      publicKey: config.peer.public_key,
      endpoint: config.peer.endpoint,
      allowedIPs: config.peer.allowed_ips.split(',').map(s => s.trim()),
      persistentKeepalive: config.peer.persistent_keepalive,
    }],
  })
  return { wg, privateKey, publicKey, config, domains: reply.domains }
}

export interface Origin { nginx: LabProcess, sink: LabProcess, ws: LabProcess }

/**
 * The container's web side on port 80 of every address in `ns` (so also its tunnel address), in
 * the shape of Erugo's Caddy: files from `root`; `/upload` streamed (no buffering, no size cap) to
 * the hashing sink (test/helpers/http-sink.ts); `/ws` upgraded to a WebSocket echo. Idle upstream
 * keep-alive connections are closed after `keepaliveSeconds`.
 */
export async function startOrigin (lab: Lab, ns: string, root: string, options: { keepaliveSeconds?: number } = {}): Promise<Origin> {
  const sink = await lab.startHttpSink(ns, '127.0.0.1:8080')
  const ws = lab.spawn(ns, `ws-echo ${ns}`, process.execPath, [RUN_TS, TOOLS, 'ws-server', '127.0.0.1:8081'], { cwd: REPO_ROOT })
  await ws.waitForOutput(/^listening /m, 20_000)
  const nginx = await lab.startNginx(ns, {
    root,
    listen: '0.0.0.0:80',
    serverExtra: `
    client_max_body_size 0;
    keepalive_timeout ${options.keepaliveSeconds ?? 75}s;
    location /upload {
      proxy_pass http://127.0.0.1:8080;
      proxy_http_version 1.1;
      proxy_request_buffering off;
      proxy_buffering off;
    }
    location /ws {
      proxy_pass http://127.0.0.1:8081;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 300s;
    }`,
  })
  return { nginx: nginx.process, sink: sink.process, ws }
}

/** curl for https://HOST:PORT/PATH from inside `ns`, HOST resolved to `address`, certificate checked against `ca`. */
export function httpsArgs (host: string, port: number, path: string, ca: string, address = '127.0.0.1'): string[] {
  return ['--cacert', ca, '--resolve', `${host}:${port}:${address}`, `https://${host}:${port}${path}`]
}

export interface Fetched { status: number, body: string, headers: string }

/** One HTTPS request with curl inside `ns` (status, body, response headers). */
export async function httpsFetch (lab: Lab, ns: string, host: string, port: number, path: string, ca: string, extra: string[] = [], maxTimeS = 30, address = '127.0.0.1'): Promise<Fetched> {
  // Headers on stdout before the body (-D /dev/stderr crashes this curl inside `ip netns exec`).
  const r = await lab.curl(ns, ['-sS', '--max-time', String(maxTimeS), '-D', '-', '-w', '\n%{http_code}', ...extra, ...httpsArgs(host, port, path, ca, address)], { timeoutMs: (maxTimeS + 10) * 1000 })
  if (r.code !== 0) throw new Error(`curl https://${host}:${port}${path}: exit ${r.code ?? r.signal}: ${r.stderr.slice(-500)}`)
  let rest = r.stdout
  let headers = ''
  while (rest.startsWith('HTTP/')) {
    const end = rest.indexOf('\r\n\r\n')
    if (end < 0) break
    headers = rest.slice(0, end)
    rest = rest.slice(end + 4)
  }
  const cut = rest.lastIndexOf('\n')
  return { status: Number(rest.slice(cut + 1)), body: rest.slice(0, cut), headers }
}

/** curl's exit code for GET https://host/path (0: an HTTP answer; 35: TLS refused; 28: timed out). */
export async function httpsCurlExit (lab: Lab, ns: string, host: string, port: number, path: string, ca: string): Promise<number | null> {
  return (await lab.curl(ns, ['-sS', '-o', '/dev/null', '--max-time', '20', ...httpsArgs(host, port, path, ca)], { timeoutMs: 30_000 })).code
}

/** Polls until GET https://host/path answers 200 (the tunnel is up end to end). */
export async function waitForHttps (lab: Lab, ns: string, host: string, port: number, path: string, ca: string, timeoutMs = 30_000): Promise<Fetched> {
  return await waitUntil(`200 from https://${host}${path}`, async () => {
    const r = await httpsFetch(lab, ns, host, port, path, ca, [], 10)
    return r.status === 200 ? r : false
  }, timeoutMs, 250)
}

/** Runs `script` with bash -o pipefail inside `ns`. */
export async function bash (lab: Lab, ns: string, script: string, timeoutMs: number): Promise<ExecResult> {
  return await lab.exec(ns, 'bash', ['-o', 'pipefail', '-c', script], { timeoutMs, cwd: REPO_ROOT })
}

/** SHA-256 of a download (streamed through sha256sum, never stored) and curl's numbers. */
export async function downloadSha256 (lab: Lab, ns: string, curlTarget: string[], timeoutS: number): Promise<{ sha256: string, bytes: number, seconds: number, httpVersion: string }> {
  const quoted = curlTarget.map(a => `'${a.replace(/'/g, `'\\''`)}'`).join(' ')
  const r = await bash(lab, ns, `curl -sS --fail --max-time ${timeoutS} -w '%{size_download} %{time_total} %{http_version}\\n' -o >(sha256sum >&2) ${quoted}; wait`, (timeoutS + 15) * 1000)
  if (r.code !== 0) throw new Error(`download failed (${r.code}): ${r.stderr.slice(-1000)}`)
  const [bytes, seconds, httpVersion] = r.stdout.trim().split(' ')
  const sha = /^([0-9a-f]{64}) /m.exec(r.stderr)
  if (sha === null) throw new Error(`no sha256sum output: ${r.stderr.slice(-500)}`)
  return { sha256: sha[1], bytes: Number(bytes), seconds: Number(seconds), httpVersion }
}

/**
 * Streams Generator(bytes, seed) into `curl -T -` (chunked, never on disk) and returns what the
 * sink says it received next to what was sent.
 */
export async function uploadGenerated (lab: Lab, ns: string, curlTarget: string[], bytes: number, seed: number, timeoutS: number): Promise<{ sent: string, sink: { bytes: number, sha256: string }, seconds: number }> {
  const quoted = curlTarget.map(a => `'${a.replace(/'/g, `'\\''`)}'`).join(' ')
  const r = await bash(lab, ns, `'${process.execPath}' '${RUN_TS}' '${TOOLS}' generate ${bytes} ${seed} | curl -sS --fail --max-time ${timeoutS} -T - -w '\\n%{time_total}\\n' ${quoted}`, (timeoutS + 15) * 1000)
  if (r.code !== 0) throw new Error(`upload failed (${r.code}): ${r.stderr.slice(-1000)}`)
  const lines = r.stdout.trim().split('\n')
  const seconds = Number(lines.pop())
  const sent = r.stderr.trim().split('\n').pop() ?? ''
  return { sent, sink: JSON.parse(lines.join('\n')) as { bytes: number, sha256: string }, seconds }
}

/** The `ws` client (e2e-tools.ts ws-client) inside `ns`: text, 1 MB binary and 200 small messages echoed. */
export async function wsEcho (lab: Lab, ns: string, url: string, ca: string, address = '127.0.0.1'): Promise<{ ok: boolean, messages: number, bytes: number, error?: string }> {
  const r = await lab.exec(ns, process.execPath, [RUN_TS, TOOLS, 'ws-client', url, ca, address], { cwd: REPO_ROOT, timeoutMs: 60_000 })
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '')
  } catch {
    return { ok: false, messages: 0, bytes: 0, error: `exit ${r.code}: ${(r.stderr || r.stdout).slice(-1000)}` }
  }
}

/** Raw bytes over TLS (or TCP) from inside `ns` (e2e-tools.ts raw): what the server answered, and whether it closed. */
export async function rawExchange (lab: Lab, ns: string, options: RawOptions): Promise<RawResult[]> {
  const r = await lab.exec(ns, process.execPath, [RUN_TS, TOOLS, 'raw', JSON.stringify(options)], { cwd: REPO_ROOT, timeoutMs: options.totalMs + 30_000 })
  try {
    return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as RawResult[]
  } catch {
    throw new Error(`raw exchange failed (exit ${r.code}): ${(r.stderr || r.stdout).slice(-1000)}`)
  }
}

/** GET http://METRICS/status of a gateway (CC_METRICS_LISTEN) from inside its namespace. */
export async function gatewayStatus (lab: Lab, ns: string, metricsListen: string): Promise<{ peers: Array<{ publicKey: string, lastHandshakeAt: number | null }>, routes: number, configVersion: number }> {
  const r = await lab.curl(ns, ['-sS', '--fail', '--max-time', '5', `http://${metricsListen}/status`], { timeoutMs: 10_000 })
  if (r.code !== 0) throw new Error(`gateway /status: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

/**
 * The container re-applies its gateway peer (`wg set ... remove`, then the same tunnel_config):
 * wireguard-go drops its session and, with the persistent keepalive, handshakes again at once.
 * Resolves when the gateway (GET /status on `metricsListen`) shows a newer handshake for the peer.
 */
export async function renewHandshake (lab: Lab, gatewayNs: string, metricsListen: string, peer: ConnectedPeer): Promise<void> {
  const last = async (): Promise<number> => (await gatewayStatus(lab, gatewayNs, metricsListen)).peers.find(p => p.publicKey === peer.publicKey)?.lastHandshakeAt ?? 0
  const before = await last()
  const gateway = peer.config.peer
  await peer.wg.removePeer(gateway.public_key)
  await peer.wg.setPeer({ publicKey: gateway.public_key, endpoint: gateway.endpoint, allowedIPs: gateway.allowed_ips.split(','), persistentKeepalive: gateway.persistent_keepalive })
  await waitUntil('a new handshake at the gateway', async () => await last() > before, 10_000, 200)
}

/** Polls GET /v1/tunnel/status (instance token) until it reads `want`. */
export async function waitForTunnelStatus (api: ApiClient, instanceToken: string, want: string, timeoutMs: number): Promise<number> {
  const started = Date.now()
  await waitUntil(`tunnel_status ${want}`, async () => {
    const r = await api.call('GET', '/v1/tunnel/status', { token: instanceToken })
    if (r.status === 401) throw new StopWaiting(`tunnel status: 401 ${JSON.stringify(r.body)}`)
    return r.body?.tunnel_status === want
  }, timeoutMs, 250)
  return Date.now() - started
}

/**
 * Postgres for processes inside a namespace, whose 127.0.0.1 is not the host's: a relay in this
 * (host) process listening on a Unix socket, which namespaces share through the file system,
 * forwarding to the server's TCP port on the host's loopback (so password authentication applies
 * as usual). Point libpq-style URLs at it with `?host=DIR` (pg connects to DIR/.s.PGSQL.PORT).
 */
export class PostgresRelay {
  private readonly sockets = new Set<net.Socket>()
  private readonly server: net.Server

  private constructor (readonly dir: string, readonly port: number) {
    this.server = net.createServer(client => {
      const upstream = net.connect({ host: '127.0.0.1', port })
      this.sockets.add(client)
      this.sockets.add(upstream)
      const drop = (): void => {
        client.destroy()
        upstream.destroy()
        this.sockets.delete(client)
        this.sockets.delete(upstream)
      }
      for (const s of [client, upstream]) { s.on('error', drop); s.on('close', drop) }
      client.pipe(upstream).pipe(client)
    })
  }

  /** Relays DIR/.s.PGSQL.PORT to 127.0.0.1:PORT. */
  static async start (dir: string, port: number): Promise<PostgresRelay> {
    const relay = new PostgresRelay(dir, port)
    await new Promise<void>((resolve, reject) => {
      relay.server.once('error', reject)
      relay.server.listen(join(dir, `.s.PGSQL.${port}`), () => { resolve() })
    })
    return relay
  }

  /** `url` (a postgres:// URL of a server on this host's loopback) rewritten to go through the relay. */
  urlFor (url: string): string {
    const u = new URL(url)
    u.hostname = 'localhost'
    u.port = String(this.port)
    u.searchParams.set('host', this.dir)
    return u.toString()
  }

  async close (): Promise<void> {
    for (const s of this.sockets) s.destroy()
    await new Promise<void>(resolve => this.server.close(() => { resolve() }))
  }
}

/** A fresh database on the server of `url`; dropped by the teardown. */
export async function freshDatabase (t: Pick<Test, 'teardown'>, url: string): Promise<string> {
  const name = `cc_e2e_${process.pid}_${randomBytes(3).toString('hex')}`
  const admin = new pg.Client({ connectionString: url })
  await admin.connect()
  try { await admin.query(`create database ${name}`) } finally { await admin.end() }
  t.teardown(async () => {
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    try { await c.query(`drop database if exists ${name} with (force)`) } finally { await c.end() }
  })
  const u = new URL(url)
  u.pathname = `/${name}`
  return u.toString()
}
