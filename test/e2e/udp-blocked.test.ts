/**
 * A container whose network drops all outgoing UDP, in the network-namespace lab (root, nftables):
 *
 *   ns gw: cloud-connect start (API :8080, WireGuard :51820, HTTPS :8443 on 0.0.0.0), curl;
 *          an HTTP CONNECT proxy on :3128 (test/helpers/lab/connect-proxy.ts)
 *      | veth 198.18.x.0/30
 *   ns ct: nftables `meta l4proto udp drop` on output; nginx on 127.0.0.1:8081 with a 100 MB file;
 *          `cloud-connect agent` (userspace) forwarding the tunnel to nginx
 *
 * Proves: the userspace agent comes up over WireGuard over TLS within 15 s and serves 100 MB
 * byte-exact, its status says `tls`; the same through the CONNECT proxy while the container may
 * not reach port 8443 itself; once the block is lifted the agent is back on `udp` within one probe
 * interval while a download running across the switch completes byte-exact.
 * Skips with the reason without root/tools; fails instead under CC_REQUIRE_INTEROP=1.
 */
import t, { type Test } from 'tap'
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { Lab, requireLab, waitUntil, type LabProcess } from '../helpers/lab.ts'
import { writeGeneratedFile } from '../helpers/lab/generator.ts'
import { downloadSha256, httpsArgs, logLine, listenEnv, serviceEnv, startAllInOne, waitForHttps } from '../helpers/lab/e2e.ts'
import { CLI, FAST, ROOT } from '../agent/service.ts'

const BASE_DOMAIN = 'cc.test'
const API_PORT = 8080
const WG_PORT = 51820
const HTTPS_PORT = 8443
const PROXY_PORT = 3128
const ORIGIN = '127.0.0.1:8081'
const DOWNLOAD_BYTES = 100_000_000
const PROBE_INTERVAL_S = 2

/** nft in `ns`: a table `cc` whose output chain drops all UDP (and, with `tcpPort`, TCP to that port). */
async function blockUdp (t: Test, lab: Lab, ns: string, tcpPort?: number): Promise<void> {
  const rules = [
    ['add', 'table', 'inet', 'cc'],
    ['add', 'chain', 'inet', 'cc', 'out', '{ type filter hook output priority 0 ; }'],
    ['add', 'rule', 'inet', 'cc', 'out', 'meta', 'l4proto', 'udp', 'counter', 'drop'],
    ...(tcpPort === undefined ? [] : [['add', 'rule', 'inet', 'cc', 'out', 'tcp', 'dport', String(tcpPort), 'counter', 'drop']]),
  ]
  for (const args of rules) {
    const r = await lab.exec(ns, 'nft', args)
    t.equal(r.code, 0, `nft ${args.join(' ')}${r.stderr === '' ? '' : `: ${r.stderr}`}`)
  }
}

async function unblock (lab: Lab, ns: string): Promise<void> {
  const r = await lab.exec(ns, 'nft', ['delete', 'table', 'inet', 'cc'])
  if (r.code !== 0) throw new Error(`nft delete table: ${r.stderr}`)
}

/** UDP packets the table has dropped (its first counter). */
async function droppedUdp (lab: Lab, ns: string): Promise<number> {
  const r = await lab.exec(ns, 'nft', ['list', 'table', 'inet', 'cc'])
  const m = /l4proto udp counter packets (\d+)/.exec(r.stdout)
  return m === null ? -1 : Number(m[1])
}

interface AgentRun { process: LabProcess, stateFile: string, startedAt: number }

function startAgent (lab: Lab, ns: string, name: string, api: string, tokenFile: string, env: Record<string, string>): AgentRun {
  const stateFile = join(lab.dir, `${name}.json`)
  const base: NodeJS.ProcessEnv = { ...process.env }
  for (const k of Object.keys(base)) if (k.startsWith('CC_') || /^(https?|no)_proxy$/i.test(k)) delete base[k]
  const proc = lab.spawn(ns, name, process.execPath, [CLI, 'agent', '--mode', 'userspace', '--api', api, '--token-file', tokenFile, '--state', stateFile,
    '--target', ORIGIN, '--status-listen', '127.0.0.1:0', ...FAST], {
    cwd: ROOT,
    env: {
      ...base,
      CC_AGENT_ALLOW_HTTP: '1',
      CC_AGENT_TLS_PORT: String(HTTPS_PORT),
      CC_AGENT_TLS_SERVER_NAME: `api.${BASE_DOMAIN}`,
      CC_AGENT_TLS_FALLBACK_AFTER: '3',
      CC_AGENT_UDP_PROBE_INTERVAL: String(PROBE_INTERVAL_S),
      ...env,
    },
  })
  return { process: proc, stateFile, startedAt: Date.now() }
}

