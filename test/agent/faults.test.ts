/**
 * The agent under faults, on loopback with real processes: the API down when the agent starts
 * (it retries and connects when the API returns), the gateway restarted under it (traffic resumes
 * without touching the agent), and the instance token regenerated (state `error`, exit status 3,
 * no retry loop).
 */
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { CLI, ROOT, connectedAgent, createInstance, freePort, json, startAgent, startService, tempDir, tunnelStatus, waitUntil, type ServicePorts } from './service.ts'
import { edgeText, startOrigin } from './origin.ts'

function statusJson (stateFile: string): any { // eslint-disable-line @typescript-eslint/no-explicit-any
  const r = spawnSync(process.execPath, [CLI, 'agent', 'status', '--json', '--state', stateFile], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 })
  if (r.status !== 0) throw new Error(`agent status: ${String(r.status)} ${r.stderr}`)
  return JSON.parse(r.stdout)
}

t.test('API down at start, then the gateway restarted: the agent retries, connects, and traffic resumes by itself', async t => {
  const dir = tempDir(t)
  const dataDir = join(dir, 'service')
  const ports: ServicePorts = { api: await freePort(), wg: await freePort({ udp: true }), https: await freePort() }
  let service = await startService(t, dataDir, ports)
  const instance = await createInstance(service, 'faulty')
  t.equal(await service.proc.stop(), 0, 'service stopped')

  const origin = await startOrigin(t)
  const agent = startAgent(t, { api: service.api, token: instance.token, dir, target: `http://127.0.0.1:${origin.port}` })
  // Several attempts while the API is away, spaced by the backoff.
  await waitUntil('three failed attempts', () => (agent.output.match(/cannot reach the API/g) ?? []).length >= 3 || undefined, 60_000)
  const waiting = statusJson(join(dir, 'agent.json'))
  t.equal(waiting.status, 'connecting', 'connecting while the API is down')
  t.match(waiting.last_error, /cannot reach the API/, 'the last error says why')
  t.ok(agent.running, 'still running: it does not give up')

  service = await startService(t, dataDir, ports)
  const mark = agent.output.length
  await agent.waitFor(/"msg":"tunnel up: the gateway answers"/, 90_000, mark)
  const edge = { port: ports.https, hostname: instance.hostname, ca: service.ca }
  const first = await edgeText(edge, '/before')
  t.equal(first.status, 200, 'connected once the API came back')
  t.match(first.body, /^hello GET \/before /)

  // The gateway goes away and comes back (same key, same port): sessions are gone. Either the
  // restarted gateway initiates to the agent's last endpoint itself (wireguard-endpoints.json),
  // or the agent notices the silence first and reconnects; which comes first is a matter of
  // timing. The agent's log is read from before the stop (it may notice while the service starts).
  const mark2 = agent.output.length
  t.equal(await service.proc.stop(), 0)
  service = await startService(t, dataDir, ports)
  const restarted = service
  const recovery = await waitUntil('the gateway resuming the session, or the agent reconnecting', () => {
    if (/"msg":"initiating to peers at their last endpoints"/.test(restarted.proc.output)) return 'gateway'
    if (/"msg":"no answer from the gateway: reconnecting"/.test(agent.output.slice(mark2))) return 'agent'
    return undefined
  }, 90_000)
  if (recovery === 'agent') await agent.waitFor(/"msg":"tunnel up: the gateway answers"/, 90_000, mark2)
  t.pass(`session recovered by the ${recovery}`)
  const resumed = await waitUntil('a request through the restarted gateway', async () => {
    const r = await edgeText(edge, '/after').catch(() => null)
    return r?.status === 200 ? r : undefined
  }, 60_000, 500)
  t.match(resumed.body, /^hello GET \/after /, 'traffic resumes without touching the agent')
  t.equal(statusJson(join(dir, 'agent.json')).status, 'connected')
  t.equal(await waitUntil('connected', async () => (await tunnelStatus(service, instance.token)) === 'connected' || undefined, 30_000), true, 'the API sees it connected again')

  t.equal(await agent.stop(), 0)
})

t.test('token regenerated: state error with a clear message, exit status 3, no retry loop', async t => {
  const { dir, service, instance, agent } = await connectedAgent(t, 'revoked')

  const regenerated = await json(`${service.api}/instances/${instance.id}/regenerate-token`, 'POST', undefined, instance.access)
  t.equal(regenerated.status, 200, 'token regenerated')
  const code = await Promise.race([agent.exited, new Promise(resolve => setTimeout(() => { resolve('still running') }, 90_000))])
  t.equal(code, 3, 'exit status 3: token rejected')
  t.match(agent.output, /rejected the instance token/)
  const report = statusJson(join(dir, 'agent.json'))
  t.equal(report.status, 'error', 'state error')
  t.match(report.last_error, /rejected the instance token/, 'last error names the token')
  t.equal(report.running, false)
  t.equal((agent.output.match(/"msg":"agent starting"/g) ?? []).length, 1)
  t.equal(JSON.parse(readFileSync(join(dir, 'agent.json'), 'utf8')).status, 'error')
})
