/**
 * `cloud-connect gateway --config FILE`: config validation (one line naming the field, exit 2),
 * start-up log, clean stop on SIGTERM.
 */
import t from 'tap'
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { validateConfig, ConfigError } from '../../gateway/config/schema.ts'
import { generatePrivateKey, publicKeyFromPrivate, encodeKey } from '../../proto/noise/index.ts'

const ROOT = resolve(fileURLToPath(import.meta.url), '../../..')
const CLI = join(ROOT, 'bin/cloud-connect.js')
const dir = mkdtempSync(join(tmpdir(), 'cc-cli-gateway-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })

const gatewayKey = encodeKey(generatePrivateKey())
const peerKey = (): string => encodeKey(publicKeyFromPrivate(generatePrivateKey()))
const peerA = peerKey()
const peerB = peerKey()

function base (): Record<string, unknown> {
  return { privateKey: gatewayKey, listenPort: 0, listenAddress: '127.0.0.1', peers: [{ publicKey: peerA, allowedIPs: ['10.100.0.2/32'] }] }
}

function writeConfig (name: string, value: unknown): string {
  const path = join(dir, `${name}.json`)
  writeFileSync(path, typeof value === 'string' ? value : JSON.stringify(value))
  return path
}

t.test('validateConfig: defaults and parsed values', async t => {
  const c = validateConfig({ privateKey: gatewayKey, peers: [{ publicKey: peerA, allowedIPs: ['10.100.0.2/32'], endpoint: '198.18.0.2:51820', persistentKeepalive: 25 }] })
  t.equal(c.listenPort, 51820)
  t.equal(c.listenAddress, '::', 'dual-stack by default')
  t.equal(validateConfig({ privateKey: gatewayKey, listenAddress: '[::1]' }).listenAddress, '::1', 'IPv6 with or without brackets')
  t.same(validateConfig({ privateKey: gatewayKey, peers: [{ publicKey: peerA, allowedIPs: ['10.100.0.2/32'], endpoint: '[2001:db8::2]:51820' }] }).peers[0].endpoint, { address: '2001:db8::2', port: 51820 }, 'an IPv6 peer endpoint')
  t.equal(c.address, 0x0a640001, 'default tunnel address 10.100.0.1')
  t.equal(c.metricsListen, null)
  t.same(c.peers[0].endpoint, { address: '198.18.0.2', port: 51820 })
  t.equal(c.peers[0].persistentKeepalive, 25)
  t.equal(c.peers[0].presharedKey, null)
  t.equal(encodeKey(c.publicKey), encodeKey(publicKeyFromPrivate(Buffer.from(gatewayKey, 'base64'))))
  t.same(validateConfig({ privateKey: gatewayKey, address: '10.100.0.1/16', metricsListen: '[::1]:0' }).metricsListen, { address: '::1', port: 0 })
})

t.test('validateConfig: every bad field is named', async t => {
  const cases: Array<[string, (c: Record<string, unknown>) => void, string]> = [
    ['missing private key', c => { delete c.privateKey }, 'privateKey'],
    ['malformed private key', c => { c.privateKey = 'abc' }, 'privateKey'],
    ['non-canonical key', c => { c.privateKey = `${'A'.repeat(42)}B=` }, 'privateKey'],
    ['port out of range', c => { c.listenPort = 70000 }, 'listenPort'],
    ['bad listen address', c => { c.listenAddress = 'localhost' }, 'listenAddress'],
    ['bad address', c => { c.address = '10.100.0.256' }, 'address'],
    ['bad metricsListen', c => { c.metricsListen = '127.0.0.1' }, 'metricsListen'],
    ['unknown field', c => { c.lisenPort = 1 }, 'lisenPort'],
    ['peer key malformed', c => { c.peers = [{ publicKey: 'nope', allowedIPs: ['10.100.0.2/32'] }] }, 'peers[0].publicKey'],
    ['bad CIDR', c => { c.peers = [{ publicKey: peerA, allowedIPs: ['10.100.0.2/33'] }] }, 'peers[0].allowedIPs[0]'],
    ['CIDR without length', c => { c.peers = [{ publicKey: peerA, allowedIPs: ['10.100.0.2'] }] }, 'peers[0].allowedIPs[0]'],
    ['no allowed IPs', c => { c.peers = [{ publicKey: peerA, allowedIPs: [] }] }, 'peers[0].allowedIPs'],
    ['duplicate public key', c => { c.peers = [{ publicKey: peerA, allowedIPs: ['10.100.0.2/32'] }, { publicKey: peerA, allowedIPs: ['10.100.0.3/32'] }] }, 'peers[1].publicKey'],
    ['overlapping allowed IPs', c => { c.peers = [{ publicKey: peerA, allowedIPs: ['10.100.1.0/24'] }, { publicKey: peerB, allowedIPs: ['10.100.1.3/32'] }] }, 'peers[1].allowedIPs[0]'],
    ['allowed IPs cover the gateway', c => { c.peers = [{ publicKey: peerA, allowedIPs: ['10.100.0.0/16'] }] }, 'peers[0].allowedIPs[0]'],
    ['own key as peer', c => { c.peers = [{ publicKey: encodeKey(publicKeyFromPrivate(Buffer.from(gatewayKey, 'base64'))), allowedIPs: ['10.100.0.2/32'] }] }, 'peers[0].publicKey'],
    ['bad endpoint', c => { c.peers = [{ publicKey: peerA, allowedIPs: ['10.100.0.2/32'], endpoint: 'example.com:51820' }] }, 'peers[0].endpoint'],
    ['endpoint port 0', c => { c.peers = [{ publicKey: peerA, allowedIPs: ['10.100.0.2/32'], endpoint: '198.18.0.2:0' }] }, 'peers[0].endpoint'],
    ['negative keepalive', c => { c.peers = [{ publicKey: peerA, allowedIPs: ['10.100.0.2/32'], persistentKeepalive: -1 }] }, 'peers[0].persistentKeepalive'],
    ['bad psk', c => { c.peers = [{ publicKey: peerA, allowedIPs: ['10.100.0.2/32'], presharedKey: 'x' }] }, 'peers[0].presharedKey'],
    ['fault probability', c => { c.faults = { drop: 2 } }, 'faults.drop'],
    ['testing rekey too small', c => { c.testing = { rekeyAfterTimeMs: 1 } }, 'testing.rekeyAfterTimeMs'],
    ['peers not an array', c => { c.peers = {} }, 'peers'],
  ]
  for (const [name, edit, field] of cases) {
    const c = base()
    edit(c)
    try {
      validateConfig(c)
      t.fail(`${name}: accepted`)
    } catch (err) {
      t.ok(err instanceof ConfigError, `${name}: ConfigError`)
      t.equal((err as ConfigError).field, field, `${name}: names ${field}`)
      t.notMatch((err as Error).message, /\n/, `${name}: one line`)
      t.ok((err as Error).message.startsWith(`${field}: `), `${name}: message starts with the field: ${(err as Error).message}`)
    }
  }
})

t.test('CLI: bad config -> one line naming the field, exit status 2', async t => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['bad-key', { ...base(), peers: [{ publicKey: 'AAAA', allowedIPs: ['10.100.0.2/32'] }] }, /peers\[0\]\.publicKey/],
    ['bad-cidr', { ...base(), peers: [{ publicKey: peerA, allowedIPs: ['10.100.0.0/99'] }] }, /peers\[0\]\.allowedIPs\[0\]/],
    ['dup-key', { ...base(), peers: [{ publicKey: peerA, allowedIPs: ['10.100.0.2/32'] }, { publicKey: peerA, allowedIPs: ['10.100.0.3/32'] }] }, /peers\[1\]\.publicKey: duplicate/],
    ['not-json', '{ "privateKey": ', /not valid JSON/],
  ]
  for (const [name, value, pattern] of cases) {
    const r = spawnSync(process.execPath, [CLI, 'gateway', '--config', writeConfig(name, value)], { encoding: 'utf8', cwd: ROOT, timeout: 30_000 })
    t.equal(r.status, 2, `${name}: exit 2`)
    t.match(r.stderr, /^cloud-connect gateway: config [^\n]+\n$/, `${name}: one line`)
    t.match(r.stderr, pattern, `${name}: names the problem`)
  }
  const missing = spawnSync(process.execPath, [CLI, 'gateway'], { encoding: 'utf8', cwd: ROOT, timeout: 30_000 })
  t.equal(missing.status, 2, 'no --config')
  const level = spawnSync(process.execPath, [CLI, 'gateway', '--config', writeConfig('ok', base()), '--log-level', 'loud'], { encoding: 'utf8', cwd: ROOT, timeout: 30_000 })
  t.equal(level.status, 2, 'bad --log-level')
  t.match(level.stderr, /--log-level/)
})

