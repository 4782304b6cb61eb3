/** `cloud-connect keygen`: prints a new private key, as `wg genkey` does. */
import { generatePrivateKey, encodeKey } from '../../proto/noise/keys.ts'
import { helpRequested } from '../errors.ts'

const HELP = `Usage: cloud-connect keygen

Prints a new random WireGuard private key (base64, like 'wg genkey').
Derive its public key with: cloud-connect keygen | cloud-connect pubkey
`

export async function run (argv: string[]): Promise<void> {
  if (helpRequested(argv, HELP)) return
  process.stdout.write(encodeKey(generatePrivateKey()) + '\n')
}
