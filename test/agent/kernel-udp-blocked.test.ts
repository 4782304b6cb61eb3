/**
 * Kernel mode in a container network that drops all outgoing UDP (nftables), in the
 * network-namespace lab (root): wg-quick (wireguard-go here) comes up, but no handshake can
 * complete. Within CC_AGENT_TLS_FALLBACK_AFTER the agent sees that the gateway's HTTPS port
 * answers, says plainly that UDP is blocked, that wg-quick speaks UDP only and that userspace mode
 * can use TLS, and exits with status 6, the interface taken down.
 * Skips with the reason without root/tools; fails instead under CC_REQUIRE_INTEROP=1.
 */
import t from 'tap'
import { chmodSync } from 'node:fs'
import { join } from 'node:path'
import { requireLab } from '../helpers/lab.ts'
import { API_PORT, HTTPS_PORT, startKernelLab } from './kernel-lab.ts'
import { CLI, FAST, ROOT } from './service.ts'
import { EXIT_UDP_BLOCKED } from '../../agent/exit-codes.ts'


t.test('kernel mode with UDP dropped: says UDP is blocked, suggests --mode userspace, exits 6', async t => {
  if (!requireLab(t, ['wg-quick', 'nft'])) return
  const { lab, ctNs, gwIp, iface, env, instance } = await startKernelLab(t, 'kernelblocked', { CC_BASE_DOMAIN: 'cc.test', CC_EDGE_HOST: '0.0.0.0' })

  for (const args of [
    ['add', 'table', 'inet', 'cc'],
    ['add', 'chain', 'inet', 'cc', 'out', '{ type filter hook output priority 0 ; }'],
    ['add', 'rule', 'inet', 'cc', 'out', 'meta', 'l4proto', 'udp', 'counter', 'drop'],
  ]) {
    const r = await lab.exec(ctNs, 'nft', args)
    t.equal(r.code, 0, `nft ${args.join(' ')}`)
  }

  const tokenFile = lab.file('token', instance.token)
  chmodSync(tokenFile, 0o600)
  const startedAt = Date.now()
  const agent = lab.spawn(ctNs, 'agent', process.execPath, [CLI, 'agent', '--mode', 'kernel', '--api', `http://${gwIp}:${API_PORT}/v1`, '--token-file', tokenFile,
    '--state', join(lab.dir, 'agent', 'agent.json'), '--interface', iface, '--status-listen', '127.0.0.1:0', ...FAST], {
    cwd: ROOT,
    env: { ...env, CC_AGENT_ALLOW_HTTP: '1', CC_AGENT_TLS_PORT: String(HTTPS_PORT), CC_AGENT_TLS_SERVER_NAME: 'api.cc.test', CC_AGENT_TLS_FALLBACK_AFTER: '3' },
  })
  const exit = await Promise.race([agent.exited, new Promise<null>(resolve => setTimeout(() => resolve(null), 60_000))])
  const seconds = (Date.now() - startedAt) / 1000
  t.not(exit, null, `the agent stopped by itself (after ${seconds.toFixed(1)} s)`)
  t.equal(exit?.code, EXIT_UDP_BLOCKED, 'exit status 6: UDP blocked')
  t.equal(EXIT_UDP_BLOCKED, 6)
  const out = agent.output()
  t.match(out, /"msg":"WireGuard interface up"/, 'wg-quick had brought the interface up')
  t.match(out, /UDP to the gateway seems blocked: no WireGuard handshake with 198\.18\.\d+\.\d+:51820 over UDP in 3 s, while its HTTPS port 8443 answers/, 'says UDP is blocked')
  t.match(out, /Kernel mode \(wg-quick\) speaks UDP only: run the agent with --mode userspace/, 'suggests userspace mode')
  t.notMatch(out, /"msg":"tunnel up: the gateway answers"/, 'never connected')
  const gone = await lab.exec(ctNs, 'ip', ['link', 'show', 'dev', iface])
  t.not(gone.code, 0, 'the interface is gone')
})
