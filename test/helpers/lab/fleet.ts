/**
 * The fleet lab (test/e2e/fleet.test.ts, bench/fleet.ts): two `cloud-connect control` replicas and
 * three `cloud-connect gateway --control URL,URL` processes on one fresh Postgres database, all
 * started at the same moment, each in a namespace of its own behind a router namespace:
 *
 *   ns net (router; the clients' side: curl, wrk)
 *     | ctl: control x2 (API :8080/:8090, RPC :8081/:8091)
 *     | gw1, gw2, gw3: gateway (WireGuard :51820, HTTPS :8443, relay :8444)
 *     | ca: userspace agent + origin      | cb: wireguard-go (a [Peer] per placed gateway) + origin
 *
 * Containers are added by the caller (agentContainer, wireguardGoContainer).
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import type { Lab } from '../lab.ts'
import { runOk } from './process.ts'
import { REPO_ROOT } from './gateway.ts'
import type { LabProcess } from './process.ts'
import { ifName } from './netns.ts'
import {
  ApiClient, CLI, freshDatabase, logLine, PostgresRelay, serviceEnv, startControl, startGatewayProcess, startOrigin,
  type ControlProcess, type GatewayProcess,
} from './e2e.ts'

export const FLEET_BASE_DOMAIN = 'cc.test'
export const FLEET_HTTPS_PORT = 8443
export const FLEET_GATEWAY_IDS = ['gw-1', 'gw-2', 'gw-3']
const API_PORTS = [8080, 8090]
const RPC_PORTS = [8081, 8091]
const WG_PORT = 51820
const RELAY_PORT = 8444

/** One gateway placed for an instance, as `tunnel_config.peers` lists it. */
export interface FleetPeer { gateway_id: string, role: string, region: string | null, public_key: string, endpoint: string, allowed_ips: string, persistent_keepalive: number }

interface Teardown { teardown (fn: () => unknown): void }

export interface Fleet {
  net: string
  ctl: { ns: string, ip: string }
  gws: Array<{ ns: string, ip: string }>
  controls: ControlProcess[]
  gateways: GatewayProcess[]
  /** Every gateway's local CA in one file, for curl. */
  caBundle: string
  /** Control replica 1 and 2 as seen from `net`. */
  apis: ApiClient[]
  /** Replica 1's mail outbox (sign-ups go through replica 1). */
  outbox: string
  /** The address of gateway `id` (its WireGuard endpoint and HTTPS listener). */
  addressOf: (gatewayId: string) => string
  controlEnv: (i: number) => NodeJS.ProcessEnv
  gatewayEnv: (i: number) => NodeJS.ProcessEnv
  /** `--control` of every gateway: both replicas' RPC listeners. */
  controlUrls: string
  dir: string
}

