/**
 * The split deployment `start` stands in for: `cloud-connect control` (API + RPC listener) and
 * `cloud-connect gateway --control URL` as two processes. The gateway's hello gives control the
 * key and endpoint it hands out; a gateway restarted while control is down serves its stored
 * configuration; both stop cleanly on SIGTERM; a missing secret is one line and exit 2.
 */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { CLI, REPO_ROOT, json, spawnCli, type CliProcess } from '../helpers/cli-process.ts'

const SECRET = 'split-test-secret-0123456789-abcdefghijklmnopqrstu'

function cleanEnv (extra: Record<string, string>): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, CC_LOG_LEVEL: 'info', ...extra }
  for (const name of ['DATABASE_URL', 'CC_GATEWAY_PUBLIC_KEY', 'CC_GATEWAY_ENDPOINT', 'CC_CONTROL_URL', 'CC_SMTP_URL']) if (!(name in extra)) delete env[name]
  return env
}

/** The first JSON log line whose msg is `msg`. */
async function logLine (p: CliProcess, msg: string, ms = 90_000): Promise<Record<string, any>> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const deadline = Date.now() + ms
  for (;;) {
    const line = p.output.text.split('\n').find(l => l.includes(`"msg":"${msg}"`))
    if (line !== undefined) return JSON.parse(line)
    if (Date.now() > deadline || p.child.exitCode !== null) throw new Error(`no "${msg}" line; output:\n${p.output.text}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

t.test('control + gateway --control: hello feeds the credentials; restart with control down serves the stored configuration', async t => {
  const controlDir = mkdtempSync(join(tmpdir(), 'cc-split-control-'))
  const gatewayDir = mkdtempSync(join(tmpdir(), 'cc-split-gateway-'))
  t.teardown(() => { rmSync(controlDir, { recursive: true, force: true }); rmSync(gatewayDir, { recursive: true, force: true }) })

  const control = spawnCli(t, ['control'], cleanEnv({
    CC_DATA_DIR: controlDir, CC_API_HOST: '127.0.0.1', CC_API_PORT: '0', CC_RPC_PORT: '0', CC_GATEWAY_SECRET: SECRET,
    CC_BASE_DOMAIN: 'erugo.test', CC_ARGON2_MEMORY_KIB: '64', CC_ARGON2_TIME_COST: '1', CC_REPORT_INTERVAL: '0.5',
  }))
  const apiUrl = (await logLine(control, 'control API listening')).url as string
  const rpcUrl = (await logLine(control, 'gateway RPC listening')).url as string
  t.match(rpcUrl, /^http:\/\/127\.0\.0\.1:\d+$/, 'the RPC listener binds loopback by default')

  const gatewayEnv = cleanEnv({ CC_DATA_DIR: gatewayDir, CC_WG_HOST: '127.0.0.1', CC_WG_PORT: '0', CC_EDGE: '0', CC_GATEWAY_SECRET: SECRET, CC_GATEWAY_ENDPOINT: 'gw1.erugo.test:51820', CC_GATEWAY_ID: 'gw-split' })
  const gateway = spawnCli(t, ['gateway', '--control', rpcUrl], gatewayEnv)
  const listening = await logLine(gateway, 'gateway listening')
  t.equal(listening.address, '10.100.0.1', 'tunnel address from control')
  t.equal(listening.gatewayId, 'gw-split')
  await logLine(gateway, 'control plane accepted hello')

  // A user and an instance: the credentials name the gateway that said hello.
  const email = `split-${process.pid}@example.com`
  const password = 'correct horse battery'
  t.equal((await json(`${apiUrl}/v1/auth/register`, 'POST', { name: 'Split', email, password, password_confirmation: password, accept_terms: true, accept_privacy: true, accept_marketing: false, erugo_version: '1.0.0' })).status, 201)
  const outbox = join(controlDir, 'outbox')
  let token: string | undefined
  for (let i = 0; i < 100 && token === undefined; i++) {
    for (const f of existsSync(outbox) ? readdirSync(outbox) : []) token ??= /verify-email\?token=([^\s&]+)/.exec(readFileSync(join(outbox, f), 'utf8'))?.[1]
    if (token === undefined) await new Promise(resolve => setTimeout(resolve, 50))
  }
  t.equal((await json(`${apiUrl}/v1/auth/verify-email?token=${token!}`)).status, 200)
  const access = (await json(`${apiUrl}/v1/auth/login`, 'POST', { email, password })).body.access_token as string
  const created = await json(`${apiUrl}/v1/instances`, 'POST', { name: 'Split', subdomain: 'split' }, access)
  t.equal(created.status, 201, 'no configured key: the hello made creation possible')
  t.equal(created.body.credentials.wireguard.server_public_key, listening.publicKey)
  t.equal(created.body.credentials.wireguard.server_endpoint, 'gw1.erugo.test:51820')
  t.equal((await json(`${apiUrl}/v1/tunnel/register`, 'POST', { public_key: '1y8JgBgNarojHK12KYbAAy+7HqZq2HGsE0Qw24toBXo=' }, created.body.credentials.instance_token)).status, 200)
  const applied = async (): Promise<boolean> => gateway.output.text.split('\n').some(l => l.includes('"msg":"configuration applied"') && l.includes('"peers":1'))
  for (let i = 0; i < 100 && !await applied(); i++) await new Promise(resolve => setTimeout(resolve, 50))
  t.ok(await applied(), 'the registered peer reached the gateway')
  const stored = JSON.parse(readFileSync(join(gatewayDir, 'gateway-snapshot.json'), 'utf8'))
  t.same(stored.peers.map((p: { hostnames: string[] }) => p.hostnames), [['split.erugo.test']], 'snapshot stored in the data dir')

  // Control goes away; the gateway keeps running, then restarts from its stored snapshot.
  control.child.kill('SIGTERM')
  t.equal(await control.exited, 0, 'control: clean exit')
  await logLine(gateway, 'control plane unreachable: serving the last configuration', 30_000)
  gateway.child.kill('SIGTERM')
  t.equal(await gateway.exited, 0, 'gateway: clean exit')

  const again = spawnCli(t, ['gateway', '--control', rpcUrl], gatewayEnv)
  const restarted = await logLine(again, 'gateway listening', 30_000)
  t.equal(restarted.publicKey, listening.publicKey, 'same key from the data dir')
  t.match(again.output.text, /serving the stored configuration until control answers/)
  t.match(again.output.text, /"peers":1,"source":"stored"[^\n]*"msg":"configuration applied"/, 'the stored peer is served')
  again.child.kill('SIGTERM')
  t.equal(await again.exited, 0)
})

t.test('gateway --control: settings errors are one line, exit 2', async t => {
  const cases: Array<[string[], Record<string, string>, RegExp]> = [
    [['gateway', '--control', 'http://127.0.0.1:1'], {}, /^cloud-connect gateway: --control needs the gateway secret/],
    [['gateway', '--control', 'ftp://x', '--secret', SECRET], {}, /^cloud-connect gateway: --control: /],
    [['gateway', '--control', 'http://127.0.0.1:1'], { CC_GATEWAY_SECRET: SECRET, CC_WG_PORT: 'many' }, /^cloud-connect gateway: CC_WG_PORT: /],
    [['gateway', '--control', 'http://127.0.0.1:1'], { CC_GATEWAY_SECRET: 'short' }, /^cloud-connect gateway: CC_GATEWAY_SECRET: /],
    [['gateway', '--config', 'x.json', '--control', 'http://127.0.0.1:1'], {}, /not both/],
  ]
  for (const [args, extra, pattern] of cases) {
    const r = spawnSync(process.execPath, [CLI, ...args], { cwd: REPO_ROOT, env: cleanEnv(extra), encoding: 'utf8', timeout: 60_000 })
    t.equal(r.status, 2, `${args.join(' ')}: exit 2`)
    t.equal(r.stderr.trim().split('\n').length, 1, 'one line')
    t.match(r.stderr, pattern)
    t.notMatch(r.stderr, /short/, 'a secret is never echoed')
  }
  const help = spawnSync(process.execPath, [CLI, 'gateway', '--help'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000 })
  t.equal(help.status, 0)
  for (const word of ['--control URL', 'CC_GATEWAY_SECRET', 'CC_WG_PORT', 'CC_HTTPS_PORT', '"hostnames"', '"edge"']) t.match(help.stdout, word)
  const controlHelp = spawnSync(process.execPath, [CLI, 'control', '--help'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000 })
  t.equal(controlHelp.status, 0)
  for (const word of ['CC_RPC_PORT', 'CC_RPC_HOST', 'CC_GATEWAY_SECRET', 'CC_RPC_WAIT']) t.match(controlHelp.stdout, word)
})
