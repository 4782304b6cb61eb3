/**
 * What the benchmarks share as programs: "am I the script being run", their command line (parsed
 * with node:util parseArgs, --help from the same option table, one-line errors) and bounded
 * numeric options.
 */
import { spawnSync } from 'node:child_process'
import { constants } from 'node:os'
import { resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { OPENSSL_CAPS_MASK } from '../../proto/noise/native-aead.ts'
import { UDP_IO_CHOICES, UDP_IO_SETTINGS, type UdpIoSetting } from '../../gateway/wireguard/socket.ts'

/** True when the module at `moduleUrl` is the file node was asked to run (not an import). */
export function isMain (moduleUrl: string): boolean {
  return process.argv[1] !== undefined && moduleUrl === pathToFileURL(resolve(process.argv[1])).href
}

/**
 * Benches measure the gateway as it ships: unless the caller chose an OPENSSL_ia32cap, the bench
 * runs itself again (same arguments) with the shipped one, which OpenSSL only reads at start-up.
 * Returns the setting in force, for the results.
 */
export function withShippedOpensslCaps (): string {
  const current = process.env.OPENSSL_ia32cap
  if (current !== undefined) return current
  const runTs = fileURLToPath(new URL('../../bin/run-ts.js', import.meta.url))
  const r = spawnSync(process.execPath, [...process.execArgv, runTs, ...process.argv.slice(1)], {
    stdio: 'inherit', env: { ...process.env, OPENSSL_ia32cap: OPENSSL_CAPS_MASK },
  })
  process.exit(r.status ?? (r.signal !== null ? 128 + (constants.signals[r.signal] ?? 0) : 1))
}

/** A command line (or environment setting) a bench refuses: shown as one line, never a stack trace. */
export class UsageError extends Error {
  override readonly name = 'UsageError'
}

/** `value` as a number, refused unless it is one in [min, max]; `label` names it in the error. */
export function numberSetting (label: string, value: string | undefined, min: number, max: number): number {
  const n = Number(value)
  if (value === undefined || value.trim() === '' || !Number.isFinite(n) || n < min || n > max) throw new UsageError(`${label} must be a number in [${min}, ${max}]`)
  return n
}

/** The numeric value of option --name, refused unless it is a number in [min, max]. */
export function numberOption (name: string, value: string | undefined, min: number, max: number): number {
  return numberSetting(`--${name}`, value, min, max)
}

/** The --udp-io option of the benches that run our gateway: which WireGuard socket it uses. */
export function udpIoOption (value: string | undefined): UdpIoSetting {
  const setting = UDP_IO_SETTINGS.find(s => s === value)
  if (setting === undefined) throw new UsageError(`--udp-io must be ${UDP_IO_CHOICES} (got ${JSON.stringify(value)})`)
  return setting
}

/** One option of a bench: parseArgs' settings and its line in --help. */
export interface BenchOption {
  type: 'string' | 'boolean'
  default?: string | boolean
  /** Placeholder for a string option's value in --help (`--size-mb MB`). */
  value?: string
  help: string
}

export type BenchOptions = Record<string, BenchOption>

export interface BenchSpec<O extends BenchOptions> {
  /** The file as run (`bench/edge.ts`): the usage line and the prefix of error lines. */
  name: string
  /** What it measures and what it needs (root, tools): the text above the options. */
  about: string
  options: O
  /** Positional arguments for the usage line (`[BENCH...]`); none are accepted without it. */
  positionals?: string
  /** Environment variables read, each with its meaning and default. */
  env?: Record<string, string>
}

type ValueOf<B extends BenchOption> = B['type'] extends 'boolean'
  ? (B extends { default: boolean } ? boolean : boolean | undefined)
  : (B extends { default: string } ? string : string | undefined)

/** The parsed options, typed from the option table. */
export type BenchValues<O extends BenchOptions> = { -readonly [K in keyof O]: ValueOf<O[K]> }

export type ParsedBenchArgs<O extends BenchOptions> =
  | { help: true }
  | { help: false, values: BenchValues<O>, positionals: string[] }

const HELP: BenchOption = { type: 'boolean', help: 'print this text and exit' }

/** The --help text: usage line, what the bench does, every option with its default, environment. */
export function usageText<O extends BenchOptions> (spec: BenchSpec<O>): string {
  const rows: Array<[string, string]> = Object.entries(spec.options).map(([name, o]) => [
    `--${name}${o.type === 'string' ? ` ${o.value ?? 'VALUE'}` : ''}`,
    typeof o.default === 'string' ? `${o.help} (default ${o.default})` : o.help,
  ])
  rows.push(['-h, --help', HELP.help])
  const env = Object.entries(spec.env ?? {})
  const width = Math.min(28, Math.max(...rows.map(r => r[0].length), ...env.map(e => e[0].length)) + 2)
  const table = (entries: Array<[string, string]>): string =>
    entries.map(([left, right]) => `  ${left.padEnd(width)}${left.length >= width ? `\n  ${' '.repeat(width)}` : ''}${wrap(right, width + 2)}\n`).join('')
  return `Usage: node bin/run-ts.js ${spec.name} [options]${spec.positionals !== undefined ? ` ${spec.positionals}` : ''}\n\n` +
    `${spec.about.trim()}\n\nOptions:\n${table(rows)}` +
    (env.length > 0 ? `\nEnvironment:\n${table(env)}` : '')
}

/** `text` in lines of at most 100 columns, the ones after the first indented by `indent`. */
function wrap (text: string, indent: number): string {
  const lines: string[] = []
  let line = ''
  for (const word of text.split(/\s+/)) {
    if (line !== '' && indent + line.length + 1 + word.length > 100) {
      lines.push(line)
      line = word
    } else {
      line = line === '' ? word : `${line} ${word}`
    }
  }
  lines.push(line)
  return lines.join(`\n${' '.repeat(indent)}`)
}

/** parseArgs' message, first sentence only (some run over three lines). */
function shortMessage (err: Error): string {
  const first = err.message.split('\n')[0].split('. ')[0].replace(/\.$/, '')
  return first.charAt(0).toLowerCase() + first.slice(1)
}

/** Parses `argv` against the option table; throws UsageError for anything it refuses. */
export function parseBenchArgv<O extends BenchOptions> (spec: BenchSpec<O>, argv: string[]): ParsedBenchArgs<O> {
  const options: Record<string, { type: 'string' | 'boolean', default?: string | boolean, short?: string }> = {}
  for (const [name, o] of Object.entries(spec.options)) options[name] = o.default === undefined ? { type: o.type } : { type: o.type, default: o.default }
  options.help = { type: 'boolean', short: 'h' }
  let parsed: ReturnType<typeof parseArgs>
  try {
    parsed = parseArgs({ args: argv, options, strict: true, allowPositionals: spec.positionals !== undefined })
  } catch (err) {
    if ((err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS_') === true) throw new UsageError(shortMessage(err as Error))
    throw err
  }
  if (parsed.values.help === true) return { help: true }
  const { help: _help, ...values } = parsed.values
  return { help: false, values: values as BenchValues<O>, positionals: parsed.positionals }
}

/**
 * A bench's command line, for its main: parses process.argv, then `convert` turns the values into
 * the bench's settings. --help / -h prints the usage on stdout and exits 0; a UsageError (unknown
 * option, missing or bad value, from parsing or from `convert`) prints one line
 * `<bench>: <what is wrong> (see --help)` on stderr and exits 2.
 */
export function parseBenchArgs<O extends BenchOptions, T> (spec: BenchSpec<O>, convert: (values: BenchValues<O>, positionals: string[]) => T,
  argv: string[] = process.argv.slice(2)): T {
  try {
    const parsed = parseBenchArgv(spec, argv)
    if (parsed.help) {
      process.stdout.write(usageText(spec))
      process.exit(0)
    }
    return convert(parsed.values, parsed.positionals)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`${spec.name}: ${err.message} (see --help)\n`)
    process.exit(2)
  }
}

/**
 * Output piped into a program that stops reading (`| head`): exit as if killed by SIGPIPE (141)
 * instead of dying on an EPIPE exception, so that the exit hooks (onExitCleanup in
 * test/helpers/lab.ts) stop what the bench started.
 */
export function exitOnBrokenPipe (): void {
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code === 'EPIPE') process.exit(141)
      throw err
    })
  }
}