/** Builds the namespaces and starts the two replicas and the three gateways together. */
export async function startFleet (lab: Lab, owner: Teardown, databaseUrl: string, extraControlEnv: Record<string, string> = {}): Promise<Fleet> {
  const net = await lab.namespace('net')
  await runOk('ip', ['netns', 'exec', net, 'sysctl', '-qw', 'net.ipv4.ip_forward=1'])
  const spoke = async (role: string): Promise<{ ns: string, ip: string }> => {
    const ns = await lab.namespace(role)
    const link = await lab.link(net, ns)
    await runOk('ip', ['-n', ns, 'route', 'add', 'default', 'via', link.a.ip])
    return { ns, ip: link.b.ip }
  }
  const ctl = await spoke('ctl')
  const gws = [await spoke('gw1'), await spoke('gw2'), await spoke('gw3')]

  const dir = mkdtempSync(join(tmpdir(), 'cc-fleet-'))
  owner.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const sub = (name: string): string => { const d = join(dir, name); mkdirSync(d, { mode: 0o700 }); return d }
  const controlDirs = [sub('control1'), sub('control2')]
  const gatewayDirs = FLEET_GATEWAY_IDS.map(id => sub(id))

  const database = await freshDatabase(owner, databaseUrl)
  const relay = await PostgresRelay.start(sub('pg'), Number(new URL(databaseUrl).port || 5432))
  owner.teardown(() => relay.close())
  // Replicas share every secret (README "Control replicas"): tokens one signs, the others accept.
  const secret = randomBytes(32).toString('base64url')
  const shared = Object.fromEntries(['CC_ACCESS_TOKEN_SECRET', 'CC_REFRESH_TOKEN_SECRET', 'CC_INSTANCE_TOKEN_SECRET', 'CC_CERT_STORE_KEY']
    .map(name => [name, randomBytes(32).toString('base64url')]))
  const controlEnv = (i: number): NodeJS.ProcessEnv => serviceEnv({
    DATABASE_URL: relay.urlFor(database),
    CC_DATA_DIR: controlDirs[i],
    CC_BASE_DOMAIN: FLEET_BASE_DOMAIN,
    CC_API_HOST: '0.0.0.0',
    CC_API_PORT: String(API_PORTS[i]),
    CC_PUBLIC_URL: `http://${ctl.ip}:${API_PORTS[0]}`,
    CC_RPC_HOST: '0.0.0.0',
    CC_RPC_PORT: String(RPC_PORTS[i]),
    CC_GATEWAY_SECRET: secret,
    ...shared,
    ...extraControlEnv,
  })
  const controlUrls = RPC_PORTS.map(p => `http://${ctl.ip}:${p}`).join(',')
  const gatewayEnv = (i: number): NodeJS.ProcessEnv => serviceEnv({
    CC_DATA_DIR: gatewayDirs[i],
    CC_GATEWAY_SECRET: secret,
    CC_GATEWAY_ID: FLEET_GATEWAY_IDS[i],
    CC_WG_HOST: '0.0.0.0',
    CC_WG_PORT: String(WG_PORT),
    CC_GATEWAY_ENDPOINT: `${gws[i].ip}:${WG_PORT}`,
    CC_RELAY_PORT: String(RELAY_PORT),
    CC_EDGE_HOST: '0.0.0.0',
    CC_HTTPS_PORT: String(FLEET_HTTPS_PORT),
    CC_HTTP_PORT: '8000',
    CC_METRICS_LISTEN: '127.0.0.1:9091',
  })

  // Everything at the same moment, on an empty database.
  const started = await Promise.all([
    startControl(lab, ctl.ns, controlEnv(0)),
    startControl(lab, ctl.ns, controlEnv(1)),
    ...gws.map(async (gw, i) => await startGatewayProcess(lab, gw.ns, controlUrls, gatewayEnv(i))),
  ])
  const gateways = started.slice(2) as GatewayProcess[]
  const cas = [...new Set(gateways.map(g => g.ca).filter((ca): ca is string => ca !== null))]
  const caBundle = join(dir, 'ca-bundle.pem')
  writeFileSync(caBundle, cas.map(p => readFileSync(p, 'utf8')).join('\n'))
  const addresses = new Map(FLEET_GATEWAY_IDS.map((id, i) => [id, gws[i].ip]))
  return {
    net,
    ctl,
    gws,
    controls: started.slice(0, 2) as ControlProcess[],
    gateways,
    caBundle,
    apis: API_PORTS.map(p => new ApiClient(lab, net, `http://${ctl.ip}:${p}`)),
    outbox: join(controlDirs[0], 'outbox'),
    addressOf: (id: string) => {
      const ip = addresses.get(id)
      if (ip === undefined) throw new Error(`no gateway ${id}`)
      return ip
    },
    controlEnv,
    gatewayEnv,
    controlUrls,
    dir,
  }
}

export interface AgentContainer {
  ns: string
  agent: LabProcess
  stateFile: string
  /** Kernel mode: the WireGuard interface and the wg-quick configuration the agent wrote. */
  kernel?: { iface: string, configPath: string }
}

