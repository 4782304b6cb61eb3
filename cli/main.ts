/**
 * The `cloud-connect` command dispatcher. Each command lives in its own module under cli/commands and
 * exports `run(argv)` plus a one-line summary; this file only routes and prints help.
 */
import { commands } from './commands/index.ts'
import { CliError } from './errors.ts'

function usage (): string {
  const width = Math.max(...Object.keys(commands).map(n => n.length))
  const list = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`).join('\n')
  return `Usage: cloud-connect <command> [options]

Erugo Cloud Connect: public HTTPS for self-hosted Erugo containers over WireGuard.

Commands:
${list}

Run 'cloud-connect <command> --help' for a command's options.
`
}

export async function main (argv: string[]): Promise<void> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(usage())
    return
  }
  const command = commands[name]
  if (command === undefined) {
    process.stderr.write(`cloud-connect: unknown command '${name}'\n\n${usage()}`)
    process.exitCode = 2
    return
  }
  try {
    await command.run(rest)
  } catch (err) {
    if (err instanceof CliError) {
      process.stderr.write(`cloud-connect ${name}: ${err.message}\n`)
      process.exitCode = err.exitCode
      return
    }
    throw err
  }
}
