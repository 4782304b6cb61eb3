/**
 * WireGuard over TLS against WireGuard over UDP, in the same run, on loopback: a Gateway (our
 * userspace WireGuard, TCP stack and HTTPS listener) and the agent's UserspaceTunnel in one process,
 * the tunnel forwarding port 80 to a local TCP server. Per transport: MB/s of one bulk download
 * (gateway -> agent -> server and back, `--size-mb`), and latency of small request/answer round
 * trips (64 bytes each way on one connection, `--requests`): p50 and p99. Rounds alternate the
 * transports so a slow spell of the machine falls on both. JSON on stdout, a summary on stderr.
 *
 *   node bin/run-ts.js bench/transport.ts [--size-mb 64] [--requests 2000] [--rounds 3]
 */
import net from 'node:net'
import type { AddressInfo } from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { pino } from 'pino'
import { Gateway } from '../gateway/index.ts'
import { validateConfig } from '../gateway/config/schema.ts'
import { snapshotFromConfig } from '../gateway/control/static-file.ts'
import { encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../proto/noise/keys.ts'
import { UserspaceTunnel } from '../agent/userspace.ts'
import { planFromConfig } from '../agent/tunnel.ts'
import { sendRepeated } from './baseline/send.ts'

const HELP = `usage: node bin/run-ts.js bench/transport.ts [--size-mb N] [--requests N] [--rounds N]
  --size-mb N    bulk download per round and transport (default 64, at most 1024)
  --requests N   small round trips per round and transport (default 2000, at most 100000)
  --rounds N     rounds, each running UDP and TLS in turn (default 3, at most 20)`

function option (name: string, fallback: number, max: number): number {
  const i = process.argv.indexOf(name)
  if (i === -1) return fallback
  const v = Number(process.argv[i + 1])
  if (!Number.isInteger(v) || v < 1 || v > max) { process.stderr.write(`${name} must be an integer 1..${max}\n${HELP}\n`); process.exit(2) }
  return v
}
if (process.argv.includes('--help')) { process.stdout.write(`${HELP}\n`); process.exit(0) }
const SIZE = option('--size-mb', 64, 1024) * 1_000_000
const REQUESTS = option('--requests', 2000, 100_000)
const ROUNDS = option('--rounds', 3, 20)
const API = 'api.example.test'
const logger = pino({ level: 'silent' })
const dir = mkdtempSync(join(tmpdir(), 'cc-bench-transport-'))
const timeout = setTimeout(() => { process.stderr.write('bench/transport.ts: over 15 minutes, stopping\n'); process.exit(1) }, 15 * 60_000)

const body = Buffer.alloc(1 << 20, 0x5a)
/** First byte 'B': send SIZE bytes then FIN; otherwise echo 64-byte requests. */
const server = net.createServer({ allowHalfOpen: true }, socket => {
  socket.on('error', () => {})
  socket.once('data', (first: Buffer) => {
    if (first[0] === 0x42) {
      sendRepeated(socket, body, SIZE)
      return
    }
    socket.write(first)
    socket.on('data', (c: Buffer) => socket.write(c))
  })
})
await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
const targetPort = (server.address() as AddressInfo).port

async function setup (setting: 'udp' | 'tls'): Promise<{ gw: Gateway, tunnel: UserspaceTunnel }> {
  const agentKey = generatePrivateKey()
  const config = validateConfig({
    privateKey: encodeKey(generatePrivateKey()),
    listenAddress: '127.0.0.1',
    listenPort: 0,
    peers: [{ publicKey: encodeKey(publicKeyFromPrivate(agentKey)), allowedIPs: ['10.100.0.2/32'] }],
    edge: { dataDir: join(dir, setting), httpsListen: '127.0.0.1:0', httpListen: null },
  })
  const gw = await Gateway.start(config, logger)
  const snapshot = snapshotFromConfig(config, 1)
  gw.applySnapshot({ ...snapshot, gateway: { ...snapshot.gateway, baseDomain: 'example.test' } })
  await gw.edge!.certificatesSettled()
  const tunnel = new UserspaceTunnel({
    privateKey: agentKey, target: { host: '127.0.0.1', port: targetPort }, tunnelPorts: [80], listenPort: 0, logger,
    transport: { setting, tlsPort: gw.edge!.addresses().https.port, serverName: API, proxyFor: () => null },
  })
  await tunnel.apply(planFromConfig({
    interface: { address: '10.100.0.2/32' },
    peer: { public_key: encodeKey(gw.device.publicKey), endpoint: gw.listen, allowed_ips: '10.100.0.1/32', persistent_keepalive: 25 },
  }))
  const deadline = Date.now() + 20_000
  while (!(tunnel.currentTransport === setting && tunnel.health().lastHandshakeAt !== null)) {
    if (Date.now() > deadline) throw new Error(`no handshake over ${setting} in 20 s`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  return { gw, tunnel }
}

async function bulk (gw: Gateway): Promise<number> {
  return await new Promise((resolve, reject) => {
    const socket = gw.connectUpstream('10.100.0.2', 80)
    const started = performance.now()
    let bytes = 0
    socket.on('data', (c: Buffer) => { bytes += c.length })
    socket.on('end', () => { if (bytes !== SIZE) reject(new Error(`got ${bytes} of ${SIZE}`)); else resolve(SIZE / 1e6 / ((performance.now() - started) / 1000)) })
    socket.on('error', reject)
    socket.end(Buffer.from('B'))
  })
}

async function small (gw: Gateway): Promise<number[]> {
  const socket = gw.connectUpstream('10.100.0.2', 80)
  socket.setNoDelay?.(true)
  const request = Buffer.alloc(64, 0x61)
  const times: number[] = []
  let got = 0
  let waiting: (() => void) | null = null
  socket.on('data', (c: Buffer) => { got += c.length; if (got >= 64) { got -= 64; waiting?.() } })
  for (let i = 0; i < REQUESTS; i++) {
    const started = performance.now()
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('a round trip took over 10 s')), 10_000)
      waiting = () => { clearTimeout(timer); waiting = null; resolve() }
      socket.write(request)
    })
    times.push(performance.now() - started)
  }
  socket.destroy()
  return times
}

