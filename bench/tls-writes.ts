/**
 * CPU of an Edge per GB downloaded over HTTP/1.1, with its writes to the client's TLS socket kept
 * below 16 KiB (the default, gateway/edge/tls-writes.ts) against node's own socket methods (the
 * proxy's 64 KiB pieces reaching TLS whole), two edge processes side by side in alternating rounds.
 *
 *   node bin/run-ts.js bench/tls-writes.ts --rounds 6 --mb 256
 */
import { fork, type ChildProcess } from 'node:child_process'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import { loadavg } from 'node:os'
import { fileURLToPath } from 'node:url'
import { isMain, numberOption, parseBenchArgs } from './baseline/cli.ts'
import { benchDataDir, startLoopbackEdge } from './baseline/edge.ts'
import { cpuSeconds } from './baseline/proc.ts'
import { TLS_WRITE_MAX } from '../gateway/edge/tls-writes.ts'

const HOSTNAME = 'app.tls-writes.test'
const PIECE = 1024 * 1024
const piece = Buffer.alloc(PIECE, 0x61)

const SPEC = {
  name: 'bench/tls-writes.ts',
  about: `CPU seconds per GB an Edge spends on HTTP/1.1 downloads with its TLS writes kept below 16 KiB
(the default, tlsWriteMax 16,000) and with node's own socket methods (tlsWriteMax 0) (writes of the proxy's 64 KiB pieces), two edge
processes in alternating rounds, one loopback origin. Loopback only.`,
  options: {
    rounds: { type: 'string', default: '6', value: 'N', help: 'rounds, each downloading from both edges, 1-20' },
    mb: { type: 'string', default: '256', value: 'MIB', help: 'MiB downloaded per edge per round (one response), 16-4096' },
  },
} as const

type Mode = 'bounded' | 'node'

/** The edge process: an Edge in front of the origin, `node` with tlsWriteMax 0. */
async function serve (mode: Mode, originPort: number): Promise<void> {
  process.once('SIGTERM', () => process.exit(0))
  const edge = await startLoopbackEdge(benchDataDir('tls-writes'), [{ instanceId: 'tls-writes', tunnelIp: '127.0.0.1', port: originPort, hostnames: [HOSTNAME] }], {
    http: { host: '127.0.0.1', port: 0 },
    tlsWriteMax: mode === 'bounded' ? TLS_WRITE_MAX : 0,
  })
  process.send?.({ port: edge.addresses().https.port })
}

async function startEdgeProcess (mode: Mode, originPort: number): Promise<{ child: ChildProcess, port: number }> {
  const child = fork(fileURLToPath(new URL('../bin/run-ts.js', import.meta.url)), [fileURLToPath(import.meta.url), '--serve', mode, String(originPort)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  process.on('exit', () => child.kill('SIGKILL'))
  const port = await new Promise<number>((resolve, reject) => {
    child.once('message', m => resolve((m as { port: number }).port))
    child.once('exit', code => reject(new Error(`edge (${mode}) exited (${code})`)))
  })
  return { child, port }
}

async function download (port: number, agent: https.Agent): Promise<number> {
  return await new Promise((resolve, reject) => {
    const req = https.get({ host: '127.0.0.1', port, servername: HOSTNAME, headers: { host: HOSTNAME }, rejectUnauthorized: false, agent, timeout: 120_000 }, res => {
      let n = 0
      res.on('data', (c: Buffer) => { n += c.length })
      res.on('end', () => resolve(n))
      res.on('error', reject)
    })
    req.on('timeout', () => req.destroy(new Error('download timed out')))
    req.on('error', reject)
  })
}

async function main (): Promise<void> {
  const serveAt = process.argv.indexOf('--serve')
  if (serveAt !== -1) { await serve(process.argv[serveAt + 1] as Mode, Number(process.argv[serveAt + 2])); return }
  const s = parseBenchArgs(SPEC, values => ({ rounds: numberOption('rounds', values.rounds, 1, 20), mb: numberOption('mb', values.mb, 16, 4096) }))
  const origin = http.createServer((_req, res) => {
    res.writeHead(200, { 'content-length': s.mb * PIECE })
    let left = s.mb
    const next = (): void => {
      while (left > 0) { left--; if (!res.write(piece)) { res.once('drain', next); return } }
      res.end()
    }
    next()
  })
  await new Promise<void>(resolve => origin.listen(0, '127.0.0.1', resolve))
  const originPort = (origin.address() as net.AddressInfo).port
  const edges = { bounded: await startEdgeProcess('bounded', originPort), node: await startEdgeProcess('node', originPort) }
  const agent = new https.Agent({ keepAlive: true, maxSockets: 1 })
  const results: Record<Mode, Array<{ cpuPerGB: number, mbps: number, load: number }>> = { bounded: [], node: [] }
  console.log(`TLS writes bench ${new Date().toISOString()}, ${s.mb} MiB per download, load average ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
  try {
    // Warm-up: the connection, its handshake and the JIT, on both sides.
    for (const { port } of Object.values(edges)) await download(port, agent)
    for (let round = 1; round <= s.rounds; round++) {
      // Which side goes first alternates too.
      const order: Mode[] = round % 2 === 1 ? ['node', 'bounded'] : ['bounded', 'node']
      for (const mode of order) {
        const { child, port } = edges[mode]
        const before = cpuSeconds(child.pid!)
        const start = process.hrtime.bigint()
        const bytes = await download(port, agent)
        const seconds = Number(process.hrtime.bigint() - start) / 1e9
        const cpu = cpuSeconds(child.pid!) - before
        if (bytes !== s.mb * PIECE) throw new Error(`${mode}: ${bytes} bytes, expected ${s.mb * PIECE}`)
        results[mode].push({ cpuPerGB: cpu / (bytes / 1e9), mbps: bytes / 1e6 / seconds, load: loadavg()[0]! })
        console.log(`round ${round} ${mode.padEnd(7)}: ${(cpu / (bytes / 1e9)).toFixed(3)} CPU s/GB, ${(bytes / 1e6 / seconds).toFixed(1)} MB/s, load ${loadavg()[0]!.toFixed(1)}`)
      }
    }
  } finally {
    agent.destroy()
    for (const { child } of Object.values(edges)) child.kill('SIGTERM')
    origin.close()
  }
  const median = (xs: number[]): number => { const v = [...xs].sort((a, b) => a - b); return v.length % 2 === 1 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2 }
  const ratios = results.bounded.map((b, i) => b.cpuPerGB / results.node[i]!.cpuPerGB)
  console.log(`\n| writes to TLS | CPU s/GB median (min-max) | MB/s median |`)
  console.log('|---|---:|---:|')
  for (const mode of ['node', 'bounded'] as const) {
    const cpu = results[mode].map(r => r.cpuPerGB)
    console.log(`| ${mode === 'node' ? "node's own (64 KiB pieces)" : 'below 16 KiB (tlsWriteMax 16,000)'} | ${median(cpu).toFixed(3)} (${Math.min(...cpu).toFixed(3)}-${Math.max(...cpu).toFixed(3)}) | ${median(results[mode].map(r => r.mbps)).toFixed(1)} |`)
  }
  console.log(`CPU ratio below 16 KiB / node's own, per round: ${ratios.map(r => r.toFixed(3)).join(' ')}; median ${median(ratios).toFixed(3)}; load average after ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
}

if (isMain(import.meta.url)) await main()
