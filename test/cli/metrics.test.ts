/**
 * CC_METRICS_LISTEN for each command: `control` serves its own registry; `start` (control and
 * gateway wired as start wires them: one registry) serves both from the gateway's one listener,
 * and control opens none. A bad value stops start-up with one line naming the variable.
 */
import t, { type Test } from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { Registry } from 'prom-client'
import { ConfigError, loadConfig } from '../../control/config.ts'
import { boundAddress } from '../../control/metrics.ts'
import { loadRpcConfig, startControlPlane } from '../../control/rpc/index.ts'
import { loadGatewayEnv } from '../../gateway/control/env.ts'
import { startGatewayWithControl } from '../../gateway/control/run.ts'
import { Metrics } from '../../gateway/metrics.ts'
import { parseExposition, sampleValue } from '../helpers/prometheus.ts'

const logger = pino({ level: 'silent' })

function dataDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'cc-metrics-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

t.test('control: CC_METRICS_LISTEN serves control\'s metrics and the process metrics', async t => {
  const config = loadConfig({ CC_DATA_DIR: dataDir(t), CC_API_HOST: '127.0.0.1', CC_API_PORT: '0', CC_LOG_LEVEL: 'silent', CC_METRICS_LISTEN: '127.0.0.1:0' })
  const plane = await startControlPlane({ config, rpc: loadRpcConfig({ CC_RPC_PORT: '0' }), listen: true, logger })
  t.teardown(() => plane.stop(0))
  t.not(plane.metricsServer, null, 'a metrics listener')
  t.equal((await fetch(`${plane.app.info.uri}/health`)).status, 200)
  const url = `http://${boundAddress(plane.metricsServer!)}/metrics`
  const samples = parseExposition(await (await fetch(url)).text())
  t.equal(sampleValue(samples, 'cc_api_request_duration_seconds_count', { route: '/health', method: 'GET', status_class: '2xx' }), 1)
  t.equal(sampleValue(samples, 'cc_business_signups'), 0)
  t.ok(sampleValue(samples, 'process_resident_memory_bytes')! > 0, 'process metrics')
  t.equal((await fetch(url.replace('/metrics', '/other'))).status, 404)
})

t.test('start: one listener serves control\'s and the gateway\'s metrics', async t => {
  const dir = dataDir(t)
  const config = loadConfig({ CC_DATA_DIR: dir, CC_API_HOST: '127.0.0.1', CC_API_PORT: '0', CC_PUBLIC_URL: 'https://app.localhost:8443', CC_LOG_LEVEL: 'silent', CC_METRICS_LISTEN: '127.0.0.1:0' })
  const registry = new Registry()
  const plane = await startControlPlane({ config, rpc: loadRpcConfig({ CC_REPORT_INTERVAL: '0.5' }), listen: false, logger, extra: { metrics: { registry } } })
  t.teardown(() => plane.stop(0))
  t.equal(plane.metricsServer, null, 'control opens no listener of its own')
  const settings = loadGatewayEnv({ CC_DATA_DIR: dir, CC_WG_HOST: '127.0.0.1', CC_WG_PORT: '0', CC_EDGE: '0', CC_METRICS_LISTEN: '127.0.0.1:0' })
  const running = await startGatewayWithControl({ plane: plane.rpc, settings, logger, store: null, reportIntervalMs: 500, metrics: new Metrics({ registry }) })
  if (running === null) throw new Error('the gateway got no configuration')
  t.teardown(() => running.stop(0))
  t.equal((await plane.app.inject({ method: 'POST', url: '/v1/tunnel/register', payload: {} })).statusCode, 401)
  const samples = parseExposition(await (await fetch(`http://${running.gateway.metricsListen!}/metrics`)).text())
  t.equal(sampleValue(samples, 'cc_api_requests_total', { status: '401' }), 1, 'control\'s API metrics')
  t.equal(sampleValue(samples, 'cc_tunnel_failed_attempts_total', { reason: 'register_refused_401' }), 1, 'one failed-attempts family for both')
  t.equal(sampleValue(samples, 'cc_tunnels_active'), 0, 'the gateway\'s tunnels')
  t.equal(sampleValue(samples, 'cc_business_signups'), 0, 'the business gauges')
  t.equal(samples.filter(s => s.name === 'nodejs_heap_size_total_bytes').length, 1, 'process metrics once')
})

t.test('CC_METRICS_LISTEN: a bad value stops start-up with one line naming it', async t => {
  for (const bad of ['9091', 'localhost:9091', '127.0.0.1:70000', '[::1]']) {
    let message = ''
    try { loadConfig({ CC_METRICS_LISTEN: bad }) } catch (err) { if (err instanceof ConfigError) message = err.message }
    t.match(message, /^CC_METRICS_LISTEN: [^\n]+$/, `${bad}: ${message}`)
  }
  t.same(loadConfig({ CC_METRICS_LISTEN: '[::1]:9091' }).metricsListen, { host: '::1', port: 9091 })
  t.same(loadConfig({ CC_METRICS_LISTEN: '0.0.0.0:9091' }).metricsListen, { host: '0.0.0.0', port: 9091 })
  t.equal(loadConfig({}).metricsListen, null)
})
