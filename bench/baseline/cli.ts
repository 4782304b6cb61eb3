/** What the lab benchmarks share as programs: "am I the script being run" and bounded numeric options. */
import { resolve } from 'node:path'
import { pathToFileURL } from 'node:url'

/** True when the module at `moduleUrl` is the file node was asked to run (not an import). */
export function isMain (moduleUrl: string): boolean {
  return process.argv[1] !== undefined && moduleUrl === pathToFileURL(resolve(process.argv[1])).href
}

/** The numeric value of option --name, refused unless it is a number in [min, max]. */
export function numberOption (name: string, value: string | undefined, min: number, max: number): number {
  const n = Number(value)
  if (value === undefined || value === '' || !Number.isFinite(n) || n < min || n > max) throw new Error(`--${name} must be a number in [${min}, ${max}]`)
  return n
}

type Values = Record<string, string | boolean | Array<string | boolean> | undefined>

/** --size-mb and --runs: every lab benchmark moves a file of that size, that many times each way. */
export const TRANSFER_OPTIONS = {
  'size-mb': { type: 'string', default: '100' },
  runs: { type: 'string', default: '3' },
} as const

/** wrk's run length and connections, for the benchmarks that measure small requests. */
export function wrkOptions (connections: number) {
  return {
    'wrk-seconds': { type: 'string', default: '10' },
    'wrk-connections': { type: 'string', default: String(connections) },
  } as const
}

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
