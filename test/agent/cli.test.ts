/**
 * `cloud-connect agent` as Erugo's backend would call it: `test` (standalone and inside a running
 * agent) with a verdict per step and its exit status, `status` without any state, usage errors,
 * and --help with the exit codes.
 */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { chmodSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { CLI, ROOT, createInstance, freePort, startAgent, startService, tempDir } from './service.ts'
import { startOrigin } from './origin.ts'

function cli (args: string[], env: NodeJS.ProcessEnv = {}): { status: number | null, stdout: string, stderr: string } {
  const clean: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('CC_')) clean[k] = v
  const r = spawnSync(process.execPath, [CLI, 'agent', ...args], { cwd: ROOT, encoding: 'utf8', timeout: 120_000, env: { ...clean, ...env } })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

const steps = (report: { steps: Array<{ step: string, result: string }> }): Record<string, string> => Object.fromEntries(report.steps.map(s => [s.step, s.result]))

t.test('agent test: every step passes standalone and inside a running agent; a bad token and a missing API get plain verdicts', async t => {
  const dir = tempDir(t)
  const service = await startService(t, join(dir, 'service'))
  const instance = await createInstance(service, 'checked')
  const origin = await startOrigin(t)
  const target = `http://127.0.0.1:${origin.port}`
  const tokenFile = join(dir, 'token')
  writeFileSync(tokenFile, instance.token, { mode: 0o600 })
  const state = join(dir, 'agent.json')
  const common = ['--api', service.api, '--token-file', tokenFile, '--state', state, '--target', target, '--status-listen', '127.0.0.1:0']

  // WireGuard over TLS is tried on the service's HTTPS port, named as its API (api.<base>).
  const tls = { CC_AGENT_TLS_PORT: String(service.httpsPort), CC_AGENT_TLS_SERVER_NAME: 'api.localhost' }
  const standalone = cli(['test', '--json', ...common], tls)
  t.equal(standalone.status, 0, standalone.stdout + standalone.stderr)
  const report = JSON.parse(standalone.stdout)
  t.same(steps(report), { api: 'pass', token: 'pass', udp: 'pass', tls_alpn: 'pass', tls_upgrade: 'pass', tunnel: 'pass', target: 'pass' })
  t.match(report.steps.find((s: { step: string }) => s.step === 'token').message, /checked\.localhost/)

  const text = cli(['test', ...common], tls)
  t.equal(text.status, 0)
  t.match(text.stdout, /^PASS {2}API reachable +the API at http:\/\/127\.0\.0\.1:\d+\/v1 answered in \d+ ms$/m)
  // One line per placed gateway, named by its id and role (here the one gateway of `start`).
  t.match(text.stdout, /^PASS {2}Gateway reachable over UDP \[gw-\S+ \(primary, [^\]]+\)\] +WireGuard handshake with gateway gw-\S+ \(primary\) at /m)
  t.match(text.stdout, /^PASS {2}Round trip through the tunnel \[gw-\S+ \(primary, [^\]]+\)\] +gateway gw-\S+ \(primary\)'s tunnel address 10\.\d+\.\d+\.\d+ answered through the tunnel in \d+ ms$/m)
  t.match(text.stdout, new RegExp(`^PASS {2}WireGuard over TLS \\(ALPN\\) \\[gw-\\S+ \\(primary, [^\\]]+\\)\\] +localhost:${service.httpsPort} takes WireGuard over TLS \\(ALPN cc-wireguard/1\\)$`, 'm'))
  t.match(text.stdout, /^PASS {2}WireGuard over TLS \(HTTP upgrade\) \[gw-\S+ \(primary, [^\]]+\)\] +localhost:\d+ takes WireGuard over TLS \(HTTP\/1\.1 upgrade\)$/m)
  t.match(text.stdout, /All checks passed\.\n$/)

  // Nothing on the TLS port: both TLS transports fail with the reason; UDP works, so the test passes.
  const noTls = cli(['test', '--json', ...common], { ...tls, CC_AGENT_TLS_PORT: String(await freePort()) })
  t.equal(noTls.status, 0, noTls.stdout + noTls.stderr)
  const noTlsReport = JSON.parse(noTls.stdout)
  t.same(steps(noTlsReport), { api: 'pass', token: 'pass', udp: 'pass', tls_alpn: 'fail', tls_upgrade: 'fail', tunnel: 'pass', target: 'pass' })
  t.match(noTlsReport.steps.find((s: { step: string }) => s.step === 'tls_alpn').message, /ECONNREFUSED/)
  t.equal(noTlsReport.ok, true, 'one working transport is enough in userspace mode')

  // With a running agent, `test` asks it (its status endpoint is recorded in the state file).
  const agent = startAgent(t, { api: service.api, token: instance.token, dir, target, env: tls })
  await agent.waitFor(/"msg":"tunnel up: the gateway answers"/, 90_000)
  const inside = cli(['test', '--json', ...common], tls)
  t.equal(inside.status, 0, inside.stdout + inside.stderr)
  t.same(steps(JSON.parse(inside.stdout)), { api: 'pass', token: 'pass', udp: 'pass', tls_alpn: 'pass', tls_upgrade: 'pass', tunnel: 'pass', target: 'pass' }, 'the running agent checks its transports too')
  t.equal(await agent.stop(), 0)

  // A wrong token: exit 3, the token step says what to do, the tunnel steps are skipped.
  writeFileSync(tokenFile, `${instance.token.slice(0, -4)}AAAA`)
  const bad = cli(['test', '--json', ...common])
  t.equal(bad.status, 3)
  const badReport = JSON.parse(bad.stdout)
  t.same(steps(badReport), { api: 'pass', token: 'fail', udp: 'skip', tunnel: 'skip', target: 'pass' })
  t.match(badReport.steps[1].message, /regenerated or its instance was deleted/)

  // No API at all: exit 1, a plain reason.
  const nowhere = `http://127.0.0.1:${await freePort()}/v1`
  const down = cli(['test', '--json', ...common, '--api', nowhere])
  t.equal(down.status, 1)
  const downReport = JSON.parse(down.stdout)
  t.same(steps(downReport), { api: 'fail', token: 'skip', udp: 'skip', tunnel: 'skip', target: 'pass' })
  t.match(downReport.steps[0].message, /cannot reach the API at .*: ECONNREFUSED\. Check the API URL/)
})