const quantile = (sorted: number[], q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
const results: Record<string, Array<{ mbps: number, p50: number, p99: number }>> = { udp: [], tls: [] }
try {
  for (let round = 0; round < ROUNDS; round++) {
    for (const setting of round % 2 === 0 ? ['udp', 'tls'] as const : ['tls', 'udp'] as const) {
      const { gw, tunnel } = await setup(setting)
      try {
        const mbps = await bulk(gw)
        const times = (await small(gw)).sort((a, b) => a - b)
        results[setting].push({ mbps, p50: quantile(times, 0.5), p99: quantile(times, 0.99) })
        process.stderr.write(`round ${round + 1} ${setting}: ${mbps.toFixed(1)} MB/s, small p50 ${quantile(times, 0.5).toFixed(2)} ms p99 ${quantile(times, 0.99).toFixed(2)} ms\n`)
      } finally {
        await tunnel.close()
        await gw.close(0)
      }
    }
  }
} finally {
  server.close()
  rmSync(dir, { recursive: true, force: true })
  clearTimeout(timeout)
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]
const summary = Object.fromEntries((['udp', 'tls'] as const).map(k => [k, { mbps: median(results[k].map(r => r.mbps)), p50Ms: median(results[k].map(r => r.p50)), p99Ms: median(results[k].map(r => r.p99)) }]))
const ratio = summary.tls.mbps / summary.udp.mbps
process.stderr.write(`median of ${ROUNDS}: UDP ${summary.udp.mbps.toFixed(1)} MB/s p99 ${summary.udp.p99Ms.toFixed(2)} ms; TLS ${summary.tls.mbps.toFixed(1)} MB/s p99 ${summary.tls.p99Ms.toFixed(2)} ms; TLS/UDP ${ratio.toFixed(2)}x\n`)
process.stdout.write(JSON.stringify({ sizeMb: SIZE / 1e6, requests: REQUESTS, rounds: ROUNDS, cpus: cpus().length, cpu: cpus()[0]?.model, loadavg: loadavg(), node: process.version, results, summary, tlsOverUdp: ratio }) + '\n')
process.exit(0)
