/** `cloud-connect pubkey`: reads a private key on stdin and prints its public key, as `wg pubkey` does. */
import { decodeKey, encodeKey, publicKeyFromPrivate } from '../../proto/noise/keys.ts'
import { CliError, helpRequested } from '../errors.ts'

const HELP = `Usage: cloud-connect pubkey < private.key

Reads a base64 WireGuard private key on standard input and prints the matching public key
(like 'wg pubkey'). Exits with status 1 on malformed input.
`

/** Longer input than this is not a key; stop reading instead of buffering it. */
const MAX_INPUT = 4096

async function readStdin (): Promise<string> {
  const chunks: Buffer[] = []
  let length = 0
  for await (const chunk of process.stdin) {
    const buf = chunk as Buffer
    length += buf.length
    if (length > MAX_INPUT) throw new CliError('input is not a key (too long)')
    chunks.push(buf)
  }
  return Buffer.concat(chunks).toString('utf8')
}

export async function run (argv: string[]): Promise<void> {
  if (helpRequested(argv, HELP)) return
  // `wg pubkey` accepts surrounding whitespace (a trailing newline from `wg genkey`), nothing else.
  const text = (await readStdin()).trim()
  let privateKey: Buffer
  try {
    privateKey = decodeKey(text)
  } catch {
    throw new CliError('input is not a private key (44 characters of base64, as wg genkey prints)')
  }
  process.stdout.write(encodeKey(publicKeyFromPrivate(privateKey)) + '\n')
}
