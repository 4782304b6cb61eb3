/**
 * Per-instance usage and access log end to end, without root: the control app on PGlite with its
 * RPC listener, a real Gateway with its edge (local CA) run by the HTTP control plane, and a
 * container (another Gateway, its HTTP origin on its own userspace TCP) registered through the
 * API. Known requests through the edge must come back to the owner exactly: counts, body bytes,
 * paths without the query string, the client's address truncated.
 */
import t, { type Test } from 'tap'
import fs, { mkdtempSync, rmSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pino } from 'pino'
import { Gateway } from '../../../gateway/index.ts'
import { validateConfig } from '../../../gateway/config/schema.ts'
import { loadGatewayEnv } from '../../../gateway/control/env.ts'
import { HttpControlPlane } from '../../../gateway/control/http-client.ts'
import { startGatewayWithControl, type RunningGateway } from '../../../gateway/control/run.ts'
import { encodeKey } from '../../../proto/noise/keys.ts'
import { openTestDatabase, bearer } from '../../control/harness.ts'
import { mustCreate, newUser } from '../../control/routes/tunnel-fixtures.ts'
import { SECRET, startRpc } from '../../control/rpc/fixtures.ts'
import { loopbackLookup } from '../edge/helpers.ts'
import { newKeyPair, until } from './harness.ts'

const silent = pino({ level: 'silent' })

async function runGateway (t: Test, url: string): Promise<RunningGateway> {
  const dir = mkdtempSync(join(tmpdir(), 'cc-traffic-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const settings = loadGatewayEnv({
    CC_DATA_DIR: dir, CC_WG_HOST: '127.0.0.1', CC_WG_PORT: '0', CC_EDGE: '1', CC_EDGE_HOST: '127.0.0.1', CC_HTTPS_PORT: '0', CC_HTTP_PORT: 'off', CC_GATEWAY_ID: 'gw-traffic',
  })
  const running = await startGatewayWithControl({ plane: new HttpControlPlane({ url, secret: SECRET }), settings, logger: silent, store: null, reportIntervalMs: 200 })
  if (running === null) throw new Error('gateway did not start')
  t.teardown(() => running.stop(0))
  return running
}

interface Sent { method: string, path: string, body: number, status: number, answered: number }

