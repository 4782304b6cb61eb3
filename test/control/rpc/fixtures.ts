/** The control app with its RPC service (and optionally the HTTP listener) over a test database. */
import type { Test } from 'tap'
import pino from 'pino'
import type { AppDeps } from '../../../control/app.ts'
import type { Db } from '../../../control/db/knex.ts'
import { GatewayRegistry } from '../../../control/rpc/registry.ts'
import { RpcServer } from '../../../control/rpc/server.ts'
import { RpcService } from '../../../control/rpc/service.ts'
import type { CertStoreService } from '../../../control/services/cert-store.ts'
import { IpamService, TunnelPool } from '../../../control/services/ipam.ts'
import { ConfiguredGateway } from '../../../control/services/tunnel.ts'
import { RPC_PROTOCOL_VERSION, type GatewayHello, type GatewayReport, type PeerReport } from '../../../proto/rpc/index.ts'
import { bearer, startApp, type TestApp } from '../harness.ts'
import { BASE_DOMAIN, Clock, GATEWAY_ENDPOINT, GATEWAY_KEY, mustCreate, newPublicKey, newUser } from '../routes/tunnel-fixtures.ts'

export const SECRET = 'test-gateway-secret-0123456789-abcdefghijklmnopq'

export interface RpcHarness extends TestApp {
  rpc: RpcService
  registry: GatewayRegistry
  server: RpcServer | null
  clock: Clock | undefined
  /** fetch against the RPC listener with the secret (or `secret`). */
  call (method: string, path: string, body?: unknown, secret?: string | null): Promise<Response>
}

export interface RpcHarnessOptions {
  clock?: Clock
  waitMs?: number
  listen?: boolean
  /** Unset: no configured gateway key (creation answers 503 until a hello). */
  configuredKey?: string | null
  env?: Record<string, string>
  /** The shared certificate store the RPC offers (unset: none). */
  certificates?: CertStoreService
  /** Extra app dependencies (e.g. `subscriptions` for plans). */
  deps?: Partial<AppDeps>
}

export async function startRpc (t: Test, db: Db, options: RpcHarnessOptions = {}): Promise<RpcHarness> {
  const now = options.clock?.now ?? (() => new Date())
  const configuredKey = options.configuredKey === undefined ? GATEWAY_KEY : options.configuredKey
  const registry = new GatewayRegistry({
    db,
    ipam: new IpamService({ pool: new TunnelPool(options.env?.CC_TUNNEL_POOL ?? '10.100.0.0/16'), quarantineSeconds: 86_400, now }),
    reportIntervalMs: 5_000,
    fallback: new ConfiguredGateway(configuredKey ?? undefined, GATEWAY_ENDPOINT),
    configuredEndpoint: GATEWAY_ENDPOINT,
    now,
    cacheMs: 0,
  })
  const env: Record<string, string> = { CC_GATEWAY_ENDPOINT: GATEWAY_ENDPOINT, CC_BASE_DOMAIN: BASE_DOMAIN, ...options.env }
  if (configuredKey !== null) env.CC_GATEWAY_PUBLIC_KEY = configuredKey
  const h = await startApp(t, db, { env, deps: { ...options.deps, gateway: registry, now: options.clock?.now } })
  const rpc = new RpcService({
    db,
    tunnel: h.services.tunnel,
    ipam: h.services.ipam,
    registry,
    waitMs: options.waitMs ?? 1_500,
    reportIntervalMs: 5_000,
    pollMs: 20,
    now,
    logger: pino({ level: 'silent' }),
    certificates: options.certificates,
    usage: h.services.usage,
  })
  t.teardown(() => { rpc.close() })
  let server: RpcServer | null = null
  if (options.listen !== false) {
    server = await RpcServer.start({ service: rpc, secret: SECRET, host: '127.0.0.1', port: 0, logger: pino({ level: 'silent' }) })
    t.teardown(async () => { await server!.close(0) })
  }
  return {
    ...h,
    rpc,
    registry,
    server,
    clock: options.clock,
    async call (method, path, body, secret = SECRET) {
      if (server === null) throw new Error('no RPC listener')
      const headers: Record<string, string> = {}
      if (secret !== null) headers.authorization = `Bearer ${secret}`
      if (body !== undefined) headers['content-type'] = 'application/json'
      return await fetch(server.url + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
    },
  }
}

export function hello (publicKey: string, extra: Partial<GatewayHello> = {}): GatewayHello {
  return { protocol: RPC_PROTOCOL_VERSION, gatewayId: 'gw-test', publicKey, endpoint: 'gw1.example.test:41820', listenPort: 41820, ...extra }
}

export function report (peers: PeerReport[], extra: Partial<GatewayReport> = {}): GatewayReport {
  return { protocol: RPC_PROTOCOL_VERSION, gatewayId: 'gw-test', sentAt: new Date().toISOString(), full: true, peers, certificates: [], ...extra }
}

export function peerReport (publicKey: string, lastHandshakeAt: Date | null, extra: Partial<PeerReport> = {}): PeerReport {
  return { publicKey, lastHandshakeAt: lastHandshakeAt === null ? null : lastHandshakeAt.toISOString(), endpoint: '198.18.0.2:51820', rxBytes: 1000, txBytes: 2000, ...extra }
}

/** An instance made by createInstances, with the WireGuard key made for it. */
export interface FleetInstance { id: string, token: string, tunnelIp: string, key: string, body: any } // eslint-disable-line @typescript-eslint/no-explicit-any

/**
 * Creates `n` instances (ten per business-plan user), each with a fresh public key; with
 * `register`, the key is registered through POST /v1/tunnel/register.
 */
export async function createInstances (t: Test, h: TestApp, n: number, label: string, options: { register?: boolean } = {}): Promise<FleetInstance[]> {
  const out: FleetInstance[] = []
  let user = ''
  for (let i = 0; i < n; i++) {
    if (i % 10 === 0) user = (await newUser(h, `${label}${i}`)).token
    const inst = await mustCreate(t, h, user, `${label}-${i}`)
    const key = newPublicKey()
    if (options.register === true) {
      const res = await h.request('POST', '/v1/tunnel/register', { public_key: key }, bearer(inst.token))
      t.equal(res.status, 200, `register ${label}-${i}`)
    }
    out.push({ ...inst, key })
  }
  return out
}

export interface PlacementEntry { instance_id: string, primary_gateway: string, backup_gateway: string | null }

/** Every placement, by instance id. */
export async function placements (h: TestApp): Promise<Map<string, PlacementEntry>> {
  const rows = await h.services.db('placements').select('instance_id', 'primary_gateway', 'backup_gateway') as PlacementEntry[]
  return new Map(rows.map(r => [r.instance_id, r]))
}
