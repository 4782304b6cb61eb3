/**
 * Kernel mode, for containers with NET_ADMIN (spec "Flow 2", steps 6-7): the API's tunnel_config
 * becomes a wg-quick configuration (mode 0600, beside the state file) brought up with the system's
 * WireGuard tools. Where the kernel module is missing, wg-quick itself falls back to wireguard-go
 * (WG_QUICK_USERSPACE_IMPLEMENTATION, default wireguard-go). Traffic then reaches the container's
 * own web server through the kernel's TCP stack; the agent only watches and heartbeats.
 *
 * Probes are `ping -I <interface> <gateway tunnel address>`; handshake and byte counts come from
 * `wg show <interface> dump`.
 *
 * Each gateway placed for the instance is one `[Peer]`, its AllowedIPs that gateway's own
 * address/32 (wg-quick routes each /32 into the interface). A new set of gateways for the same
 * address is applied with `wg syncconf` (peers that stay keep their sessions) and a route per
 * added or removed gateway; a new address brings the interface down and up again.
 */
import { execFile } from 'node:child_process'
import { rmSync, writeFileSync, chmodSync, mkdirSync, existsSync, accessSync, renameSync, constants } from 'node:fs'
import { dirname, join } from 'node:path'
import type { Logger } from 'pino'
import { encodeKey } from '../proto/noise/keys.ts'
import { formatIPv4 } from '../proto/wire/ipv4.ts'
import { formatHostPort } from '../proto/net/address.ts'
import { checkPlan, formatEndpoint, type CheckedTunnelConfig } from './tunnel-config.ts'
import { combinedHealth, planGateways, samePlan, TunnelUnavailableError, type GatewayHealth, type Tunnel, type TunnelHealth, type TunnelPlan } from './tunnel.ts'

export interface CommandResult { code: number, stdout: string, stderr: string }
export type CommandRunner = (cmd: string, args: string[], env?: NodeJS.ProcessEnv, timeoutMs?: number) => Promise<CommandResult>

export interface KernelTunnelOptions {
  privateKey: Buffer
  interfaceName: string
  /** The configuration file goes beside it: `<dir>/<interface>.conf`. */
  stateFile: string
  logger: Logger
  run?: CommandRunner
}

/**
 * The wg-quick configuration for a plan (wg-quick(8) format). wg-quick runs `PostUp` and friends as
 * root, so every value is parsed again and formatted here from typed values (a line break in any
 * of them would add a line): TunnelConfigError before anything is written.
 */
export function wgQuickConfig (privateKey: Buffer, plan: TunnelPlan): string {
  const checked = checkPlan(plan)
  return [
    '# Written by cloud-connect agent (kernel mode) from POST /tunnel/register; rewritten on every registration.',
    '[Interface]',
    `PrivateKey = ${encodeKey(privateKey)}`,
    `Address = ${formatIPv4(checked.tunnelIp)}/32`,
    ...peerSections(checked),
  ].join('\n') + '\n'
}

/** The same peers in wg(8) `setconf` form (no wg-quick keys): what `wg syncconf` reads. */
export function wgSyncConfig (privateKey: Buffer, plan: TunnelPlan): string {
  const checked = checkPlan(plan)
  return ['[Interface]', `PrivateKey = ${encodeKey(privateKey)}`, ...peerSections(checked)].join('\n') + '\n'
}

function peerSections (checked: CheckedTunnelConfig): string[] {
  const lines: string[] = []
  for (const gateway of checked.gateways) {
    lines.push(
      '',
      '[Peer]',
      `PublicKey = ${encodeKey(gateway.peerPublicKey)}`,
      `Endpoint = ${formatEndpoint(gateway.endpoint)}`,
      // Spec "Container Side" 4: the tunnel routes only to the cloud (each gateway's own address).
      `AllowedIPs = ${formatIPv4(gateway.gatewayIp)}/32`,
    )
    if (gateway.persistentKeepalive > 0) lines.push(`PersistentKeepalive = ${String(gateway.persistentKeepalive)}`)
  }
  return lines
}

/** Temporary file (0600, created exclusively) and rename: wg-quick never reads half a file. */
function writeConfigAtomically (path: string, text: string): void {
  const temporary = `${path}.${process.pid}.tmp`
  rmSync(temporary, { force: true })
  try {
    writeFileSync(temporary, text, { mode: 0o600, flag: 'wx' })
    chmodSync(temporary, 0o600)
    renameSync(temporary, path)
  } catch (err) {
    rmSync(temporary, { force: true })
    throw err
  }
}

const defaultRun: CommandRunner = async (cmd, args, env, timeoutMs = 30_000) => await new Promise(resolve => {
  execFile(cmd, args, { env: env ?? process.env, timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
    const code = err === null ? 0 : typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : 127
    resolve({ code, stdout, stderr: err !== null && stderr === '' ? err.message : stderr })
  })
})

const REQUIRED_TOOLS = ['wg-quick', 'wg', 'ip', 'ping']