t.test('after known traffic through the edge, the owner\'s usage and access log match it exactly', async t => {
  const db = await openTestDatabase(t, 'pglite')
  const h = await startRpc(t, db, { waitMs: 25_000 })
  const { gateway } = await runGateway(t, h.server!.url)
  const gatewayKey = gateway.device.publicKey.toString('base64')
  const owner = await newUser(h, 'traffic-owner')
  const inst = await mustCreate(t, h, owner.token, 'traffic-e2e')
  const host = 'traffic-e2e.erugo.test'

  // The container: WireGuard to the gateway, an origin on its tunnel address, port 80.
  const key = newKeyPair()
  t.equal((await h.request('POST', '/v1/tunnel/register', { public_key: key.publicKey }, bearer(inst.token))).status, 200)
  await until('the peer on the gateway', () => gateway.device.peer(key.publicKey) !== undefined)
  const container = await Gateway.start(validateConfig({
    privateKey: encodeKey(key.privateKey),
    address: inst.tunnelIp,
    listenAddress: '127.0.0.1',
    listenPort: 0,
    udpIo: 'dgram',
    peers: [{ publicKey: gatewayKey, allowedIPs: ['10.100.0.1/32'], endpoint: gateway.listen, persistentKeepalive: 1 }],
  }), silent)
  t.teardown(() => container.close(0))
  const origin = http.createServer((req, res) => {
    let received = 0
    req.on('data', (c: Buffer) => { received += c.length })
    req.on('end', () => {
      if (req.url?.startsWith('/missing') === true) { res.writeHead(404); res.end('not here'); return }
      if (req.method === 'PUT') { res.writeHead(204); res.end(); return }
      const size = Number(/size=(\d+)/.exec(req.url ?? '')?.[1] ?? received)
      res.end('r'.repeat(size))
    })
  })
  container.tcp.listen(80, socket => { socket.on('error', () => {}); origin.emit('connection', socket) })
  await until('the container\'s handshake', () => gateway.sessionLive(inst.id), 15_000)

  const port = gateway.edge!.addresses().https.port
  const ca = fs.readFileSync(gateway.edge!.caCertificatePath!)
  const send = async (method: string, target: string, body: number): Promise<{ status: number, answered: number }> => await new Promise((resolve, reject) => {
    const req = https.request({ host, port, method, path: target, ca, servername: host, lookup: loopbackLookup, agent: false }, res => {
      let answered = 0
      res.on('data', (c: Buffer) => { answered += c.length })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, answered }))
    })
    req.on('error', reject)
    req.end(body > 0 ? Buffer.alloc(body, 0x61) : undefined)
  })
  const plan: Array<[string, string, number, string]> = [
    ['POST', '/upload', 1000, '/upload'],
    ['GET', '/download?size=2500&token=s3cret-value', 0, '/download'],
    ['PUT', '/files/report.pdf', 300, '/files/report.pdf'],
    ['GET', '/missing', 0, '/missing'],
    ['POST', '/upload', 7, '/upload'],
  ]
  const sent: Sent[] = []
  for (const [method, target, body, path] of plan) {
    const { status, answered } = await send(method, target, body)
    sent.push({ method, path, body, status, answered })
  }
  t.same(sent.map(s => [s.status, s.answered]), [[200, 1000], [200, 2500], [204, 0], [404, 8], [200, 7]], 'the origin answered as planned')

  const log = async (): ReturnType<typeof h.request> => await h.request('GET', `/v1/instances/${inst.id}/access-log`, undefined, bearer(owner.token))
  await until('every request in the access log', async () => (await log()).body.entries.length === plan.length, 10_000)
  // One more report interval: nothing may arrive twice.
  await new Promise(resolve => setTimeout(resolve, 600))
  const res = await log()
  t.equal(res.status, 200)
  t.same(res.body.entries.map((e: { method: string, path: string, status: number, bytes_in: number, bytes_out: number, client: string }) => [e.method, e.path, e.status, e.bytes_in, e.bytes_out, e.client]),
    [...sent].reverse().map(s => [s.method, s.path, s.status, s.body, s.answered, '127.0.0.0']), 'newest first, body bytes exact, client truncated to its /24')
  t.equal(res.body.next_cursor, null)
  t.notMatch(res.raw, /s3cret|token=|size=/, 'the query string is nowhere in the answer')
  t.notOk((await db('instance_access_log').pluck('path') as string[]).some(p => p.includes('?')), 'nor in the table')
  t.same(await db('instance_access_log').distinct('client').pluck('client'), ['127.0.0.0'], 'no full address stored')

  const usage = await h.request('GET', `/v1/instances/${inst.id}/usage`, undefined, bearer(owner.token))
  t.equal(usage.status, 200)
  t.same(usage.body.totals, {
    bytes_in: sent.reduce((n, s) => n + s.body, 0),
    bytes_out: sent.reduce((n, s) => n + s.answered, 0),
    requests: plan.length,
  }, 'usage totals match the traffic')
  t.equal(usage.body.buckets.reduce((n: number, b: { requests: number }) => n + b.requests, 0), plan.length)

  const stranger = await newUser(h, 'traffic-stranger')
  t.equal((await h.request('GET', `/v1/instances/${inst.id}/usage`, undefined, bearer(stranger.token))).status, 404, 'another user: usage 404')
  t.equal((await h.request('GET', `/v1/instances/${inst.id}/access-log`, undefined, bearer(stranger.token))).status, 404, 'another user: access log 404')
})
