/**
 * The benchmark programs as command lines (bench/baseline/cli.ts): --help, refused options, the
 * runner's list, and the exit hooks that stop what a bench started. No benchmark runs here: every
 * program is started with a PATH holding only node (no nginx, caddy, wrk, wireguard-go), so even a
 * regression that let one past its argument parsing could not start a lab or a proxy.
 */
import t, { type Test } from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { UsageError, numberOption, parseBenchArgv, usageText } from '../../bench/baseline/cli.ts'

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..')
const RUN_TS = join(ROOT, 'bin/run-ts.js')
const NODE_ONLY_PATH = dirname(process.execPath)

interface Result { code: number | null, stdout: string, stderr: string }

/**
 * The environment of a program run by hand: without tap's NODE_OPTIONS, whose process-info hook
 * adds its own signal listeners (with them, the lab's exit hooks leave exiting to the test runner),
 * and without a database URL.
 */
function userEnv (extra: NodeJS.ProcessEnv = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(NODE_OPTIONS|TAP|_TAPJS_|CC_TEST_DATABASE_URL$|DATABASE_URL$)/.test(k)))
  return { ...env, PATH: NODE_ONLY_PATH, ...extra }
}

function bench (file: string, args: string[], env: NodeJS.ProcessEnv = {}): Result {
  const r = spawnSync(process.execPath, [RUN_TS, file, ...args], { cwd: ROOT, env: userEnv(env), encoding: 'utf8', timeout: 60_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

/** The benches with a --help, and whether their usage must say they need root. */
const BENCHES = [
  { file: 'bench/e2e.ts', root: true },
  { file: 'bench/netstack.ts', root: true },
  { file: 'bench/lab-baseline.ts', root: true },
  { file: 'bench/edge.ts', root: false },
  { file: 'bench/control.ts', root: false },
  { file: 'bench/crypto.ts', root: false },
]

/** `[--name VALUE]` tokens of the file's top doc comment: the options it documents. */
function documentedOptions (file: string): Map<string, string | undefined> {
  const text = readFileSync(join(ROOT, file), 'utf8')
  const doc = text.slice(text.indexOf('/**'), text.indexOf('*/'))
  const options = new Map<string, string | undefined>()
  for (const m of doc.matchAll(/\[--([a-z0-9.-]+)(?: ([^\]\s]+))?\]/g)) options.set(m[1], m[2])
  return options
}

const ONE_LINE = (file: string): RegExp => new RegExp(`^${file.replace(/[./]/g, c => `\\${c}`)}: [^\\n]+ \\(see --help\\)\\n$`)

for (const { file, root } of BENCHES) {
  t.test(`${file} --help: usage on stdout, exit 0, every documented option with its default`, async t => {
    for (const flag of ['--help', '-h']) {
      const r = bench(file, [flag])
      t.equal(r.code, 0, flag)
      t.equal(r.stderr, '', `${flag}: nothing on stderr`)
      t.match(r.stdout, new RegExp(`^Usage: node bin/run-ts\\.js ${file.replace('.', '\\.')} \\[options\\]`))
    }
    const help = bench(file, ['--help']).stdout
    t.match(help, root ? /Needs root/ : /not root/, root ? 'says it needs root' : 'says it does not need root')
    t.match(help, /-h, --help/)
    const lines = help.split('\n')
    const documented = documentedOptions(file)
    for (const [name, value] of documented) {
      const at = lines.findIndex(l => l.startsWith(`  --${name} `) || l.trimEnd() === `  --${name}` || l.startsWith(`  --${name}  `))
      t.ok(at >= 0, `--${name} (from the doc comment) is in --help`)
      if (value === undefined || at < 0) continue
      // The option's text may wrap: its lines run to the next option.
      const end = lines.findIndex((l, i) => i > at && /^ {2}-/.test(l))
      const entry = lines.slice(at, end === -1 ? undefined : end).join(' ').replace(/\s+/g, ' ')
      if (/^[A-Z]+$/.test(value)) t.match(entry, `--${name} ${value}`, `--${name} takes ${value}`)
      else t.match(entry, `(default ${value})`, `--${name} defaults to ${value}, as the doc comment says`)
    }
    for (const line of lines) {
      const m = /^ {2}--([a-z0-9.-]+)/.exec(line)
      if (m !== null && m[1] !== 'help') t.ok(documented.has(m[1]), `--${m[1]} (in --help) is in the doc comment`)
    }
    const source = readFileSync(join(ROOT, file), 'utf8')
    const doc = source.slice(source.indexOf('/**'), source.indexOf('*/'))
    for (const name of new Set(doc.match(/\b(?:BENCH_[A-Z]+|CC_TEST_DATABASE_URL)\b/g) ?? [])) t.match(help, name, `${name} is in --help`)
  })

  t.test(`${file}: an unknown option is one line on stderr and exit 2`, async t => {
    const r = bench(file, ['--no-such-option'])
    t.equal(r.code, 2)
    t.equal(r.stdout, '')
    t.match(r.stderr, ONE_LINE(file))
    t.match(r.stderr, /unknown option '--no-such-option'/)
    t.notMatch(r.stderr, /\n\s+at /, 'no stack trace')
    const positional = bench(file, ['extra'])
    t.equal(positional.code, 2, 'a positional argument is refused too')
    t.match(positional.stderr, ONE_LINE(file))
  })
}

t.test('a bad value is one line on stderr and exit 2', async t => {
  const cases: Array<[string, string[], NodeJS.ProcessEnv, RegExp]> = [
    ['bench/e2e.ts', ['--runs', '0'], {}, /--runs must be a number in \[1, 10\]/],
    ['bench/netstack.ts', ['--loss', '0.5'], {}, /--loss must be a number in \[0, 0\.2\]/],
    ['bench/netstack-sim.ts', ['--queue-kb', '0'], {}, /--queue-kb must be a number in \[1, 100000\]/],
    ['bench/netstack-sim.ts', ['--bandwidth-mbps', 'fast'], {}, /--bandwidth-mbps must be a number/],
    ['bench/lab-baseline.ts', ['--wrk-seconds', 'ten'], {}, /--wrk-seconds must be a number/],
    ['bench/edge.ts', ['--rounds', '9'], {}, /--rounds must be a number in \[1, 5\]/],
    ['bench/edge.ts', ['--log-level', 'loud'], {}, /--log-level must be one of/],
    ['bench/edge.ts', ['--size-mb'], {}, /'--size-mb <value>' argument missing/],
    ['bench/edge.ts', ['--runs', '--rounds', '1'], {}, /'--runs' argument is ambiguous/],
    ['bench/edge.ts', ['--edges', '2:0,1'], {}, /--edges: 1 is not WORKERS:CPUS/],
    ['bench/edge.ts', ['--edges', '9:all'], {}, /--edges must be a number in \[1, 4\]/],
    ['bench/e2e.ts', ['--connections', '8,0'], {}, /--connections must be a number in \[1, 1000\]/],
    ['bench/e2e.ts', ['--connections', '1,2,3,4,5,6,7'], {}, /--connections takes at most 6 values/],
    ['bench/scale.ts', ['--storm-rates', '1000,0'], {}, /--storm-rates must be a number in \[1, 200000\]/],
    ['bench/scale.ts', ['--storm-s', '99'], {}, /--storm-s must be a number in \[1, 60\]/],
    ['bench/scale.ts', ['--settle-s', '121'], {}, /--settle-s must be a number in \[0, 120\]/],
    ['bench/control.ts', [], {}, /set CC_TEST_DATABASE_URL or DATABASE_URL/],
    ['bench/control.ts', [], { CC_TEST_DATABASE_URL: 'postgres://127.0.0.1:1/none', BENCH_SECONDS: '0' }, /BENCH_SECONDS must be a number in \[1, 30\]/],
    ['bench/crypto.ts', [], { BENCH_MS: '5' }, /BENCH_MS must be a number in \[100, 10000\]/],
  ]
  for (const [file, args, env, message] of cases) {
    const r = bench(file, args, env)
    const what = `${file} ${args.join(' ')}`
    t.equal(r.code, 2, what)
    t.match(r.stderr, ONE_LINE(file), `${what}: one line`)
    t.match(r.stderr, message, what)
  }
})

t.test('bench/edge-server.ts (internal) refuses anything but its JSON settings in one line', async t => {
  for (const args of [['--help'], [], ['{}'], ['not json']]) {
    const r = bench('bench/edge-server.ts', args)
    t.equal(r.code, 2, JSON.stringify(args))
    t.match(r.stderr, /^bench\/edge-server\.ts: [^\n]+\n$/)
  }
})

t.test('bench/run.ts', async t => {
  t.test('--help lists every bench with what it needs', async t => {
    const r = bench('bench/run.ts', ['--help'])
    t.equal(r.code, 0)
    for (const name of ['crypto', 'control', 'netstack', 'edge', 'e2e', 'lab-baseline']) {
      t.match(r.stdout, new RegExp(`\\n {2}${name} +\\S[^\\n]*\\n {4,}needs: `), `${name} and its needs`)
      t.ok(existsSync(join(ROOT, `bench/${name}.ts`)), `bench/${name}.ts exists`)
    }
    t.match(r.stdout, /needs: [^\n]*Postgres URL in CC_TEST_DATABASE_URL/)
    t.match(r.stdout, /needs: [^\n]*root/)
    t.match(r.stdout, /default: crypto, control, netstack, edge, e2e\)/)
  })

  t.test('an unknown bench name is refused', async t => {
    const r = bench('bench/run.ts', ['netstack', 'nope'])
    t.equal(r.code, 2)
    t.match(r.stderr, /^bench\/run\.ts: unknown bench 'nope' [^\n]+\(see --help\)\n$/)
    t.equal(r.stdout, '', 'nothing ran')
  })

  t.test('missing needs: skipped with the reason, exit 0', async t => {
    const r = bench('bench/run.ts', ['control', 'edge'])
    t.equal(r.code, 0)
    t.match(r.stdout, /control +skipped: CC_TEST_DATABASE_URL \(or DATABASE_URL\) is not set/)
    t.match(r.stdout, /edge +skipped: nginx is not on PATH/)
  })

  t.test('a bench that ran and failed makes the exit status non-zero', async t => {
    // control with its needs met by a stand-in wrk, and a setting it refuses: it exits 2 at once.
    const bin = mkdtempSync(join(tmpdir(), 'cc-bench-cli-'))
    t.teardown(() => rmSync(bin, { recursive: true, force: true }))
    writeFileSync(join(bin, 'wrk'), '#!/bin/sh\nexit 1\n')
    chmodSync(join(bin, 'wrk'), 0o755)
    const r = bench('bench/run.ts', ['control'], { PATH: `${bin}:${NODE_ONLY_PATH}`, CC_TEST_DATABASE_URL: 'postgres://127.0.0.1:1/none', BENCH_SECONDS: '0' })
    t.equal(r.code, 1)
    t.match(r.stdout, /== control: node bin\/run-ts\.js bench\/control\.ts/)
    t.match(r.stdout, /control +FAILED: exit status 2/)
    t.match(r.stderr, /BENCH_SECONDS must be/, "the bench's own output is streamed")
  })
})

t.test('parseBenchArgv', async t => {
  const spec = {
    name: 'bench/x.ts',
    about: 'Measures x.',
    options: {
      'size-mb': { type: 'string', default: '100', value: 'MB', help: 'size' },
      profile: { type: 'string', value: 'DIR', help: 'profile' },
      quick: { type: 'boolean', default: false, help: 'quick' },
    },
  } as const
  const parsed = parseBenchArgv(spec, ['--size-mb=5', '--quick'])
  t.same(parsed, { help: false, values: { 'size-mb': '5', quick: true }, positionals: [] }, '--name=value, booleans; no value for an absent option without default')
  t.same(parseBenchArgv(spec, []), { help: false, values: { 'size-mb': '100', quick: false }, positionals: [] }, 'defaults')
  t.same(parseBenchArgv(spec, ['--size-mb', '1', '-h']), { help: true })
  t.throws(() => parseBenchArgv(spec, ['--quick=yes']), UsageError)
  t.throws(() => parseBenchArgv(spec, ['x']), { name: 'UsageError', message: /^unexpected argument 'x'$/ })
  t.same(parseBenchArgv({ ...spec, positionals: '[X...]' }, ['a', 'b']), { help: false, values: { 'size-mb': '100', quick: false }, positionals: ['a', 'b'] })
  t.throws(() => numberOption('runs', '3.5x', 1, 10), { name: 'UsageError', message: '--runs must be a number in [1, 10]' })
  t.throws(() => numberOption('runs', ' ', 1, 10), UsageError)
  t.equal(numberOption('runs', '10', 1, 10), 10)

  const usage = usageText(spec)
  t.match(usage, /^Usage: node bin\/run-ts\.js bench\/x\.ts \[options\]\n\nMeasures x\.\n\nOptions:\n/)
  t.match(usage, /\n {2}--size-mb MB +size \(default 100\)\n/)
  t.match(usage, /\n {2}--profile DIR +profile\n/)
  t.match(usage, /\n {2}--quick +quick\n/)
  for (const line of usageText({ ...spec, options: { ...spec.options, quick: { ...spec.options.quick, help: 'word '.repeat(60) } } }).split('\n')) {
    t.ok(line.length <= 100, `wrapped to 100 columns: ${line.length}`)
  }
})

/**
 * A script standing in for a bench: registers an exit cleanup (onExitCleanup of test/helpers/lab.ts,
 * as the lab benches and bench/edge.ts do) that removes `dir`, says "ready", then runs `then`.
 */
function standIn (dir: string, then: string): ReturnType<typeof spawn> {
  const code = [
    "import { rmSync } from 'node:fs'",
    "import { onExitCleanup } from './test/helpers/lab.ts'",
    "import { exitOnBrokenPipe } from './bench/baseline/cli.ts'",
    'exitOnBrokenPipe()',
    `onExitCleanup(() => rmSync(${JSON.stringify(dir)}, { recursive: true, force: true }))`,
    "process.stderr.write('ready\\n')",
    then,
  ].join('\n')
  // Through env(1): tap's process-info hook puts its NODE_OPTIONS back into what this process spawns.
  return spawn('/usr/bin/env', ['-u', 'NODE_OPTIONS', process.execPath, '--import=tsx', '--input-type=module', '-e', code], { cwd: ROOT, env: userEnv(), stdio: ['ignore', 'pipe', 'pipe'] })
}

async function ready (child: ReturnType<typeof spawn>): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    let err = ''
    const timer = setTimeout(() => reject(new Error(`not ready: ${err}`)), 30_000)
    child.stderr!.on('data', (b: Buffer) => {
      err += b.toString()
      if (err.includes('ready\n')) { clearTimeout(timer); resolve() }
    })
  })
}

