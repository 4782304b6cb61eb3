/**
 * `start`'s /ready includes the in-process gateway: control and gateway wired as start wires them
 * (the RPC service called directly, no listener), then the WireGuard socket and the HTTPS listener
 * are closed under it and /ready names each.
 */
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { addGatewayReadiness } from '../../cli/commands/start.ts'
import { loadConfig } from '../../control/config.ts'
import { loadRpcConfig, startControlPlane } from '../../control/rpc/index.ts'
import { loadGatewayEnv } from '../../gateway/control/env.ts'
import { startGatewayWithControl } from '../../gateway/control/run.ts'

t.test('start: /ready reports the WireGuard socket and the HTTPS listener, and names each once closed', async t => {
  const dataDir = mkdtempSync(join(tmpdir(), 'cc-start-ready-'))
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  const logger = pino({ level: 'silent' })
  const config = loadConfig({ CC_DATA_DIR: dataDir, CC_API_HOST: '127.0.0.1', CC_API_PORT: '0', CC_PUBLIC_URL: 'https://app.localhost:8443', CC_LOG_LEVEL: 'silent' })
  const plane = await startControlPlane({ config, rpc: loadRpcConfig({ CC_REPORT_INTERVAL: '0.5' }), listen: false, logger })
  t.teardown(() => plane.stop(0))
  const settings = loadGatewayEnv({ CC_DATA_DIR: dataDir, CC_WG_HOST: '127.0.0.1', CC_WG_PORT: '0', CC_EDGE_HOST: '127.0.0.1', CC_HTTPS_PORT: '0', CC_HTTP_PORT: 'off' })
  const running = await startGatewayWithControl({ plane: plane.rpc, settings, logger, store: null, reportIntervalMs: 500 })
  if (running === null) throw new Error('the gateway got no configuration')
  t.teardown(() => running.stop(0))
  addGatewayReadiness(plane.services.readiness, running.gateway)
  const ready = async (): Promise<{ status: number, body: any }> => { // eslint-disable-line @typescript-eslint/no-explicit-any
    const res = await plane.app.inject({ method: 'GET', url: '/ready' })
    return { status: res.statusCode, body: JSON.parse(res.payload) }
  }

  let res = await ready()
  t.equal(res.status, 200, JSON.stringify(res.body))
  t.match(res.body.components.wireguard, { status: 'ok', detail: /^UDP socket bound on 127\.0\.0\.1:\d+$/, checked_at: /^\d{4}-/ })
  t.match(res.body.components.https, { status: 'ok', detail: /^listening on 127\.0\.0\.1:\d+$/ })
  t.match(res.body.components.gateways, { status: 'ok', detail: /^1\/1 gateways reporting/ }, 'the in-process gateway said hello')
  t.match(res.body.components.stripe_webhooks, { status: 'not_configured' })

  await running.gateway.shell.close()
  res = await ready()
  t.equal(res.status, 503)
  t.equal(res.body.error.code, 'SERVICE_UNAVAILABLE')
  t.match(res.body.error.message, /^Not ready: wireguard$/)
  t.match(res.body.error.details.components.wireguard, { status: 'failing', detail: /^the UDP socket on 127\.0\.0\.1:\d+ is closed$/ })
  t.equal(res.body.error.details.components.https.status, 'ok', 'the HTTPS listener is still up')

  await running.gateway.edge!.close(0)
  res = await ready()
  t.equal(res.status, 503)
  t.same(res.body.error.details.failing, ['wireguard', 'https'])
  t.match(res.body.error.details.components.https, { status: 'failing', detail: /^the HTTPS listener on 127\.0\.0\.1:\d+ is closed$/ })
})
