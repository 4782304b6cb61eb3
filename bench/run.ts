/**
 * The benchmarks one after the other, each as `node bin/run-ts.js bench/NAME.ts` with its output
 * streamed:
 *
 *   npm run bench                      crypto, control, netstack, edge, e2e
 *   npm run bench -- netstack e2e      just those
 *   npm run bench -- --help            the list, with what each needs
 *
 * A bench whose needs are missing (root, a database URL, a tool) is skipped with the reason. Exit
 * status 1 if any bench that ran failed; on Ctrl-C / SIGTERM the running bench gets the signal
 * (it tears down what it started) and nothing further starts.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { labMissing, onPath } from '../test/helpers/lab.ts'
import { UsageError, parseBenchArgs } from './baseline/cli.ts'

const ROOT = resolve(fileURLToPath(import.meta.url), '../..')

/** `lab`: root and the network-namespace lab (test/helpers/lab.ts); `database`: a Postgres URL. */
type Need = 'lab' | 'database' | 'nginx' | 'caddy' | 'wrk' | 'curl'

interface Bench { name: string, about: string, needs: Need[], byDefault: boolean }

const BENCHES: Bench[] = [
  { name: 'crypto', about: 'WireGuard transport seal + open and responder handshakes per second, per crypto backend', needs: [], byDefault: true },
  { name: 'control', about: 'control API heartbeats/s and instance lists/s on Postgres', needs: ['database', 'wrk'], byDefault: true },
  { name: 'netstack', about: 'one connection through our netstack vs wireguard-go + Linux TCP, MB/s, also with loss', needs: ['lab', 'nginx', 'curl', 'wrk'], byDefault: true },
  { name: 'edge', about: 'our edge (TLS + reverse proxy) vs Caddy on loopback', needs: ['nginx', 'caddy', 'wrk', 'curl'], byDefault: true },
  { name: 'e2e', about: 'HTTPS through the whole gateway vs Caddy over wireguard-go', needs: ['lab', 'nginx', 'caddy', 'curl', 'wrk'], byDefault: true },
  { name: 'lab-baseline', about: 'the wireguard-go baseline alone (only when named)', needs: ['lab', 'nginx', 'caddy', 'curl', 'wrk'], byDefault: false },
]

const NEED_TEXT: Record<Need, string> = {
  lab: 'root (network namespaces), wireguard-go, wireguard-tools',
  database: 'Postgres URL in CC_TEST_DATABASE_URL',
  nginx: 'nginx',
  caddy: 'caddy',
  wrk: 'wrk',
  curl: 'curl',
}

/** Why `bench` cannot run here, or null. */
function missingNeed (bench: Bench): string | null {
  for (const need of bench.needs) {
    if (need === 'lab') {
      const missing = labMissing()
      if (missing !== null) return missing
    } else if (need === 'database') {
      if ((process.env.CC_TEST_DATABASE_URL ?? process.env.DATABASE_URL ?? '') === '') return 'CC_TEST_DATABASE_URL (or DATABASE_URL) is not set'
    } else if (!onPath(need)) {
      return `${need} is not on PATH`
    }
  }
  return null
}

const SPEC = {
  name: 'bench/run.ts',
  positionals: '[BENCH...]',
  about: `Runs benchmarks one after the other (default: ${BENCHES.filter(b => b.byDefault).map(b => b.name).join(', ')}),
each as \`node bin/run-ts.js bench/BENCH.ts\` with its own defaults and its output streamed;
\`npm run bench -- BENCH...\` runs just those. A bench whose needs are missing is skipped with the
reason; the exit status is 1 if any bench that ran failed. A bench's own options:
\`node bin/run-ts.js bench/BENCH.ts --help\`.

Benchmarks:
${BENCHES.map(b => `  ${b.name.padEnd(14)}${b.about}\n  ${''.padEnd(14)}needs: ${b.needs.length === 0 ? 'nothing' : b.needs.map(n => NEED_TEXT[n]).join(', ')}`).join('\n')}`,
  options: {},
} as const

const chosen = parseBenchArgs(SPEC, (_values, names) => {
  if (names.length === 0) return BENCHES.filter(b => b.byDefault)
  return names.map(name => {
    const bench = BENCHES.find(b => b.name === name)
    if (bench === undefined) throw new UsageError(`unknown bench '${name}' (one of ${BENCHES.map(b => b.name).join(', ')})`)
    return bench
  })
})

let current: ChildProcess | undefined
let stoppedBy: { signal: NodeJS.Signals, status: number } | undefined

/** Passes the signal on to the running bench (its cleanup runs) and starts nothing more. */
function stop (signal: NodeJS.Signals, status: number): void {
  stoppedBy ??= { signal, status }
  current?.kill(signal)
  if (current === undefined) process.exit(status)
}
process.on('SIGINT', () => stop('SIGINT', 130))
process.on('SIGTERM', () => stop('SIGTERM', 143))
process.on('SIGHUP', () => stop('SIGHUP', 129))
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code !== 'EPIPE') throw err
  stop('SIGTERM', 141)
})

function say (line: string): void {
  process.stdout.write(`${line}\n`)
}

function runBench (bench: Bench): Promise<{ code: number | null, signal: NodeJS.Signals | null }> {
  return new Promise(resolve => {
    const child = spawn(process.execPath, [join(ROOT, 'bin/run-ts.js'), `bench/${bench.name}.ts`], { cwd: ROOT, stdio: 'inherit' })
    current = child
    child.on('error', err => { say(`${bench.name}: ${err.message}`) })
    child.on('close', (code, signal) => { current = undefined; resolve({ code, signal }) })
  })
}

const summary: string[] = []
let failed = false
for (const bench of chosen) {
  if (stoppedBy !== undefined) break
  const missing = missingNeed(bench)
  if (missing !== null) {
    say(`== ${bench.name}: skipped (${missing})`)
    summary.push(`${bench.name.padEnd(14)}skipped: ${missing}`)
    continue
  }
  say(`== ${bench.name}: node bin/run-ts.js bench/${bench.name}.ts`)
  const started = Date.now()
  const { code, signal } = await runBench(bench)
  const took = `${Math.round((Date.now() - started) / 1000)} s`
  if (code === 0) {
    summary.push(`${bench.name.padEnd(14)}ok (${took})`)
  } else {
    failed = true
    summary.push(`${bench.name.padEnd(14)}FAILED: ${signal !== null ? `killed by ${signal}` : `exit status ${code}`} (${took})`)
  }
}
say(`== summary${stoppedBy !== undefined ? ` (stopped by ${stoppedBy.signal})` : ''}\n${summary.map(s => `  ${s}`).join('\n')}`)
process.exit(stoppedBy?.status ?? (failed ? 1 : 0))