function exited (child: ReturnType<typeof spawn>): Promise<{ code: number | null, signal: NodeJS.Signals | null }> {
  return new Promise(resolve => child.on('exit', (code, signal) => resolve({ code, signal })))
}

function scratch (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'cc-bench-cleanup-'))
  mkdirSync(join(dir, 'files'))
  writeFileSync(join(dir, 'files', 'bulk.bin'), 'x')
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

t.test('a bench stopped by a signal runs its exit cleanups and exits 128 + the signal', async t => {
  for (const [signal, status] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
    const dir = scratch(t)
    const child = standIn(dir, 'setInterval(() => {}, 1000)')
    const done = exited(child)
    await ready(child)
    t.ok(existsSync(dir), 'still there while it runs')
    child.kill(signal)
    t.same(await done, { code: status, signal: null }, signal)
    t.notOk(existsSync(dir), `${signal}: removed`)
  }
})

t.test('output piped into a reader that quits (| head): exit 141, cleanups run, no EPIPE exception', async t => {
  const dir = scratch(t)
  const child = standIn(dir, "setInterval(() => process.stdout.write('x'.repeat(4096) + '\\n'), 5)")
  const done = exited(child)
  let stderr = ''
  child.stderr!.on('data', (b: Buffer) => { stderr += b.toString() })
  await ready(child)
  child.stdout!.destroy()
  t.same(await done, { code: 141, signal: null })
  t.notOk(existsSync(dir), 'removed')
  t.notMatch(stderr, /EPIPE|\n\s+at /, 'no exception printed')
})
