/**
 * Network namespaces and veth pairs for the lab, plus the sweeper for labs left by crashed runs.
 *
 * Names: every namespace of one lab is `cc<runId>-<role>` with an 8-hex-digit run id, and the lab
 * writes `/run/cc-lab/<runId>.pid` (its process id) before creating any of them. The sweeper only
 * removes namespaces of that shape whose owner process is gone (or, with no owner file, whose
 * namespace is older than a minute), so concurrent runs never remove each other's.
 *
 * Both ends of every veth pair are created directly inside lab namespaces: the host namespace
 * never gets a lab address or route.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, unlinkSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { run, runOk } from './process.ts'

export const NETNS_DIR = '/run/netns'
export const STATE_DIR = '/run/cc-lab'
export const WG_SOCKET_DIR = '/var/run/wireguard'
/** `ip netns exec NAME` bind-mounts files of /etc/netns/NAME/ over /etc/ (hosts, resolv.conf). */
export const NETNS_ETC_DIR = '/etc/netns'
const NAME_RE = /^cc([0-9a-f]{8})-[a-z0-9]+$/
const IFNAME_RE = /^cc([0-9a-f]{8})[a-z][0-9a-z]*$/

export function newRunId (): string {
  return randomBytes(4).toString('hex')
}

export function netnsName (runId: string, role: string): string {
  if (!/^[a-z0-9]{1,12}$/.test(role)) throw new Error(`namespace role must be 1-12 of [a-z0-9]: ${role}`)
  return `cc${runId}-${role}`
}

/** Interface names are global per run (the wireguard-go socket path is shared by all namespaces). */
export function ifName (runId: string, kind: string, n: number): string {
  const name = `cc${runId}${kind}${n}`
  if (name.length > 15) throw new Error(`interface name too long: ${name}`)
  return name
}

export function claimRun (runId: string): void {
  mkdirSync(STATE_DIR, { recursive: true })
  writeFileSync(`${STATE_DIR}/${runId}.pid`, `${process.pid}\n`)
}

export function releaseRun (runId: string): void {
  rmSync(`${STATE_DIR}/${runId}.pid`, { force: true })
}

export async function addNetns (name: string): Promise<void> {
  await runOk('ip', ['netns', 'add', name])
  await runOk('ip', ['-n', name, 'link', 'set', 'lo', 'up'])
}

/** Gives the namespace its own /etc/hosts (seen by processes started with `ip netns exec`). */
export function writeNetnsHosts (name: string, entries: Record<string, string>): void {
  const dir = `${NETNS_ETC_DIR}/${name}`
  mkdirSync(dir, { recursive: true })
  const lines = ['127.0.0.1 localhost', '::1 localhost', ...Object.entries(entries).map(([host, ip]) => `${ip} ${host}`)]
  writeFileSync(`${dir}/hosts`, lines.join('\n') + '\n')
}

function removeNetnsEtc (name: string): void {
  rmSync(`${NETNS_ETC_DIR}/${name}`, { recursive: true, force: true })
}

/** `ip netns exec NAME cmd args...` as an argv for spawn. */
export function inNetns (name: string, cmd: string, args: string[]): [string, string[]] {
  return ['ip', ['netns', 'exec', name, cmd, ...args]]
}

/** Is a socket bound to `port` inside `ns`? (`ss` reads the namespace's own socket table; TCP: listening.) */
export async function portBound (ns: string, protocol: 'tcp' | 'udp', port: number): Promise<boolean> {
  const r = await run('ip', ['netns', 'exec', ns, 'ss', '-H', '-n', protocol === 'tcp' ? '-tl' : '-ua', `sport = :${port}`], { timeoutMs: 5000 })
  return r.code === 0 && r.stdout.trim() !== ''
}

export async function netnsPids (name: string): Promise<number[]> {
  const r = await run('ip', ['netns', 'pids', name], { timeoutMs: 5000 })
  return r.stdout.split(/\s+/).filter(Boolean).map(Number)
}

function signalAll (pids: number[], signal: NodeJS.Signals): void {
  for (const pid of pids) {
    try { process.kill(pid, signal) } catch { /* already gone */ }
  }
}

/** Stops whatever still runs inside the namespace (TERM, then KILL), then deletes it. */
export async function deleteNetns (name: string): Promise<void> {
  removeNetnsEtc(name)
  if (!existsSync(`${NETNS_DIR}/${name}`)) return
  for (let i = 0; i < 40; i++) {
    const pids = await netnsPids(name)
    if (pids.length === 0) break
    signalAll(pids, i < 10 ? 'SIGTERM' : 'SIGKILL')
    await sleep(100)
  }
  const r = await run('ip', ['netns', 'del', name], { timeoutMs: 10_000 })
  if (r.code !== 0 && existsSync(`${NETNS_DIR}/${name}`)) throw new Error(`ip netns del ${name}: ${r.stderr.trim()}`)
}

function sleepSync (ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
}

