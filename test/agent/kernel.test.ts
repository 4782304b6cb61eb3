/**
 * Kernel mode against `cloud-connect start`, in the network-namespace lab (root): the service in
 * one namespace, the agent in another with a web server on 0.0.0.0:80, joined by a veth pair. The
 * agent writes a wg-quick configuration and brings it up with wg-quick (wireguard-go here, where
 * the kernel module is missing); an HTTPS request to the instance's hostname reaches the web server
 * through the kernel's TCP stack; SIGTERM takes the interface down and the API shows disconnected.
 * Skips with the reason without root/tools; fails instead under CC_REQUIRE_INTEROP=1.
 */
import t from 'tap'
import { chmodSync, readFileSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { requireLab, waitUntil } from '../helpers/lab.ts'
import { CLI, FAST, ROOT } from './service.ts'
import { API_PORT, HTTPS_PORT, startKernelLab } from './kernel-lab.ts'


t.test('kernel mode: wg-quick (wireguard-go) tunnel, HTTPS to a web server in the container namespace, SIGTERM disconnects', async t => {
  if (!requireLab(t, ['wg-quick'])) return
  const { lab, gwNs, ctNs, gwIp, iface, service, instance } = await startKernelLab(t, 'kernelbox')
  const ca = /^ {2}CA certificate +(\S+)/m.exec(service.output())![1]
  const api = `http://${gwIp}:${API_PORT}/v1`

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
