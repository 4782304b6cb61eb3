/** startGatewayWithControl in a fleet: the hello carries region, relay URL and fingerprint; the long-poll names the gateway. */
import t from 'tap'
import http from 'node:http'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { AddressInfo } from 'node:net'
import { pino } from 'pino'
import { loadGatewayEnv } from '../../../gateway/control/env.ts'
import { HttpControlPlane } from '../../../gateway/control/http-client.ts'
import { startGatewayWithControl } from '../../../gateway/control/run.ts'
import { RPC_PROTOCOL_VERSION } from '../../../proto/rpc/index.ts'
import { freePort } from '../../helpers/ports.ts'
import { until } from './harness.ts'

t.test('hello: region, relayUrl and the relay certificate\'s fingerprint; config long-poll: gateway=ID', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'cc-run-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const hellos: Array<Record<string, unknown>> = []
  const polls: string[] = []
  const server = http.createServer((req, res) => {
    let body = ''
    req.on('data', (c: Buffer) => { body += c.toString() })
    req.on('end', () => {
      res.setHeader('content-type', 'application/json')
      if (req.url?.startsWith('/internal/v1/config') === true) {
        polls.push(req.url)
        if (req.url.includes('since=')) { res.statusCode = 204; res.end(); return }
        res.end(JSON.stringify({ version: 1, gateway: { address: '10.100.0.1', listenPort: 0 }, peers: [] }))
      } else if (req.url === '/internal/v1/hello') {
        hellos.push(JSON.parse(body) as Record<string, unknown>)
        res.end(JSON.stringify({ protocol: RPC_PROTOCOL_VERSION, gatewayId: 'gw-r', reportIntervalMs: 60_000, configVersion: 1 }))
      } else {
        res.end(JSON.stringify({ peers: 0, certificates: 0 }))
      }
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { server.closeAllConnections(); server.close() })
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  const relayPort = await freePort()
  const settings = loadGatewayEnv({
    CC_DATA_DIR: dir, CC_WG_HOST: '127.0.0.1', CC_WG_PORT: '0', CC_EDGE_HOST: '127.0.0.1', CC_HTTPS_PORT: '0', CC_HTTP_PORT: 'off',
    CC_GATEWAY_ID: 'gw-r', CC_GATEWAY_REGION: 'eu-west', CC_GATEWAY_ENDPOINT: 'gw-r.example.com:51820', CC_RELAY_PORT: String(relayPort),
  })
  const running = await startGatewayWithControl({ plane: new HttpControlPlane({ url, secret: 's'.repeat(43) }), settings, logger: pino({ level: 'silent' }), store: null })
  t.ok(running)
  t.teardown(() => running!.stop(0))
  await until('hello', () => hellos.length > 0)
  t.equal(hellos[0].region, 'eu-west')
  t.equal(hellos[0].relayUrl, `https://gw-r.example.com:${relayPort}`)
  t.equal(hellos[0].relayFingerprint, running!.gateway.relayIdentity!.fingerprint)
  t.match(String(hellos[0].relayFingerprint), /^[0-9a-f]{64}$/)
  t.equal(running!.gateway.edge!.relayAddress()!.port, relayPort, 'the relay listener is up on CC_RELAY_PORT')
  t.ok(polls.every(p => p.includes('gateway=gw-r')), 'every long-poll names the gateway')
})
