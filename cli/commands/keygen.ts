/** `cloud-connect keygen`: prints a new private key, as `wg genkey` does. */
import { parseArgs } from 'node:util'
import { generatePrivateKey, encodeKey } from '../../proto/noise/keys.ts'
import { CliError } from '../errors.ts'

const HELP = `Usage: cloud-connect keygen

Prints a new random WireGuard private key (base64, like 'wg genkey').
Derive its public key with: cloud-connect keygen | cloud-connect pubkey
`

export async function run (argv: string[]): Promise<void> {
  let help: boolean | undefined
  try {
    ({ values: { help } } = parseArgs({ args: argv, options: { help: { type: 'boolean', short: 'h' } }, strict: true }))
  } catch (err) {
    throw new CliError((err as Error).message, 2)
  }
  if (help === true) {
    process.stdout.write(HELP)
    return
  }
  process.stdout.write(encodeKey(generatePrivateKey()) + '\n')
}
