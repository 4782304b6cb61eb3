import { parseArgs } from 'node:util'

/** A user-facing failure: printed as one line (no stack) and mapped to an exit code. */
export class CliError extends Error {
  readonly exitCode: number
  constructor (message: string, exitCode = 1) {
    super(message)
    this.name = 'CliError'
    this.exitCode = exitCode
  }
}

/**
 * For commands whose only option is --help: prints `help` and returns true when asked for it;
 * anything else on the command line is a usage error (exit status 2).
 */
export function helpRequested (argv: string[], help: string): boolean {
  let values: { help?: boolean }
  try {
    ({ values } = parseArgs({ args: argv, options: { help: { type: 'boolean', short: 'h' } }, strict: true }))
  } catch (err) {
    throw new CliError((err as Error).message, 2)
  }
  if (values.help !== true) return false
  process.stdout.write(help)
  return true
}