/** --size-mb and --runs: every lab benchmark moves a file of that size, that many times each way. */
export const TRANSFER_OPTIONS = {
  'size-mb': { type: 'string', default: '100', value: 'MB', help: 'size of the bulk file in 10^6 bytes, 1-2000' },
  runs: { type: 'string', default: '3', value: 'N', help: 'bulk transfers each way, 1-10' },
} as const

/** wrk's run length and connections, for the benchmarks that measure small requests. */
export function wrkOptions (connections: number) {
  return {
    'wrk-seconds': { type: 'string', default: '10', value: 'S', help: 'seconds of wrk on the 1 KiB file, 1-60' },
    'wrk-connections': { type: 'string', default: String(connections), value: 'N', help: 'wrk connections, 1-1000' },
  } as const
}

type Values = Record<string, string | boolean | undefined>

export function transferValues (values: Values): { sizeMB: number, runs: number } {
  return {
    sizeMB: numberOption('size-mb', values['size-mb'] as string | undefined, 1, 2000),
    runs: numberOption('runs', values.runs as string | undefined, 1, 10),
  }
}

export function wrkValues (values: Values): { wrkSeconds: number, wrkConnections: number } {
  return {
    wrkSeconds: numberOption('wrk-seconds', values['wrk-seconds'] as string | undefined, 1, 60),
    wrkConnections: numberOption('wrk-connections', values['wrk-connections'] as string | undefined, 1, 1000),
  }
}

/** Two decimals, for ratios and seconds in the JSON the benchmarks print. */
export const round2 = (v: number): number => Math.round(v * 100) / 100
