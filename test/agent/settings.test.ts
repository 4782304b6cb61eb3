import t, { type Test } from 'tap'
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { isLoopbackHost, loadSettings, SettingsError } from '../../agent/settings.ts'

const TOKEN = 'eyJhbGciOiJIUzI1NiJ9.eyJpbnN0YW5jZSI6IngifQ.c2lnbmF0dXJl'

function tokenFile (t: Test, text: string, mode = 0o600): string {
  const d = mkdtempSync(join(tmpdir(), 'cc-agent-settings-'))
  t.teardown(() => { rmSync(d, { recursive: true, force: true }) })
  const path = join(d, 'token')
  writeFileSync(path, text)
  chmodSync(path, mode)
  return path
}

t.test('defaults', async t => {
  const s = loadSettings({}, { CC_INSTANCE_TOKEN: TOKEN }, { requireToken: true })
  t.match(s, {
    apiUrl: 'https://api.erugo.cloud/v1',
    token: TOKEN,
    stateFile: join('./data', 'agent.json'),
    mode: 'userspace',
    target: { host: '127.0.0.1', port: 80 },
    tunnelPorts: [80],
    listenPort: 0,
    statusListen: { host: '127.0.0.1', port: 51821 },
    interfaceName: 'erugo-cc',
    probeIntervalMs: 10_000,
    deadAfterMs: 35_000,
    region: null,
  })
  t.equal(loadSettings({}, { CC_INSTANCE_TOKEN: TOKEN, CC_AGENT_REGION: 'eu-west' }, { requireToken: true }).region, 'eu-west')
  t.equal(loadSettings({ region: 'us' }, { CC_INSTANCE_TOKEN: TOKEN, CC_AGENT_REGION: 'eu-west' }, { requireToken: true }).region, 'us', 'the flag wins')
  t.equal(loadSettings({}, { CC_INSTANCE_TOKEN: TOKEN, CC_DATA_DIR: '/var/lib/cc' }, { requireToken: true }).stateFile, '/var/lib/cc/agent.json')
})

t.test('token sources: flag, then file flag, then variables; files are trimmed', async t => {
  const file = tokenFile(t, `${TOKEN}\n`)
  t.equal(loadSettings({ 'token-file': file }, { CC_INSTANCE_TOKEN: 'x'.repeat(20) }, { requireToken: true }).token, TOKEN, '--token-file beats the variable')
  t.equal(loadSettings({ token: TOKEN }, { CC_INSTANCE_TOKEN_FILE: '/nonexistent' }, { requireToken: true }).token, TOKEN)
  t.equal(loadSettings({}, { CC_INSTANCE_TOKEN_FILE: file }, { requireToken: true }).token, TOKEN)
  t.equal(loadSettings({}, {}, { requireToken: false }).token, null, 'status runs without a token')
  t.throws(() => loadSettings({}, {}, { requireToken: true }), /--token: no instance token/)
  t.throws(() => loadSettings({}, { CC_INSTANCE_TOKEN_FILE: '/nonexistent/token' }, { requireToken: true }), /^CC_INSTANCE_TOKEN_FILE: cannot read the token file \/nonexistent\/token: ENOENT/)
  t.throws(() => loadSettings({ 'token-file': tokenFile(t, 'not a token!') }, {}, { requireToken: true }), /--token-file: the file .* does not hold an instance token/)
})

t.test('a token file group or others can access is refused (exit 2) with its name and mode; 0600 and 0400 are read', async t => {
  for (const mode of [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o666, 0o004, 0o070]) {
    const path = tokenFile(t, TOKEN, mode)
    const wanted = `the token file ${path} has mode 0${mode.toString(8).padStart(3, '0')}: group and others must have no access (chmod 600 ${path})`
    t.throws(() => loadSettings({ 'token-file': path }, {}, { requireToken: true }), new SettingsError('--token-file', wanted), mode.toString(8))
    t.throws(() => loadSettings({}, { CC_INSTANCE_TOKEN_FILE: path }, { requireToken: true }), new SettingsError('CC_INSTANCE_TOKEN_FILE', wanted))
  }
  t.throws(() => loadSettings({ 'token-file': tokenFile(t, TOKEN, 0o004) }, {}, { requireToken: true }), /has mode 0004: group and others must have no access/)
  for (const mode of [0o600, 0o400]) t.equal(loadSettings({ 'token-file': tokenFile(t, TOKEN, mode) }, {}, { requireToken: true }).token, TOKEN, mode.toString(8))
})