t.test('CLI: starts, logs its public key and address as JSON, stops on SIGTERM', async t => {
  const path = writeConfig('run', { ...base(), metricsListen: '127.0.0.1:0' })
  const child = spawn(process.execPath, [CLI, 'gateway', '--config', path, '--log-level', 'info'], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
  t.teardown(() => { if (child.exitCode === null) child.kill('SIGKILL') })
  let out = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk: string) => { out += chunk })
  const exited = new Promise<number | null>(resolve => { child.on('exit', code => { resolve(code) }) })
  const deadline = Date.now() + 30_000
  while (!out.includes('gateway listening') && Date.now() < deadline && child.exitCode === null) await new Promise(resolve => setTimeout(resolve, 50))
  const line = out.split('\n').find(l => l.includes('gateway listening'))
  t.ok(line, 'listening line logged')
  const record = JSON.parse(line!) as { level: number, publicKey: string, listen: string, metricsListen: string, address: string }
  t.equal(record.publicKey, encodeKey(publicKeyFromPrivate(Buffer.from(gatewayKey, 'base64'))))
  t.match(record.listen, /^127\.0\.0\.1:\d+$/)
  t.equal(record.address, '10.100.0.1')
  const status = await (await fetch(`http://${record.metricsListen}/status`)).json() as { peers: Array<{ publicKey: string }> }
  t.same(status.peers.map(p => p.publicKey), [peerA])

  // SIGHUP reloads the peer list from the file.
  writeConfig('run', { ...base(), metricsListen: '127.0.0.1:0', peers: [{ publicKey: peerB, allowedIPs: ['10.100.0.3/32'] }] })
  child.kill('SIGHUP')
  let peers: string[] = []
  for (let i = 0; i < 100 && !(peers.length === 1 && peers[0] === peerB); i++) {
    await new Promise(resolve => setTimeout(resolve, 50))
    peers = ((await (await fetch(`http://${record.metricsListen}/status`)).json()) as { peers: Array<{ publicKey: string }> }).peers.map(p => p.publicKey)
  }
  t.same(peers, [peerB], 'peer list replaced on SIGHUP')
  t.match(out, /"msg":"peers reloaded"/)

  child.kill('SIGTERM')
  t.equal(await exited, 0, 'clean exit')
  t.match(out, /"msg":"stopped"/)
})
