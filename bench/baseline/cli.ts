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

/** Two decimals, for ratios and seconds in the JSON the benchmarks print. */
export const round2 = (v: number): number => Math.round(v * 100) / 100