let kernelInterfaces = 0

/**
 * A container running the agent with `token` in front of an origin serving `root`; resolves once
 * the agent says the tunnel is up. Userspace mode by default; `kernel`: wg-quick (over
 * wireguard-go where the kernel has no WireGuard), the origin reached on the tunnel address.
 */
export async function agentContainer (lab: Lab, fleet: Fleet, role: string, token: string, root: string, mode: 'userspace' | 'kernel' = 'userspace'): Promise<AgentContainer> {
  const ns = await lab.namespace(role)
  const link = await lab.link(fleet.net, ns)
  await runOk('ip', ['-n', ns, 'route', 'add', 'default', 'via', link.a.ip])
  await startOrigin(lab, ns, root, { keepaliveSeconds: 5 })
  const dir = join(fleet.dir, `agent-${role}`)
  mkdirSync(dir, { mode: 0o700 })
  const tokenFile = join(dir, 'token')
  writeFileSync(tokenFile, token, { mode: 0o600 })
  const stateFile = join(dir, 'agent.json')
  const iface = mode === 'kernel' ? ifName(lab.runId, 'k', kernelInterfaces++) : ''
  const modeArgs = mode === 'kernel' ? ['--mode', 'kernel', '--interface', iface, '--status-listen', 'off'] : ['--target', 'http://127.0.0.1:80']
  const agent = lab.spawn(ns, `agent ${role}`, process.execPath, [CLI, 'agent', 'run', '--api', `${fleet.apis[0].base.replace(/\/$/, '')}/v1`, '--token-file', tokenFile,
    '--state', stateFile, ...modeArgs], { cwd: REPO_ROOT, env: serviceEnv({ CC_AGENT_ALLOW_HTTP: '1' }) })
  await logLine(agent, 'tunnel up: the gateway answers', 60_000)
  return { ns, agent, stateFile, ...(mode === 'kernel' ? { kernel: { iface, configPath: join(dir, `${iface}.conf`) } } : {}) }
}

export interface WireguardGoContainer { ns: string, peers: FleetPeer[], reply: { tunnel_config: { interface: { address: string }, peer: Record<string, unknown>, peers: FleetPeer[] } } }

/**
 * A container with stock wireguard-go (what an Erugo image with wg-quick does): a key pair from
 * `wg genkey`, POST /v1/tunnel/register through replica `replica`, then one [Peer] per gateway in
 * `tunnel_config.peers`; an origin serving `root`.
 */
export async function wireguardGoContainer (lab: Lab, fleet: Fleet, role: string, token: string, root: string, replica = 1): Promise<WireguardGoContainer> {
  const ns = await lab.namespace(role)
  const link = await lab.link(fleet.net, ns)
  await runOk('ip', ['-n', ns, 'route', 'add', 'default', 'via', link.a.ip])
  await startOrigin(lab, ns, root, { keepaliveSeconds: 5 })
  const privateKey = (await lab.exec(ns, 'wg', ['genkey'])).stdout.trim()
  const publicKey = (await lab.exec(ns, 'wg', ['pubkey'], { input: `${privateKey}\n` })).stdout.trim()
  const api = new ApiClient(lab, ns, fleet.apis[replica].base)
  const reply = await api.ok('POST', '/v1/tunnel/register', 200, { body: { public_key: publicKey }, token })
  const peers = reply.tunnel_config.peers as FleetPeer[]
  await lab.startWireguardGo(ns, {
    address: reply.tunnel_config.interface.address,
    privateKey,
    listenPort: WG_PORT,
    peers: peers.map(p => ({ publicKey: p.public_key, endpoint: p.endpoint, allowedIPs: [p.allowed_ips], persistentKeepalive: p.persistent_keepalive })),
  })
  return { ns, peers, reply }
}
