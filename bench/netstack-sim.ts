/**
 * Userspace TCP in process: two of our stacks back to back on the virtual clock of
 * test/gateway/netstack/tcp/harness.ts (no sockets, no crypto), a bulk transfer each way at once.
 * Prints the CPU per MB over both stacks and a fingerprint of what happened (the virtual end time,
 * the link's counts and every TCP counter of both stacks): on the same seeded link, two checkouts
 * whose fingerprints match behaved the same to the segment, so a refactoring is checked and timed
 * by running this alternately against each (--tree).
 *
 *   node bin/run-ts.js bench/netstack-sim.ts [--size-mb 64] [--loss 0] [--bandwidth-mbps 200] [--queue-kb 4000] [--tree DIR]
 *   node bin/run-ts.js bench/netstack-sim.ts --help
 */
import { createHash } from 'node:crypto'
import { loadavg } from 'node:os'
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'
import { exitOnBrokenPipe, isMain, numberOption, parseBenchArgs } from './baseline/cli.ts'
import type * as Harness from '../test/gateway/netstack/tcp/harness.ts'
import type { ConnectionHandler, TcpConnection } from '../gateway/netstack/tcp/connection.ts'

export interface SimBenchOptions {
  sizeMB: number
  loss: number
  /** Checkout whose stack is measured. */
  tree: string
  /** Without loss: the link's rate (MB/s) and the drop-tail queue in front of it (KB). */
  bandwidthMBps?: number
  queueKB?: number
}

/**
 * With loss, the bulk test's link (duplicates, jitter, a drop-tail queue); without, a fast clean
 * one, or one with a short queue (a peer's small UDP receive buffer) when given.
 */
function link (opts: SimBenchOptions): Harness.LinkConfig {
  return opts.loss > 0
    ? { seed: 42, loss: opts.loss, duplicate: 0.01, delay: 10, jitter: 3, bandwidth: 20_000, queueBytes: 300_000 }
    : { seed: 7, loss: 0, delay: 1, bandwidth: (opts.bandwidthMBps ?? 200) * 1000, queueBytes: (opts.queueKB ?? 4000) * 1000 }
}

export interface BulkRun {
  client: Harness.Recorder
  server: Harness.Recorder
  /** Both sides closed within the virtual hour. */
  finished: boolean
}

/**
 * A bulk transfer each way at once on `sim` (the bulk test's and this bench's): a connects to b's
 * port 80, each side streams its bytes once connected and then closes. `h`: the harness module
 * of the checkout that runs (only Sim, Recorder and ADDR_B, which every checkout has).
 */
export function bulkBothWays (h: Pick<typeof Harness, 'Recorder' | 'ADDR_B'>, sim: Harness.Sim, up: Buffer, down: Buffer): BulkRun {
  const client = new h.Recorder()
  const server = new h.Recorder()
  client.keepChunks = false
  server.keepChunks = false
  client.now = () => sim.now
  server.now = () => sim.now
  sim.b.listen(80, (conn: TcpConnection): ConnectionHandler => {
    server.conn = conn
    return server
  })
  client.conn = sim.a.connect(h.ADDR_B, 80, client, sim.now)
  let clientStarted = false
  let serverStarted = false
  const finished = sim.run(() => {
    if (!clientStarted && client.connected) {
      clientStarted = true
      client.stream(up, sim.now)
    }
    if (!serverStarted && server.conn !== null) {
      serverStarted = true
      server.stream(down, sim.now)
    }
    return client.closed && server.closed
  }, 3_600_000)
  return { client, server, finished }
}

export async function runSimBench (opts: SimBenchOptions): Promise<Record<string, unknown>> {
  const h = await import(pathToFileURL(resolve(opts.tree, 'test/gateway/netstack/tcp/harness.ts')).href) as typeof Harness
  const size = Math.round(opts.sizeMB * 1e6)
  const sim = new h.Sim(link(opts), {}, {})
  const up = h.randomData(size, 1)
  const down = h.randomData(size, 2)
  const loadStart = loadavg()
  const cpu0 = process.cpuUsage()
  const { client, server, finished } = bulkBothWays(h, sim, up, down)
  const cpu = process.cpuUsage(cpu0)
  const fingerprint = createHash('sha256')
    .update(JSON.stringify([sim.now, sim.stats, sim.metricsA.snapshot(), sim.metricsB.snapshot()]))
    .digest('hex').slice(0, 16)
  return {
    bench: 'netstack-sim',
    date: new Date().toISOString(),
    tree: resolve(opts.tree),
    loadavgStart: loadStart,
    loadavgEnd: loadavg(),
    bytesEachWay: size,
    loss: opts.loss,
    finished,
    complete: server.received === size && client.received === size,
    virtualMs: Math.round(sim.now),
    fingerprint,
    // Datagrams each way and those the link dropped (loss or a full queue), and what each stack retransmitted.
    link: { ab: { sent: sim.stats.ab.sent, dropped: sim.stats.ab.dropped }, ba: { sent: sim.stats.ba.sent, dropped: sim.stats.ba.dropped } },
    retransmits: { a: sim.metricsA.snapshot().tcp_retransmits ?? {}, b: sim.metricsB.snapshot().tcp_retransmits ?? {} },
    cpuMsPerMB: Math.round((cpu.user + cpu.system) / 1000 / (2 * size / 1e6) * 1000) / 1000,
  }
}

const SPEC = {
  name: 'bench/netstack-sim.ts',
  about: `Userspace TCP in process: two of our stacks back to back on a virtual clock (no sockets, no
crypto), a bulk transfer each way at once. JSON on stdout: CPU ms per MB over both stacks and a
fingerprint of the run (virtual end time, link counts, every TCP counter); the same fingerprint
from two checkouts means they behaved the same to the segment. Seconds to a minute.`,
  options: {
    'size-mb': { type: 'string', default: '64', value: 'MB', help: 'bytes each way in 10^6, 1-1000' },
    loss: { type: 'string', default: '0', value: 'P', help: 'datagram loss each way, 0-0.2 (with loss: duplicates and jitter too)' },
    tree: { type: 'string', default: '.', value: 'DIR', help: 'checkout whose stack runs (its test/gateway/netstack/tcp/harness.ts)' },
    'bandwidth-mbps': { type: 'string', default: '200', value: 'MBPS', help: 'without loss: the link\'s rate in MB/s, 1-10000' },
    'queue-kb': { type: 'string', default: '4000', value: 'KB', help: 'without loss: the drop-tail queue in front of it in KB (a small one models a peer\'s UDP receive buffer), 1-100000' },
  },
} as const

if (isMain(import.meta.url)) {
  exitOnBrokenPipe()
  const options = parseBenchArgs(SPEC, (values): SimBenchOptions => ({
    sizeMB: numberOption('size-mb', values['size-mb'], 1, 1000),
    loss: numberOption('loss', values.loss, 0, 0.2),
    tree: values.tree ?? '.',
    bandwidthMBps: numberOption('bandwidth-mbps', values['bandwidth-mbps'], 1, 10_000),
    queueKB: numberOption('queue-kb', values['queue-kb'], 1, 100_000),
  }))
  const result = await runSimBench(options)
  process.stdout.write(JSON.stringify(result, null, 2) + '\n')
  if (result.finished !== true || result.complete !== true) process.exit(1)
}
