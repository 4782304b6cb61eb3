/**
 * The relay's own cost, on loopback, without the fleet lab: an origin and the holder's Edge in one
 * process, the relaying Edge (stream or passthrough mode) in another, curl as the client. Rounds
 * alternate direct (curl -> holder) and relayed (curl -> relaying edge -> holder), one download of
 * --size-mb each; reports MB/s and the CPU seconds per 100 MB of each process. With --cpu-prof
 * each process writes a V8 CPU profile into --prof-dir (open it in Chrome DevTools, or read the
 * top self times this script prints).
 *
 *   node bin/run-ts.js bench/relay-loopback.ts [--size-mb 100] [--rounds 3] [--mode stream] [--http1.1] [--small-seconds 0] [--cpu-prof] [--prof-dir DIR]
 *
 * Bounded: every transfer has a 120 s limit and h2load one of --small-seconds + 30 s; both child
 * processes end with the script.
 */
import { fork, spawn, type ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import http from 'node:http'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { loadOrCreateRelayIdentity, type Route } from '../gateway/edge/index.ts'
import { benchDataDir, startLoopbackEdge } from './baseline/edge.ts'
import type { FleetGateway } from '../proto/rpc/index.ts'
import { RELAY_MODES, type RelayMode } from '../gateway/edge/options.ts'
import { UsageError, numberSetting, parseBenchArgs } from './baseline/cli.ts'
import { cpuSeconds } from './baseline/proc.ts'
import { sendRepeated } from './baseline/send.ts'

const HOST = 'files.example.test'
const SELF = fileURLToPath(import.meta.url)

interface Ready { https: number, relayUrl: string, fingerprint: string, ca: string }

/** Child: the holder (origin + Edge with a live session) or the relaying Edge. */
async function child (role: string, sizeBytes: number, mode: RelayMode): Promise<void> {
  const dataDir = benchDataDir(`relay-${role}`)
  const identity = await loadOrCreateRelayIdentity(dataDir)
  const chunk = Buffer.alloc(256 * 1024, 7)
  let originPort = 0
  if (role === 'holder') {
    const small = Buffer.alloc(1024, 7)
    const origin = http.createServer((req, res) => {
      if (req.url === '/small') { res.writeHead(200, { 'content-length': String(small.length) }); res.end(small); return }
      res.writeHead(200, { 'content-length': String(sizeBytes), 'content-type': 'application/octet-stream' })
      sendRepeated(res, chunk, sizeBytes)
    })
    await new Promise<void>(resolve => origin.listen(0, '127.0.0.1', resolve))
    originPort = (origin.address() as { port: number }).port
  }
  const holder = role === 'holder'
  const routes: Route[] = holder
    ? [{ instanceId: 'inst', tunnelIp: '127.0.0.1', port: originPort, hostnames: [HOST], relayVia: ['gw-a'] }]
    : [{ instanceId: 'inst', tunnelIp: '', port: 0, hostnames: [HOST], relayVia: ['gw-a'], remote: true }]
  const edge = await startLoopbackEdge(dataDir, routes, {
    http: { host: '127.0.0.1', port: 0 },
    relay: { listen: { host: '127.0.0.1', port: 0 }, identity, sessionLive: () => holder, mode },
  })
  const ready: Ready = {
    https: edge.addresses().https.port,
    relayUrl: `https://127.0.0.1:${edge.relayAddress()!.port}`,
    fingerprint: identity.fingerprint,
    ca: edge.caCertificatePath ?? '',
  }
  process.send!(ready)
  process.on('message', (message: { fleet?: FleetGateway[], exit?: boolean }) => {
    if (message.fleet !== undefined) { edge.updateFleet(message.fleet); process.send!({ fleetSet: true }) }
    if (message.exit === true) {
      edge.close(0).finally(() => { fs.rmSync(dataDir, { recursive: true, force: true }); process.exit(0) })
    }
  })
}

function nextMessage<T> (proc: ChildProcess, key: keyof T): Promise<T> {
  return new Promise((resolve, reject) => {
    const onMessage = (m: T): void => { if (m[key] !== undefined) { proc.off('message', onMessage); resolve(m) } }
    proc.on('message', onMessage)
    proc.once('exit', code => reject(new Error(`child exited (${code})`)))
  })
}

async function curl (port: number, ca: string, bytes: number, http1: boolean): Promise<number> {
  const started = process.hrtime.bigint()
  const proc = spawn('curl', ['-sS', '--fail', '--max-time', '120', '--cacert', ca, '--resolve', `${HOST}:${port}:127.0.0.1`,
    ...(http1 ? ['--http1.1'] : []), '-o', '/dev/null', '-w', '%{size_download}', `https://${HOST}:${port}/bulk`], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  proc.stdout.on('data', (c: Buffer) => { out += c.toString() })
  const [code] = await once(proc, 'exit') as [number]
  const seconds = Number(process.hrtime.bigint() - started) / 1e9
  if (code !== 0 || Number(out) !== bytes) throw new Error(`curl exited ${code}, got ${out} bytes of ${bytes}`)
  return bytes / 1e6 / seconds
}

/** Requests/s of 1 KiB GETs: h2load over HTTP/1.1, 8 connections, `seconds` long after 1 s of warm-up. */
async function smallRequests (port: number, seconds: number): Promise<{ perSecond: number, requests: number }> {
  const proc = spawn('h2load', ['--h1', '-c', '8', '-t', '1', '-D', String(seconds), '--warm-up-time', '1', `--connect-to=127.0.0.1:${port}`, `https://${HOST}:${port}/small`], { stdio: ['ignore', 'pipe', 'inherit'] })
  let out = ''
  proc.stdout.on('data', (c: Buffer) => { out += c.toString() })
  const timer = setTimeout(() => proc.kill('SIGKILL'), (seconds + 30) * 1000)
  await once(proc, 'exit')
  clearTimeout(timer)
  const rate = /finished in [\d.]+\w+, ([\d.]+) req\/s/.exec(out)
  const done = /requests: \d+ total, \d+ started, (\d+) done, (\d+) succeeded/.exec(out)
  if (rate === null || done === null || done[1] !== done[2]) throw new Error(`h2load: ${out}`)
  return { perSecond: Number(rate[1]), requests: Number(done[1]) }
}

/** The top self-time functions of a .cpuprofile. */
function topSelf (file: string, count: number): string[] {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8')) as { nodes: Array<{ id: number, callFrame: { functionName: string, url: string, lineNumber: number } }>, samples: number[], timeDeltas: number[] }
  const byId = new Map(profile.nodes.map(n => [n.id, n]))
  const self = new Map<string, number>()
  let total = 0
  profile.samples.forEach((id, i) => {
    const n = byId.get(id)!
    if (n.callFrame.functionName === '(idle)') return
    const key = `${n.callFrame.functionName || '(anonymous)'} ${path.basename(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`
    const dt = profile.timeDeltas[i] ?? 0
    self.set(key, (self.get(key) ?? 0) + dt)
    total += dt
  })
  return [...self].sort((a, b) => b[1] - a[1]).slice(0, count).map(([k, v]) => `${(100 * v / total).toFixed(1).padStart(5)}%  ${k}`)
}

const SPEC = {
  name: 'bench/relay-loopback.ts',
  about: `The fleet relay's own cost on loopback, without the fleet lab: an origin and the holder's
Edge in one process, the relaying Edge in another, curl (downloads) and h2load (1 KiB GETs over
HTTP/1.1, 8 connections) as clients. Rounds alternate direct and relayed; each line gives MB/s
or requests/s and the CPU seconds of each process per 100 MB or per 1,000 requests. --cpu-prof
writes a V8 CPU profile per process and prints the top self times. Needs curl (and h2load for
--small-seconds).`,
  options: {
    'size-mb': { type: 'string', default: '100', value: 'MB', help: 'download size' },
    rounds: { type: 'string', default: '3', value: 'N', help: 'rounds, 1-10' },
    mode: { type: 'string', default: 'stream', value: 'MODE', help: 'relay mode of the relaying edge: stream, passthrough or request' },
    'http1.1': { type: 'boolean', default: false, help: 'downloads over HTTP/1.1 (default: HTTP/2 by ALPN)' },
    'small-seconds': { type: 'string', default: '0', value: 'S', help: 'seconds of small requests per phase, 0-60 (0: none)' },
    'cpu-prof': { type: 'boolean', default: false, help: 'V8 CPU profiles of both edges' },
    'prof-dir': { type: 'string', value: 'DIR', help: 'where profiles go (default: a new temporary directory)' },
    role: { type: 'string', value: 'ROLE', help: 'internal: run as the holder or the relaying child' },
  },
} as const

async function main (): Promise<void> {
  const values = parseBenchArgs(SPEC, v => {
    numberSetting('--size-mb', v['size-mb'], 1, 10_000)
    numberSetting('--rounds', v.rounds, 1, 10)
    numberSetting('--small-seconds', v['small-seconds'], 0, 60)
    if (!(RELAY_MODES as readonly string[]).includes(v.mode)) throw new UsageError(`--mode: ${v.mode} is not one of ${RELAY_MODES.join(', ')}`)
    return v
  })
  const sizeBytes = Math.round(Number(values['size-mb']) * 1e6)
  const mode = values.mode as RelayMode
  if (values.role !== undefined) { await child(values.role, sizeBytes, mode); return }
  const rounds = Number(values.rounds)
  const profDir = values['prof-dir'] ?? fs.mkdtempSync(path.join(os.tmpdir(), 'cc-relay-prof-'))
  fs.mkdirSync(profDir, { recursive: true })
  const execArgv = ['--import', 'tsx', ...(values['cpu-prof'] === true ? ['--cpu-prof', '--cpu-prof-dir', profDir] : [])]
  const start = (role: string): ChildProcess => fork(SELF, ['--role', role, '--size-mb', String(values['size-mb']), '--mode', mode], { execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const holder = start('holder')
  const relaying = start('relaying')
  const stop = (): void => { for (const p of [holder, relaying]) p.kill('SIGKILL') }
  process.once('SIGINT', () => { stop(); process.exit(130) })
  try {
    const [h, r] = await Promise.all([nextMessage<Ready>(holder, 'https'), nextMessage<Ready>(relaying, 'https')])
    const fleet: FleetGateway[] = [
      { id: 'gw-a', relayUrl: h.relayUrl, relayFingerprint: h.fingerprint },
      { id: 'gw-b', relayUrl: r.relayUrl, relayFingerprint: r.fingerprint },
    ]
    holder.send({ fleet })
    relaying.send({ fleet })
    await Promise.all([nextMessage(holder, 'fleetSet' as never), nextMessage(relaying, 'fleetSet' as never)])
    // Both edges use their own local CA: curl trusts both.
    const ca = path.join(profDir, 'ca.pem')
    fs.writeFileSync(ca, fs.readFileSync(h.ca, 'utf8') + '\n' + fs.readFileSync(r.ca, 'utf8'))
    process.stdout.write(`holder pid ${holder.pid}, relaying pid ${relaying.pid}\n`)
    const per100MB = 100e6 / sizeBytes
    const http1 = values['http1.1'] === true
    for (let round = 1; round <= rounds; round++) {
      const cpu = (): [number, number] => [cpuSeconds(holder.pid!), cpuSeconds(relaying.pid!)]
      let before = cpu()
      const direct = await curl(h.https, ca, sizeBytes, http1)
      let after = cpu()
      const directCpu = (after[0] - before[0]) * per100MB
      before = cpu()
      const relayed = await curl(r.https, ca, sizeBytes, http1)
      after = cpu()
      process.stdout.write(`round ${round} (load ${os.loadavg()[0].toFixed(2)}): direct ${direct.toFixed(1)} MB/s (holder ${directCpu.toFixed(2)} s/100 MB), ` +
        `relayed ${relayed.toFixed(1)} MB/s (holder ${((after[0] - before[0]) * per100MB).toFixed(2)}, relaying ${((after[1] - before[1]) * per100MB).toFixed(2)} s/100 MB), ratio ${(relayed / direct).toFixed(2)}\n`)
      const smallSeconds = Number(values['small-seconds'])
      if (smallSeconds > 0) {
        before = cpu()
        const d = await smallRequests(h.https, smallSeconds)
        after = cpu()
        const dHolder = (after[0] - before[0]) * 1000 / d.requests
        before = cpu()
        const rs = await smallRequests(r.https, smallSeconds)
        after = cpu()
        process.stdout.write(`round ${round} small (load ${os.loadavg()[0].toFixed(2)}): direct ${d.perSecond.toFixed(0)} req/s (holder ${dHolder.toFixed(3)} s/1000), ` +
          `relayed ${rs.perSecond.toFixed(0)} req/s (holder ${((after[0] - before[0]) * 1000 / rs.requests).toFixed(3)}, relaying ${((after[1] - before[1]) * 1000 / rs.requests).toFixed(3)} s/1000), ratio ${(rs.perSecond / d.perSecond).toFixed(2)}\n`)
      }
    }
    holder.send({ exit: true })
    relaying.send({ exit: true })
    await Promise.all([once(holder, 'exit'), once(relaying, 'exit')])
    if (values['cpu-prof'] === true) {
      for (const file of fs.readdirSync(profDir).filter(f => f.endsWith('.cpuprofile'))) {
        process.stdout.write(`\n${path.join(profDir, file)}\n${topSelf(path.join(profDir, file), 25).join('\n')}\n`)
      }
    }
  } finally {
    stop()
  }
}

await main()
