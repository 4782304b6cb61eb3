/** `cloud-connect keygen` / `pubkey`, spawned as a user would run them. */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { requireWg } from '../helpers/require.ts'

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..')
const CLI = join(ROOT, 'bin/cloud-connect.js')

function cli (args: string[], input?: string): { code: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { input, encoding: 'utf8', cwd: ROOT, timeout: 30_000 })
  return { code: r.status, stdout: r.stdout, stderr: r.stderr }
}

t.test('keygen prints a clamped 32-byte key in wg format', async t => {
  const a = cli(['keygen'])
  const b = cli(['keygen'])
  t.equal(a.code, 0)
  t.match(a.stdout, /^[A-Za-z0-9+/]{43}=\n$/)
  t.not(a.stdout, b.stdout, 'random')
  const key = Buffer.from(a.stdout.trim(), 'base64')
  t.equal(key.length, 32)
  t.equal(key[0] & 7, 0, 'RFC 7748 clamping: low bits clear')
  t.equal(key[31] & 0xc0, 0x40, 'RFC 7748 clamping: top bit clear, second bit set')
})

t.test('pubkey: RFC 7748 section 6.1 test vector (Alice)', async t => {
  const priv = Buffer.from('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a', 'hex').toString('base64')
  const pub = Buffer.from('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a', 'hex').toString('base64')
  const r = cli(['pubkey'], `${priv}\n`)
  t.equal(r.code, 0)
  t.equal(r.stdout, `${pub}\n`)
})

t.test('keygen | pubkey matches wg pubkey', async t => {
  if (!requireWg(t)) return
  for (let i = 0; i < 3; i++) {
    const priv = cli(['keygen']).stdout
    const ours = cli(['pubkey'], priv)
    const theirs = spawnSync('wg', ['pubkey'], { input: priv, encoding: 'utf8' })
    t.equal(ours.stdout, theirs.stdout, `key ${i}`)
  }
  const wgPriv = spawnSync('wg', ['genkey'], { encoding: 'utf8' }).stdout
  t.equal(cli(['pubkey'], wgPriv).stdout, spawnSync('wg', ['pubkey'], { input: wgPriv, encoding: 'utf8' }).stdout, 'a wg genkey key too')
})

t.test('pubkey: bad input is one line on stderr and exit status 1', async t => {
  for (const input of ['', 'hello\n', `${'A'.repeat(42)}B=\n`, 'x'.repeat(10_000)]) {
    const r = cli(['pubkey'], input)
    t.equal(r.code, 1, `input ${JSON.stringify(input.slice(0, 20))}`)
    t.equal(r.stdout, '')
    t.match(r.stderr, /^cloud-connect pubkey: [^\n]+\n$/, 'one line')
  }
})

t.test('--help for every command', async t => {
  for (const command of ['keygen', 'pubkey', 'gateway']) {
    const r = cli([command, '--help'])
    t.equal(r.code, 0, command)
    t.match(r.stdout, new RegExp(`^Usage: cloud-connect ${command}`))
  }
  const r = cli(['keygen', '--bogus'])
  t.equal(r.code, 2, 'unknown option')
})