/** The same for exit hooks, where nothing asynchronous runs any more. */
export function deleteNetnsSync (name: string): void {
  removeNetnsEtc(name)
  if (!existsSync(`${NETNS_DIR}/${name}`)) return
  for (let i = 0; i < 30; i++) {
    let pids: number[] = []
    try {
      pids = execFileSync('ip', ['netns', 'pids', name], { encoding: 'utf8', timeout: 5000 }).split(/\s+/).filter(Boolean).map(Number)
    } catch { /* namespace already gone */ }
    if (pids.length === 0) break
    signalAll(pids, 'SIGKILL')
    sleepSync(50)
  }
  try { execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore', timeout: 10_000 }) } catch { /* best effort at exit */ }
}

export interface VethEnd { ns: string; ifname: string; ip: string; cidr: string; ip6?: string }

/**
 * A veth pair between two lab namespaces, addressed 198.18.x.y/30 (RFC 2544 benchmarking range):
 * link n (0..16383) gets 198.18.0.0/15 subnet n, `.1` on side a and `.2` on side b.
 */
export async function addVeth (nsA: string, ifA: string, nsB: string, ifB: string, n: number): Promise<[VethEnd, VethEnd]> {
  if (!Number.isInteger(n) || n < 0 || n >= 16384) throw new Error(`link number out of range: ${n}`)
  const base = (198 << 24 | 18 << 16) + n * 4
  const addr = (host: number): string => {
    const v = base + host
    return [v >>> 24, (v >>> 16) & 255, (v >>> 8) & 255, v & 255].join('.')
  }
  await runOk('ip', ['link', 'add', ifA, 'netns', nsA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB])
  const a: VethEnd = { ns: nsA, ifname: ifA, ip: addr(1), cidr: `${addr(1)}/30` }
  const b: VethEnd = { ns: nsB, ifname: ifB, ip: addr(2), cidr: `${addr(2)}/30` }
  for (const end of [a, b]) {
    await runOk('ip', ['-n', end.ns, 'addr', 'add', end.cidr, 'dev', end.ifname])
    await runOk('ip', ['-n', end.ns, 'link', 'set', end.ifname, 'up'])
  }
  return [a, b]
}

/**
 * Gives both ends of link n an IPv6 ULA address (RFC 4193) as well: fd00:198:18:<n>::1/64 on side
 * a, ::2 on side b, without duplicate address detection (nodad) so they are usable at once.
 */
export async function addVethIpv6 (a: VethEnd, b: VethEnd, n: number): Promise<void> {
  if (!Number.isInteger(n) || n < 0 || n >= 65536) throw new Error(`link number out of range: ${n}`)
  // Written as the kernel and node print them (RFC 5952: no zero group before ::).
  const prefix = n === 0 ? 'fd00:198:18:' : `fd00:198:18:${n.toString(16)}:`
  a.ip6 = `${prefix}:1`
  b.ip6 = `${prefix}:2`
  for (const end of [a, b]) await runOk('ip', ['-n', end.ns, '-6', 'addr', 'add', `${end.ip6!}/64`, 'dev', end.ifname, 'nodad'])
}

function ownerAlive (runId: string): boolean | null {
  let text: string
  try { text = readFileSync(`${STATE_DIR}/${runId}.pid`, 'utf8') } catch { return null }
  const pid = Number(text.trim())
  if (!Number.isInteger(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'
  }
}

function isStale (runId: string, createdMs: number, now: number): boolean {
  const alive = ownerAlive(runId)
  return alive === false || (alive === null && now - createdMs > 60_000)
}

/**
 * Removes namespaces (and their /etc/netns files), wireguard-go sockets and owner files left by lab
 * runs whose process is gone.
 * Returns the names of the namespaces it removed. Safe to run while other labs are running.
 */
export async function sweepStaleLabs (): Promise<string[]> {
  const now = Date.now()
  const removed: string[] = []
  const staleRuns = new Set<string>()
  let names: string[] = []
  try { names = readdirSync(NETNS_DIR) } catch { /* no namespaces at all */ }
  for (const name of names.slice(0, 10_000)) {
    const m = NAME_RE.exec(name)
    if (m === null) continue
    let created = now
    try { created = statSync(`${NETNS_DIR}/${name}`).mtimeMs } catch { continue }
    if (!isStale(m[1], created, now)) continue
    staleRuns.add(m[1])
    await deleteNetns(name)
    removed.push(name)
  }
  let etcDirs: string[] = []
  try { etcDirs = readdirSync(NETNS_ETC_DIR) } catch { /* none */ }
  for (const name of etcDirs.slice(0, 10_000)) {
    const m = NAME_RE.exec(name)
    if (m === null || existsSync(`${NETNS_DIR}/${name}`)) continue
    let created = now
    try { created = statSync(`${NETNS_ETC_DIR}/${name}`).mtimeMs } catch { continue }
    if (staleRuns.has(m[1]) || isStale(m[1], created, now)) removeNetnsEtc(name)
  }
  let sockets: string[] = []
  try { sockets = readdirSync(WG_SOCKET_DIR) } catch { /* none */ }
  for (const file of sockets.slice(0, 10_000)) {
    const m = IFNAME_RE.exec(file.replace(/\.(sock|name)$/, ''))
    if (m === null) continue
    let created = now
    try { created = statSync(`${WG_SOCKET_DIR}/${file}`).mtimeMs } catch { continue }
    if (staleRuns.has(m[1]) || isStale(m[1], created, now)) {
      try { unlinkSync(`${WG_SOCKET_DIR}/${file}`) } catch { /* raced with its owner */ }
    }
  }
  let owners: string[] = []
  try { owners = readdirSync(STATE_DIR) } catch { /* none */ }
  for (const file of owners.slice(0, 10_000)) {
    const m = /^([0-9a-f]{8})\.pid$/.exec(file)
    if (m !== null && ownerAlive(m[1]) === false) rmSync(`${STATE_DIR}/${file}`, { force: true })
  }
  return removed
}
