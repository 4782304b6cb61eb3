/**
 * Kernel mode against `cloud-connect start`, in the network-namespace lab (root): the service in
 * one namespace, the agent in another with a web server on 0.0.0.0:80, joined by a veth pair. The
 * agent writes a wg-quick configuration and brings it up with wg-quick (wireguard-go here, where
 * the kernel module is missing); an HTTPS request to the instance's hostname reaches the web server
 * through the kernel's TCP stack; SIGTERM takes the interface down and the API shows disconnected.
 * Skips with the reason without root/tools; fails instead under CC_REQUIRE_INTEROP=1.
 */
import t from 'tap'
import { chmodSync, readFileSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { Lab, requireLab, waitUntil } from '../helpers/lab.ts'
import { ifName } from '../helpers/lab/netns.ts'
import { CLI, FAST, ROOT } from './service.ts'

const API_PORT = 8080
const WG_PORT = 51820
const HTTPS_PORT = 8443

t.test('kernel mode: wg-quick (wireguard-go) tunnel, HTTPS to a web server in the container namespace, SIGTERM disconnects', async t => {
  if (!requireLab(t, ['wg-quick'])) return
  const lab = await Lab.create(t)
  const gwNs = await lab.namespace('gw')
  const ctNs = await lab.namespace('ct')
  const { a: gwEnd } = await lab.link(gwNs, ctNs)
  const iface = ifName(lab.runId, 'k', 0)
  t.teardown(() => { rmSync(`/var/run/wireguard/${iface}.sock`, { force: true }) })

  const dataDir = join(lab.dir, 'service')
  const env: NodeJS.ProcessEnv = { ...process.env }
  for (const name of ['DATABASE_URL', 'CC_BASE_DOMAIN', 'CC_PUBLIC_URL', 'CC_GATEWAY_PUBLIC_KEY', 'CC_SMTP_URL']) delete env[name]
  const service = lab.spawn(gwNs, 'start', process.execPath, [CLI, 'start'], {
    cwd: ROOT,
    env: {
      ...env,
      CC_DATA_DIR: dataDir,
      CC_API_HOST: '0.0.0.0',
      CC_API_PORT: String(API_PORT),
      CC_HTTP_PORT: '0',
      CC_HTTPS_PORT: String(HTTPS_PORT),
      CC_EDGE_HOST: '127.0.0.1',
      CC_WG_HOST: '0.0.0.0',
      CC_WG_PORT: String(WG_PORT),
      CC_GATEWAY_ENDPOINT: `${gwEnd.ip}:${WG_PORT}`,
      CC_ARGON2_MEMORY_KIB: '64',
      CC_ARGON2_TIME_COST: '1',
      CC_REPORT_INTERVAL: '0.5',
    },
  })
  await service.waitForOutput(/^ {2}Data /m, 120_000)
  const ca = /^ {2}CA certificate +(\S+)/m.exec(service.output())![1]
  const api = `http://${gwEnd.ip}:${API_PORT}/v1`

  const provisioned = await lab.exec(gwNs, process.execPath, ['--import', 'tsx', join(ROOT, 'test/agent/provision.ts'), `http://127.0.0.1:${API_PORT}/v1`, join(dataDir, 'outbox'), 'kernelbox'], { cwd: ROOT, timeoutMs: 120_000 })
  t.equal(provisioned.code, 0, provisioned.stderr)
  const instance = JSON.parse(provisioned.stdout) as { token: string, tunnelIp: string, hostname: string }

  // The container: a web server on every address, port 80 (as Erugo's Caddy), and the agent.
  const web = lab.spawn(ctNs, 'web', process.execPath, ['-e', "require('http').createServer((q, s) => s.end('hello kernel ' + q.url + ' host=' + q.headers.host + '\\n')).listen(80, '0.0.0.0', () => console.log('listening'))"])
  await web.waitForOutput(/listening/, 30_000)
  const agentDir = join(lab.dir, 'agent')
  const tokenFile = lab.file('token', instance.token)
  chmodSync(tokenFile, 0o600)
  const stateFile = join(agentDir, 'agent.json')
  const agent = lab.spawn(ctNs, 'agent', process.execPath, [CLI, 'agent', '--mode', 'kernel', '--api', api, '--token-file', tokenFile, '--state', stateFile, '--interface', iface, '--status-listen', '127.0.0.1:0', ...FAST], {
    cwd: ROOT,
    env: { ...process.env, CC_AGENT_ALLOW_HTTP: '1' },
  })
  await agent.waitForOutput(/"msg":"tunnel up: the gateway answers"/, 120_000)
  t.match(agent.output(), /"msg":"WireGuard interface up"/)

  const addr = await lab.exec(ctNs, 'ip', ['-4', 'addr', 'show', 'dev', iface])
  t.match(addr.stdout, new RegExp(`inet ${instance.tunnelIp.replace(/\./g, '\\.')}/32`), 'the interface has the tunnel address')
  const configPath = join(agentDir, `${iface}.conf`)
  t.equal(statSync(configPath).mode & 0o777, 0o600, 'wg-quick configuration is 0600')
  const state = JSON.parse(readFileSync(stateFile, 'utf8'))
  const config = readFileSync(configPath, 'utf8')
  t.match(config, `PrivateKey = ${state.private_key as string}`, 'configuration holds the state file\'s key')
  t.match(config, /AllowedIPs = 10\.\d+\.\d+\.\d+\/32/, 'the tunnel routes only the gateway\'s address')
  const wgShow = await lab.exec(ctNs, 'wg', ['show', iface, 'latest-handshakes'])
  t.match(wgShow.stdout, /\t[1-9]\d+/, 'wg shows a handshake')

  const fetched = await waitUntil('HTTPS through the kernel-mode tunnel', async () => {
    const r = await lab.curl(gwNs, ['-sS', '--max-time', '10', '--cacert', ca, '--resolve', `${instance.hostname}:${HTTPS_PORT}:127.0.0.1`, `https://${instance.hostname}:${HTTPS_PORT}/kernel`])
    return r.code === 0 && r.stdout.startsWith('hello') ? r.stdout : undefined
  }, 60_000, 500)
  t.equal(fetched, `hello kernel /kernel host=${instance.hostname}:${HTTPS_PORT}\n`, 'the web server behind the kernel tunnel answers')

  const statusRun = await lab.exec(ctNs, process.execPath, [CLI, 'agent', 'status', '--json', '--state', stateFile], { cwd: ROOT, timeoutMs: 60_000 })
  t.match(JSON.parse(statusRun.stdout), { status: 'connected', mode: 'kernel', tunnel_ip: instance.tunnelIp, subdomain: instance.hostname, running: true })

  const apiStatus = async (): Promise<string> => {
    const r = await lab.curl(gwNs, ['-sS', '--max-time', '5', '-H', `authorization: Bearer ${instance.token}`, `http://127.0.0.1:${API_PORT}/v1/tunnel/status`])
    return (JSON.parse(r.stdout) as { tunnel_status: string }).tunnel_status
  }
  t.equal(await waitUntil('connected', async () => (await apiStatus()) === 'connected' || undefined, 30_000), true, 'the API shows connected')

  const exit = await agent.stop(20_000)
  t.equal(exit.code, 0, 'exit status 0 on SIGTERM')
  t.match(agent.output(), /"msg":"the API was told: disconnected"/)
  const gone = await lab.exec(ctNs, 'ip', ['link', 'show', 'dev', iface])
  t.not(gone.code, 0, 'the interface is gone')
  t.equal(await apiStatus(), 'disconnected', 'the API shows disconnected')
})