async function agentStatus (lab: Lab, ns: string, run: AgentRun): Promise<{ status: string, transport: string | null, mode: string }> {
  const r = await lab.exec(ns, process.execPath, [CLI, 'agent', 'status', '--json', '--state', run.stateFile], { cwd: ROOT, timeoutMs: 60_000 })
  if (r.code !== 0) throw new Error(`agent status: exit ${r.code}: ${r.stderr}`)
  return JSON.parse(r.stdout)
}

t.test('UDP dropped by the container network: WireGuard over TLS (direct and through a CONNECT proxy), back on UDP once it passes', async t => {
  if (!requireLab(t, ['nft', 'nginx', 'bash', 'sha256sum'])) return
  const lab = await Lab.create(t)
  const gwNs = await lab.namespace('gw')
  const ctNs = await lab.namespace('ct')
  const { a: gwEnd } = await lab.link(gwNs, ctNs)
  const files = join('/dev/shm', `cc-udp-blocked-${lab.runId}`)
  mkdirSync(files, { recursive: true })
  t.teardown(() => { rmSync(files, { recursive: true, force: true }) })
  const bigSha = writeGeneratedFile(join(files, 'big.bin'), DOWNLOAD_BYTES, 21)
  writeFileSync(join(files, 'hello.txt'), 'hello over TLS\n')

  const dataDir = join(lab.dir, 'service')
  const svc = await startAllInOne(lab, gwNs, serviceEnv({
    CC_DATA_DIR: dataDir,
    CC_BASE_DOMAIN: BASE_DOMAIN,
    ...listenEnv(gwEnd.ip, { api: API_PORT, wg: WG_PORT, https: HTTPS_PORT }),
    CC_HTTP_PORT: '0',
  }))
  const provisioned = await lab.exec(gwNs, process.execPath, ['--import', 'tsx', join(ROOT, 'test/agent/provision.ts'), `${svc.api}/v1`, svc.outbox, 'blocked'], { cwd: ROOT, timeoutMs: 120_000 })
  t.equal(provisioned.code, 0, provisioned.stderr)
  const instance = JSON.parse(provisioned.stdout) as { token: string, hostname: string }
  const host = instance.hostname
  const tokenFile = lab.file('token', instance.token)
  chmodSync(tokenFile, 0o600)
  const api = `http://${gwEnd.ip}:${API_PORT}/v1`

  await lab.startNginx(ctNs, { root: files, listen: ORIGIN })
  await blockUdp(t, lab, ctNs)

  // 1. Direct: UDP gets no answer, the tunnel goes over TLS to the HTTPS port.
  const direct = startAgent(lab, ctNs, 'agent-direct', api, tokenFile, {})
  await logLine(direct.process, 'UDP gets no answer: the tunnel goes over TLS', 30_000)
  await logLine(direct.process, 'tunnel up: the gateway answers', 30_000)
  const upAfter = (Date.now() - direct.startedAt) / 1000
  t.ok(upAfter <= 15, `up over TLS ${upAfter.toFixed(1)} s after the agent started (at most 15 s)`)
  t.ok(await droppedUdp(lab, ctNs) > 0, 'the container\'s UDP was dropped')
  const hello = await waitForHttps(lab, gwNs, host, HTTPS_PORT, '/hello.txt', svc.ca)
  t.equal(hello.body, 'hello over TLS\n', 'HTTPS through the gateway reaches the container')
  const down = await downloadSha256(lab, gwNs, httpsArgs(host, HTTPS_PORT, '/big.bin', svc.ca), 180)
  t.equal(down.bytes, DOWNLOAD_BYTES)
  t.equal(down.sha256, bigSha, '100 MB byte-exact over WireGuard over TLS')
  t.comment(`over TLS: ${(down.bytes / down.seconds / 1e6).toFixed(1)} MB/s`)
  t.match(await agentStatus(lab, ctNs, direct), { status: 'connected', mode: 'userspace', transport: 'tls' }, 'agent status --json says tls')
  await direct.process.stop()

  // 2. Through an HTTP CONNECT proxy: the container may not reach the HTTPS port itself.
  await unblock(lab, ctNs)
  await blockUdp(t, lab, ctNs, HTTPS_PORT)
  const proxy = lab.spawn(gwNs, 'connect-proxy', process.execPath, [join(ROOT, 'bin/run-ts.js'), join(ROOT, 'test/helpers/lab/connect-proxy.ts'), `0.0.0.0:${PROXY_PORT}`], { cwd: ROOT })
  await proxy.waitForOutput(/^listening /m, 20_000)
  const proxied = startAgent(lab, ctNs, 'agent-proxy', api, tokenFile, { HTTPS_PROXY: `http://${gwEnd.ip}:${PROXY_PORT}`, CC_LOG_LEVEL: 'debug' })
  const viaProxy = await logLine(proxied.process, 'UDP gets no answer: the tunnel goes over TLS', 30_000)
  t.equal(viaProxy.proxy, `${gwEnd.ip}:${PROXY_PORT}`, 'the agent names the proxy it went through')
  await logLine(proxied.process, 'tunnel up: the gateway answers', 30_000)
  t.ok((Date.now() - proxied.startedAt) / 1000 <= 15, 'up through the proxy within 15 s')
  t.match(proxy.output(), new RegExp(`^CONNECT ${gwEnd.ip.replace(/\./g, '\\.')}:${HTTPS_PORT} 200$`, 'm'), 'the proxy carried CONNECT to the HTTPS port')
  const downProxy = await downloadSha256(lab, gwNs, httpsArgs(host, HTTPS_PORT, '/big.bin', svc.ca), 180)
  t.equal(downProxy.sha256, bigSha, '100 MB byte-exact through the proxy')
  t.comment(`over TLS through the proxy: ${(downProxy.bytes / downProxy.seconds / 1e6).toFixed(1)} MB/s`)
  t.match(await agentStatus(lab, ctNs, proxied), { status: 'connected', transport: 'tls' }, 'status says tls through the proxy')

  // 3. The block is lifted while a (rate-limited, about 12 s) download runs: back on UDP within one probe interval.
  const running = downloadSha256(lab, gwNs, ['--limit-rate', '8M', ...httpsArgs(host, HTTPS_PORT, '/big.bin', svc.ca)], 180)
  await new Promise(resolve => setTimeout(resolve, 2000))
  const from = proxied.process.output().length
  await unblock(lab, ctNs)
  const liftedAt = Date.now()
  await waitUntil('back on UDP', () => proxied.process.output().slice(from).includes('"msg":"UDP works again: the tunnel is back on UDP"') || undefined, 30_000, 100)
  // The agent's own timestamp of the switch: the time this test takes to notice the line is not the agent's.
  const records = proxied.process.output().slice(from).split('\n').filter(line => line.startsWith('{')).map(line => JSON.parse(line) as { time: number, msg: string })
  const back = records.find(r => r.msg === 'UDP works again: the tunnel is back on UDP')!
  const backAfter = (back.time - liftedAt) / 1000
  // One probe interval, plus the transport check's period and the handshake's round trip.
  t.ok(backAfter <= PROBE_INTERVAL_S + 2, `back on UDP ${backAfter.toFixed(1)} s after the block was lifted (probe interval ${PROBE_INTERVAL_S} s)`)
  // The agent logs each UDP probe at debug: what happened between the lift and the switch.
  if (backAfter > PROBE_INTERVAL_S + 2) t.comment(records.map(r => `${((r.time - liftedAt) / 1000).toFixed(2)} s ${r.msg}`).join('\n'))
  t.match(await agentStatus(lab, ctNs, proxied), { status: 'connected', transport: 'udp' }, 'status says udp')
  const across = await running
  t.equal(across.bytes, DOWNLOAD_BYTES)
  t.equal(across.sha256, bigSha, 'the download running across the switch is byte-exact')
  t.ok(across.seconds > backAfter + 2, `the download (${across.seconds.toFixed(1)} s) spanned the switch`)
})