t.test('agent status without any state; usage errors; --help', async t => {
  const dir = tempDir(t)
  const status = cli(['status', '--json', '--state', join(dir, 'none.json'), '--status-listen', 'off'])
  t.equal(status.status, 0)
  t.match(JSON.parse(status.stdout), { status: 'disconnected', last_error: null, subdomain: null, custom_domains: [], running: false })
  const text = cli(['status', '--state', join(dir, 'none.json'), '--status-listen', 'off'])
  t.match(text.stdout, /^Status +disconnected \(since .*\), agent not running$/m)

  const noToken = cli(['--state', join(dir, 'a.json')])
  t.equal(noToken.status, 2)
  t.equal(noToken.stderr.trim().split('\n').length, 1, 'one line')
  t.match(noToken.stderr, /^cloud-connect agent: --token: no instance token/)
  const badMode = cli(['run', '--mode', 'tun'], { CC_INSTANCE_TOKEN: 'eyJ0eXAiOiJpbnN0YW5jZSJ9.e30.sig' })
  t.equal(badMode.status, 2)
  t.match(badMode.stderr, /^cloud-connect agent: --mode: /)
  t.equal(cli(['--bogus']).status, 2)
  const openToken = join(dir, 'token')
  writeFileSync(openToken, 'eyJ0eXAiOiJpbnN0YW5jZSJ9.e30.sig\n')
  chmodSync(openToken, 0o644)
  const readable = cli(['--token-file', openToken, '--state', join(dir, 'a.json'), '--status-listen', 'off'])
  t.equal(readable.status, 2, 'a token file others can read: exit 2')
  t.equal(readable.stderr, `cloud-connect agent: --token-file: the token file ${openToken} has mode 0644: group and others must have no access (chmod 600 ${openToken})\n`)

  const help = cli(['--help'])
  t.equal(help.status, 0)
  t.match(help.stdout, /^Usage: cloud-connect agent/)
  for (const needle of ['--token-file', 'CC_INSTANCE_TOKEN', '--target', '--mode', 'Exit status:', '3  the API rejected the instance token']) t.match(help.stdout, needle)
})