/** True when `tool` is an executable in a directory of PATH. */
export function onPath (tool: string): boolean {
  for (const dir of (process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin').split(':')) {
    try {
      accessSync(join(dir, tool), constants.X_OK)
      return true
    } catch { /* next */ }
  }
  return false
}

export class KernelTunnel implements Tunnel {
  readonly mode = 'kernel' as const
  readonly configPath: string
  private readonly options: KernelTunnelOptions
  private readonly run: CommandRunner
  private readonly logger: Logger
  private plan: TunnelPlan | null = null
  private up = false
  /** Per gateway public key, from the last `wg show dump`. */
  private peerHealth = new Map<string, TunnelHealth>()

  constructor (options: KernelTunnelOptions) {
    this.options = options
    this.run = options.run ?? defaultRun
    this.logger = options.logger
    this.configPath = join(dirname(options.stateFile), `${options.interfaceName}.conf`)
  }

  get interfaceName (): string {
    return this.options.interfaceName
  }

  async apply (plan: TunnelPlan): Promise<void> {
    if (this.up && samePlan(this.plan, plan)) return
    if (this.options.run === undefined) {
      const missing = REQUIRED_TOOLS.filter(t => !onPath(t))
      if (missing.length > 0) throw new TunnelUnavailableError(`kernel mode needs ${missing.join(', ')} (apk add wireguard-tools iproute2 iputils, or use --mode userspace)`)
    }
    // Checked and formatted before the file is touched: a refused plan writes nothing.
    const config = wgQuickConfig(this.options.privateKey, plan)
    const syncConfig = wgSyncConfig(this.options.privateKey, plan)
    const dir = dirname(this.configPath)
    if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 })
    writeConfigAtomically(this.configPath, config)
    if (this.up && this.plan !== null && onlyMembershipChanged(this.plan, plan) && await this.sync(this.plan, plan, syncConfig)) return
    // A new plan, or an interface left behind by a crash: start from nothing.
    await this.down(true)
    const result = await this.run('wg-quick', ['up', this.configPath], this.env())
    if (result.code !== 0) {
      const text = result.stderr.trim()
      if (/Operation not permitted|permission denied|RTNETLINK answers: Operation not permitted/i.test(text)) {
        throw new TunnelUnavailableError('kernel mode needs NET_ADMIN (docker: cap_add: [NET_ADMIN] and devices: [/dev/net/tun]); or use --mode userspace')
      }
      if (/Unknown device type|Protocol not supported|not supported/i.test(text) && !onPath('wireguard-go')) {
        throw new TunnelUnavailableError(`no WireGuard kernel module and no wireguard-go: ${lastLine(text)}`)
      }
      throw new Error(`wg-quick up failed: ${lastLine(text)}`)
    }
    this.up = true
    this.plan = plan
    this.logger.info({ interface: this.interfaceName, address: plan.addressCidr, endpoint: formatHostPort(plan.endpointHost, plan.endpointPort) }, 'WireGuard interface up')
  }

  /**
   * The same address, another set of gateways: `wg syncconf` adds and removes peers and leaves the
   * unchanged ones (and their sessions) alone; routes follow the gateways' addresses. False when
   * it did not work (then the caller starts from nothing).
   */
  private async sync (before: TunnelPlan, after: TunnelPlan, syncConfig: string): Promise<boolean> {
    const syncPath = `${this.configPath}.sync`
    writeConfigAtomically(syncPath, syncConfig)
    try {
      const result = await this.run('wg', ['syncconf', this.interfaceName, syncPath])
      if (result.code !== 0) {
        this.logger.warn({ error: lastLine(result.stderr) }, 'wg syncconf failed; bringing the interface up again')
        return false
      }
    } finally {
      rmSync(syncPath, { force: true })
    }
    const old = new Set(planGateways(before).map(g => g.allowedIps))
    const now = new Set(planGateways(after).map(g => g.allowedIps))
    for (const prefix of now) {
      if (old.has(prefix)) continue
      const result = await this.run('ip', ['-4', 'route', 'replace', prefix, 'dev', this.interfaceName])
      if (result.code !== 0) {
        this.logger.warn({ error: lastLine(result.stderr), prefix }, 'cannot route a new gateway\'s address; bringing the interface up again')
        return false
      }
    }
    // A vanished gateway's route may already be gone with its peer: nothing to report.
    for (const prefix of old) if (!now.has(prefix)) await this.run('ip', ['-4', 'route', 'del', prefix, 'dev', this.interfaceName])
    for (const key of this.peerHealth.keys()) if (!planGateways(after).some(g => g.peerPublicKey === key)) this.peerHealth.delete(key)
    this.plan = after
    this.logger.info({ interface: this.interfaceName, gateways: planGateways(after).map(g => g.gatewayId ?? g.peerPublicKey) }, 'WireGuard peers synced')
    return true
  }

  async reconnect (gatewayPublicKey?: string): Promise<void> {
    const plan = this.plan
    if (!this.up || plan === null) return
    // wg resolves the name again; the kernel (or wireguard-go) handshakes on the next packet.
    const checked = checkPlan(plan)
    for (const gateway of checked.gateways) {
      const key = encodeKey(gateway.peerPublicKey)
      if (gatewayPublicKey !== undefined && key !== gatewayPublicKey) continue
      const result = await this.run('wg', ['set', this.interfaceName, 'peer', key, 'endpoint', formatEndpoint(gateway.endpoint)])
      if (result.code !== 0) throw new Error(`wg set failed: ${lastLine(result.stderr)}`)
    }
  }

  async probe (timeoutMs: number, gatewayAddress?: string): Promise<number | null> {
    const plan = this.plan
    if (!this.up || plan === null) return null
    const addresses = gatewayAddress === undefined ? planGateways(plan).map(g => g.gatewayAddress) : [gatewayAddress]
    const rtts = await Promise.all(addresses.map(async address => await this.ping(address, timeoutMs)))
    await this.refreshHealth()
    const answered = rtts.filter(r => r !== null)
    return answered.length === 0 ? null : Math.min(...answered)
  }

  private async ping (address: string, timeoutMs: number): Promise<number | null> {
    const seconds = Math.max(1, Math.round(timeoutMs / 1000))
    const ping = await this.run('ping', ['-n', '-c', '1', '-W', String(seconds), '-I', this.interfaceName, address], undefined, timeoutMs + 2_000)
    if (ping.code !== 0) return null
    const m = /time[=<]([\d.]+)\s*ms/.exec(ping.stdout)
    return m === null ? 0 : Number(m[1])
  }

  health (): TunnelHealth {
    return combinedHealth(this.gateways())
  }

  gateways (): GatewayHealth[] {
    if (this.plan === null) return []
    return planGateways(this.plan).map(g => ({
      gatewayId: g.gatewayId,
      role: g.role,
      region: g.region,
      publicKey: g.peerPublicKey,
      gatewayAddress: g.gatewayAddress,
      configuredEndpoint: formatHostPort(g.endpointHost, g.endpointPort),
      transport: 'udp' as const, // wg-quick speaks UDP only
      ...(this.peerHealth.get(g.peerPublicKey) ?? { lastHandshakeAt: null, lastReceiveAt: null, endpoint: null, rxBytes: 0, txBytes: 0 }),
    }))
  }

  async close (): Promise<void> {
    await this.down(false)
    this.plan = null
    this.peerHealth.clear()
    rmSync(this.configPath, { force: true })
  }

  private async down (quiet: boolean): Promise<void> {
    const exists = await this.run('ip', ['link', 'show', 'dev', this.interfaceName])
    if (exists.code !== 0) {
      this.up = false
      return
    }
    const result = await this.run('wg-quick', ['down', this.configPath], this.env())
    if (result.code !== 0) {
      // Not ours to parse any further: remove the link directly (wireguard-go exits with it).
      await this.run('ip', ['link', 'delete', 'dev', this.interfaceName])
      if (!quiet) this.logger.warn({ error: lastLine(result.stderr) }, 'wg-quick down failed; link deleted')
    }
    this.up = false
    if (!quiet) this.logger.info({ interface: this.interfaceName }, 'WireGuard interface down')
  }

  /** `wg show <if> dump`, a line per peer: key psk endpoint allowed-ips latest-handshake rx tx keepalive. */
  private async refreshHealth (): Promise<void> {
    const dump = await this.run('wg', ['show', this.interfaceName, 'dump'])
    if (dump.code !== 0) return
    for (const peerLine of dump.stdout.trim().split('\n').slice(1)) {
      const f = peerLine.split('\t')
      if (f.length < 7) continue
      const handshake = Number(f[4])
      const rx = Number(f[5])
      const previous = this.peerHealth.get(f[0])
      this.peerHealth.set(f[0], {
        lastHandshakeAt: handshake > 0 ? handshake * 1000 : null,
        lastReceiveAt: rx > (previous?.rxBytes ?? 0) ? Date.now() : previous?.lastReceiveAt ?? null,
        endpoint: f[2] === '(none)' ? null : f[2],
        rxBytes: rx,
        txBytes: Number(f[6]),
      })
    }
  }

  private env (): NodeJS.ProcessEnv {
    return { ...process.env, WG_QUICK_USERSPACE_IMPLEMENTATION: process.env.WG_QUICK_USERSPACE_IMPLEMENTATION ?? 'wireguard-go' }
  }
}

/**
 * The same address, and every gateway in both plans configured the same: gateways only came or
 * went (a re-placement), which `wg syncconf` applies in place. Anything else starts from nothing.
 */
function onlyMembershipChanged (before: TunnelPlan, after: TunnelPlan): boolean {
  if (before.address !== after.address) return false
  const old = new Map(planGateways(before).map(g => [g.peerPublicKey, g]))
  return planGateways(after).every(g => {
    const was = old.get(g.peerPublicKey)
    return was === undefined || (was.allowedIps === g.allowedIps && was.endpointHost === g.endpointHost && was.endpointPort === g.endpointPort && was.persistentKeepalive === g.persistentKeepalive)
  })
}

function lastLine (text: string): string {
  const lines = text.trim().split('\n').filter(l => l.trim() !== '')
  return lines[lines.length - 1] ?? 'no output'
}