t.test('bad values name their flag or variable', async t => {
  const env = { CC_INSTANCE_TOKEN: TOKEN }
  const cases: Array<[Record<string, string>, NodeJS.ProcessEnv, RegExp]> = [
    [{ mode: 'tun' }, env, /^--mode: /],
    [{}, { ...env, CC_AGENT_MODE: 'tun' }, /^CC_AGENT_MODE: /],
    [{ api: 'ftp://x' }, env, /^--api: /],
    [{ api: 'http://api.example.com/v1' }, env, /^--api: must be https:\/\//],
    [{ target: 'https://127.0.0.1:443' }, env, /^--target: target must be http:\/\/ or tcp:\/\//],
    [{ target: 'tcp://127.0.0.1' }, env, /^--target: no port/],
    [{ 'tunnel-port': '80,99999' }, env, /^--tunnel-port: /],
    [{ 'status-listen': '0.0.0.0:51821' }, env, /^--status-listen: must be a loopback address/],
    [{ 'status-listen': 'nonsense' }, env, /^--status-listen: must be host:port/],
    [{ interface: 'much-too-long-interface' }, env, /^--interface: /],
    [{ 'probe-interval': '10', 'dead-after': '5' }, env, /^--dead-after: must be at least the probe interval/],
    [{}, { ...env, CC_AGENT_PROBE_INTERVAL: 'often' }, /^CC_AGENT_PROBE_INTERVAL: /],
    [{}, { ...env, CC_AGENT_REGION: 'EU West' }, /^CC_AGENT_REGION: must be lower-case letters/],
  ]
  for (const [flags, e, pattern] of cases) {
    t.throws(() => loadSettings(flags, e, { requireToken: true }), pattern, JSON.stringify(flags) + JSON.stringify(e))
  }
  const err = (() => { try { loadSettings({ token: 'bad token with spaces' }, {}, { requireToken: true }) } catch (e) { return e as SettingsError } })()
  t.ok(err instanceof SettingsError)
  t.notMatch(err?.message ?? '', /bad token/, 'a token is never echoed')
})

t.test('plain HTTP only for loopback or with CC_AGENT_ALLOW_HTTP=1; status endpoint may be off', async t => {
  const env = { CC_INSTANCE_TOKEN: TOKEN }
  t.equal(loadSettings({ api: 'http://127.0.0.1:8080/v1/' }, env, { requireToken: true }).apiUrl, 'http://127.0.0.1:8080/v1')
  t.equal(loadSettings({ api: 'http://198.18.0.1:8080/v1' }, { ...env, CC_AGENT_ALLOW_HTTP: '1' }, { requireToken: true }).apiUrl, 'http://198.18.0.1:8080/v1')
  t.equal(loadSettings({ 'status-listen': 'off' }, env, { requireToken: true }).statusListen, null)
  t.same(loadSettings({ 'status-listen': '[::1]:9000' }, env, { requireToken: true }).statusListen, { host: '::1', port: 9000 })
  t.same(loadSettings({ target: 'erugo:8080', 'tunnel-port': '80,443,80' }, env, { requireToken: true }).tunnelPorts, [80, 443])
  t.ok(isLoopbackHost('localhost') && isLoopbackHost('127.0.0.2') && isLoopbackHost('[::1]'))
  t.notOk(isLoopbackHost('10.0.0.1') || isLoopbackHost('example.com'))
})
