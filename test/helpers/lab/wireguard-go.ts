/**
 * A real WireGuard peer: Debian's wireguard-go (userspace, TUN) configured with wireguard-tools,
 * running inside a lab namespace with the Linux TCP/IP stack behind it.
 */
import { existsSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { LabProcess, runOk, StopWaiting, waitUntil } from './process.ts'
import { inNetns, WG_SOCKET_DIR } from './netns.ts'

export interface WgPeerConfig {
  publicKey: string
  allowedIPs: string[]
  /** host:port */
  endpoint?: string
  /** seconds, as in wg(8) */
  persistentKeepalive?: number
  presharedKey?: string
}

export interface WireguardGoOptions {
  /** Tunnel address with prefix, e.g. 10.100.0.2/32. */
  address: string
  listenPort?: number
  /** Generated with `wg genkey` when absent. */
  privateKey?: string
  peers?: WgPeerConfig[]
  mtu?: number
}

export interface WgDumpPeer {
  publicKey: string
  presharedKey: string | null
  endpoint: string | null
  allowedIPs: string[]
  /** Unix seconds of the last handshake, 0 if none. */
  latestHandshake: number
  rxBytes: number
  txBytes: number
  persistentKeepalive: number | null
}

export interface WgDump {
  privateKey: string
  publicKey: string
  listenPort: number
  peers: WgDumpPeer[]
}

export async function wgGenKey (): Promise<string> {
  return (await runOk('wg', ['genkey'])).trim()
}

export async function wgPubKey (privateKey: string): Promise<string> {
  return (await runOk('wg', ['pubkey'], { input: privateKey + '\n' })).trim()
}

/** Parses `wg show IF dump` (tab-separated, wg(8) "dump" format). */
export function parseWgDump (text: string): WgDump {
  const lines = text.trim().split('\n').map(l => l.split('\t'))
  const [iface, ...peers] = lines
  if (iface === undefined || iface.length < 4) throw new Error(`unexpected wg dump: ${text.slice(0, 200)}`)
  const none = (v: string): string | null => (v === '(none)' || v === 'off' ? null : v)
  return {
    privateKey: iface[0],
    publicKey: iface[1],
    listenPort: Number(iface[2]),
    peers: peers.filter(p => p.length >= 8).map(p => ({
      publicKey: p[0],
      presharedKey: none(p[1]),
      endpoint: none(p[2]),
      allowedIPs: p[3] === '(none)' ? [] : p[3].split(','),
      latestHandshake: Number(p[4]),
      rxBytes: Number(p[5]),
      txBytes: Number(p[6]),
      persistentKeepalive: p[7] === 'off' ? null : Number(p[7]),
    })),
  }
}

function peerSection (p: WgPeerConfig): string {
  const lines = ['[Peer]', `PublicKey = ${p.publicKey}`, `AllowedIPs = ${p.allowedIPs.join(', ')}`]
  if (p.endpoint !== undefined) lines.push(`Endpoint = ${p.endpoint}`)
  if (p.persistentKeepalive !== undefined) lines.push(`PersistentKeepalive = ${p.persistentKeepalive}`)
  if (p.presharedKey !== undefined) lines.push(`PresharedKey = ${p.presharedKey}`)
  return lines.join('\n')
}

export class WireguardGo {
  readonly ns: string
  readonly ifname: string
  readonly address: string
  readonly privateKey: string
  readonly publicKey: string
  readonly listenPort: number
  readonly process: LabProcess

  private constructor (ns: string, ifname: string, address: string, privateKey: string, publicKey: string, listenPort: number, proc: LabProcess) {
    this.ns = ns; this.ifname = ifname; this.address = address
    this.privateKey = privateKey; this.publicKey = publicKey; this.listenPort = listenPort
    this.process = proc
  }

  /** The tunnel address without prefix length. */
  get tunnelIp (): string { return this.address.split('/')[0] }

  /**
   * Starts `wireguard-go -f IFNAME` in `ns`, applies the configuration with `wg setconf`, adds the
   * address, brings the link up and routes every peer's allowed IPs into the tunnel.
   * `track` receives the process at once so the lab can stop it even if configuration fails.
   */
  static async start (ns: string, ifname: string, dir: string, opts: WireguardGoOptions, track: (p: LabProcess) => void): Promise<WireguardGo> {
    const privateKey = opts.privateKey ?? await wgGenKey()
    const publicKey = await wgPubKey(privateKey)
    const listenPort = opts.listenPort ?? 51820
    const [cmd, args] = inNetns(ns, 'wireguard-go', ['-f', ifname])
    const proc = new LabProcess(`wireguard-go ${ifname}`, cmd, args, { env: { ...process.env, LOG_LEVEL: 'debug' } })
    track(proc)
    const socket = join(WG_SOCKET_DIR, `${ifname}.sock`)
    await waitUntil(`${socket}`, () => {
      if (!proc.running) throw new StopWaiting(`wireguard-go exited: ${proc.output().slice(-2000)}`)
      return existsSync(socket)
    }, 10_000, 50)
    const conf = join(dir, `${ifname}.conf`)
    const sections = [['[Interface]', `PrivateKey = ${privateKey}`, `ListenPort = ${listenPort}`].join('\n'), ...(opts.peers ?? []).map(peerSection)]
    writeFileSync(conf, sections.join('\n\n') + '\n', { mode: 0o600 })
    const wg = new WireguardGo(ns, ifname, opts.address, privateKey, publicKey, listenPort, proc)
    await wg.exec('wg', ['setconf', ifname, conf])
    await wg.exec('ip', ['addr', 'add', opts.address, 'dev', ifname])
    await wg.exec('ip', ['link', 'set', ifname, 'mtu', String(opts.mtu ?? 1420), 'up'])
    for (const p of opts.peers ?? []) await wg.routeAllowedIPs(p.allowedIPs)
    return wg
  }

  private async exec (cmd: string, args: string[]): Promise<string> {
    const [c, a] = inNetns(this.ns, cmd, args)
    return runOk(c, a, { timeoutMs: 10_000 })
  }

  private async routeAllowedIPs (prefixes: string[]): Promise<void> {
    for (const prefix of prefixes) await this.exec('ip', ['route', 'replace', prefix, 'dev', this.ifname])
  }

  /** `wg set IF peer KEY ...`: adds or updates one peer (and routes its allowed IPs). */
  async setPeer (p: WgPeerConfig): Promise<void> {
    const args = ['set', this.ifname, 'peer', p.publicKey, 'allowed-ips', p.allowedIPs.join(',')]
    if (p.endpoint !== undefined) args.push('endpoint', p.endpoint)
    if (p.persistentKeepalive !== undefined) args.push('persistent-keepalive', String(p.persistentKeepalive))
    await this.exec('wg', args)
    await this.routeAllowedIPs(p.allowedIPs)
  }

  async removePeer (publicKey: string): Promise<void> {
    await this.exec('wg', ['set', this.ifname, 'peer', publicKey, 'remove'])
  }

  async dump (): Promise<WgDump> {
    return parseWgDump(await this.exec('wg', ['show', this.ifname, 'dump']))
  }

  /** The dump line of one peer (throws if the peer is not configured). */
  async peer (publicKey: string): Promise<WgDumpPeer> {
    const p = (await this.dump()).peers.find(x => x.publicKey === publicKey)
    if (p === undefined) throw new Error(`${this.ifname} has no peer ${publicKey}`)
    return p
  }

  async stop (): Promise<void> {
    await this.process.stop()
    // A SIGKILLed wireguard-go leaves its socket behind; the path is shared by every namespace.
    rmSync(join(WG_SOCKET_DIR, `${this.ifname}.sock`), { force: true })
  }
}
