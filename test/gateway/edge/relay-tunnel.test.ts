/**
 * Two real gateways and a real tunnel on loopback, no root needed: A holds the WireGuard session
 * with the instance (a third Gateway acting as the container, its HTTP origin on its own userspace
 * TCP); B has no peer and learns the fleet and routes from a snapshot. Everything through B is
 * relayed to A as a stream (the default mode: B ends the client's TLS with its certificate, the
 * client trusting both gateways' CAs as a fleet's shared certificates would be trusted, and pipes
 * the plaintext to A's edge): HTTP/1.1, HTTP/2, WebSocket, 100 MB each way byte-exact,
 * X-Forwarded-For once with the client's address.
 */
import t from 'tap'
import fs from 'node:fs'
import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import { once } from 'node:events'
import { createHash, randomBytes } from 'node:crypto'
import pino from 'pino'
import WebSocket, { WebSocketServer } from 'ws'
import { Gateway } from '../../../gateway/index.ts'
import { validateConfig, type GatewayConfig } from '../../../gateway/config/schema.ts'
import { snapshotFromConfig } from '../../../gateway/control/static-file.ts'
import { encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../../../proto/noise/keys.ts'
import type { FleetGateway } from '../../../proto/rpc/index.ts'
import { loopbackLookup, tempDir } from './helpers.ts'

const HOST = 'files.example.test'
const MB = 1024 * 1024
const BLOCK = randomBytes(MB)
const silent = pino({ level: 'silent' })

function keyPair (): { privateKey: string, publicKey: string } {
  const key = generatePrivateKey()
  return { privateKey: encodeKey(key), publicKey: encodeKey(publicKeyFromPrivate(key)) }
}

/** The config each gateway started from (a gateway keeps its peers in its device, not in its config). */
const configs = new Map<Gateway, GatewayConfig>()

async function startGateway (t: Parameters<typeof tempDir>[0], raw: Record<string, unknown>): Promise<Gateway> {
  const config = validateConfig({ listenAddress: '127.0.0.1', listenPort: 0, udpIo: 'dgram', ...raw })
  const gw = await Gateway.start(config, silent)
  configs.set(gw, config)
  t.teardown(() => gw.close(0))
  return gw
}

t.test('gateway B without a session relays to gateway A over the real tunnel', async t => {
  const a = keyPair()
  const b = keyPair()
  const container = keyPair()
  const edge = (dir: string): Record<string, unknown> => ({ dataDir: dir, httpsListen: '127.0.0.1:0', httpListen: null, relayListen: '127.0.0.1:0' })
  const peer = { publicKey: container.publicKey, allowedIPs: ['10.100.0.2/32'], hostnames: [HOST], port: 80, name: 'inst' }
  const gwA = await startGateway(t, { privateKey: a.privateKey, address: '10.100.0.1', peers: [peer], edge: edge(tempDir(t)) })
  const gwB = await startGateway(t, { privateKey: b.privateKey, address: '10.100.255.254', edge: edge(tempDir(t)) })

  // The container: our own WireGuard + TCP, an HTTP (and WebSocket) origin on 10.100.0.2:80.
  const gwC = await startGateway(t, {
    privateKey: container.privateKey,
    address: '10.100.0.2',
    peers: [{ publicKey: a.publicKey, allowedIPs: ['10.100.0.1/32'], endpoint: gwA.listen, persistentKeepalive: 1 }],
  })
  const seen: Array<string | string[] | undefined> = []
  let uploaded = ''
  const origin = http.createServer({ requestTimeout: 0 }, (req, res) => {
    seen.push(req.headers['x-forwarded-for'])
    if (req.method === 'PUT') {
      const hash = createHash('sha256')
      req.on('data', (c: Buffer) => hash.update(c))
      req.on('end', () => { uploaded = hash.digest('hex'); res.end(uploaded) })
      return
    }
    const m = /^\/blocks\/(\d+)$/.exec(req.url ?? '')
    if (m === null) { res.end(`hello ${req.url}`); return }
    const count = Number(m[1])
    res.writeHead(200, { 'content-length': count * MB })
    let sent = 0
    const more = (): void => {
      while (sent < count) {
        sent++
        if (!res.write(BLOCK)) { res.once('drain', more); return }
      }
      res.end()
    }
    more()
  })
  const wss = new WebSocketServer({ server: origin })
  wss.on('connection', ws => { ws.on('message', (d: Buffer) => ws.send(`echo:${d.toString()}`)) })
  gwC.tcp.listen(80, socket => { socket.on('error', () => {}); origin.emit('connection', socket) })
  t.teardown(() => { wss.close(); origin.closeAllConnections() })

  const deadline = Date.now() + 10_000
  while (!gwA.sessionLive('inst') && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 20))
  t.ok(gwA.sessionLive('inst'), 'A holds a live session with the container')

  const fleet: FleetGateway[] = [
    { id: 'gw-a', relayUrl: `https://127.0.0.1:${gwA.edge!.relayAddress()!.port}`, relayFingerprint: gwA.relayIdentity!.fingerprint },
    { id: 'gw-b', relayUrl: `https://127.0.0.1:${gwB.edge!.relayAddress()!.port}`, relayFingerprint: gwB.relayIdentity!.fingerprint },
  ]
  const routes = [{ instanceId: 'inst', hostnames: [HOST], gateways: ['gw-a'] }]
  gwA.applySnapshot({ ...snapshotFromConfig(configs.get(gwA)!, 2), fleet, routes })
  gwB.applySnapshot({ ...snapshotFromConfig(configs.get(gwB)!, 2), fleet, routes })
  t.equal(gwB.status().relay?.fleet, 2)
  await gwB.edge!.certificatesSettled()
  t.ok(gwB.edge!.certificateStates().some(c => c.hostname === HOST && c.status === 'active'), 'B has a certificate for a name only in the fleet routes')

  const ca = [fs.readFileSync(gwA.edge!.caCertificatePath!), fs.readFileSync(gwB.edge!.caCertificatePath!)]
  // The client's own address, distinct from the one B's relay connections come from (127.0.0.1).
  const localAddress = '127.0.0.9'
  const port = gwB.edge!.addresses().https.port
  const get = (path: string, options: https.RequestOptions = {}): Promise<{ status: number, body: Buffer }> => new Promise((resolve, reject) => {
    const req = https.request({ host: HOST, port, path, ca, localAddress, lookup: loopbackLookup, agent: false, ...options }, res => {
      const chunks: Buffer[] = []
      res.on('data', (c: Buffer) => chunks.push(c))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }))
    })
    req.on('error', reject)
    req.end()
  })

  await t.test('HTTP/1.1, X-Forwarded-For once', async t => {
    const res = await get('/one', { headers: { 'x-forwarded-for': '203.0.113.1' } })
    t.equal(res.status, 200)
    t.equal(res.body.toString(), 'hello /one')
    t.same(seen.at(-1), localAddress, 'the client\'s address, once')
    t.ok(gwB.metrics.family('relay_stream', '').get('out') >= 1, 'B piped the connection to A')
    t.ok(gwA.metrics.family('relay_stream', '').get('in') >= 1, 'A took it from the relay')
  })

  await t.test('HTTP/2', async t => {
    const session = http2.connect(`https://${HOST}:${port}`, { ca, localAddress, lookup: loopbackLookup } as http2.SecureClientSessionOptions)
    t.teardown(() => session.close())
    const stream = session.request({ ':path': '/two' })
    const [headers] = await once(stream, 'response') as [http2.IncomingHttpHeaders]
    let body = ''
    stream.on('data', (c: Buffer) => { body += c.toString() })
    await once(stream, 'end')
    t.equal(headers[':status'], 200)
    t.equal(body, 'hello /two')
    t.same(seen.at(-1), localAddress, 'HTTP/2: the client\'s address, once')
  })

  await t.test('WebSocket', async t => {
    const ws = new WebSocket(`wss://${HOST}:${port}/ws`, { ca, localAddress, lookup: loopbackLookup } as WebSocket.ClientOptions)
    await once(ws, 'open')
    ws.send('ping')
    const [reply] = await once(ws, 'message') as [Buffer]
    t.equal(reply.toString(), 'echo:ping')
    ws.close()
  })

  await t.test('100 MB down and 100 MB up, byte-exact', async t => {
    const expected = createHash('sha256')
    for (let i = 0; i < 100; i++) expected.update(BLOCK)
    const digest = expected.digest('hex')

    const down = await new Promise<{ status: number, sha: string, bytes: number }>((resolve, reject) => {
      const req = https.request({ host: HOST, port, path: '/blocks/100', ca, localAddress, lookup: loopbackLookup, agent: false }, res => {
        const hash = createHash('sha256')
        let bytes = 0
        res.on('data', (c: Buffer) => { bytes += c.length; hash.update(c) })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, sha: hash.digest('hex'), bytes }))
        res.on('error', reject)
      })
      req.on('error', reject)
      req.end()
    })
    t.equal(down.status, 200)
    t.equal(down.bytes, 100 * MB)
    t.equal(down.sha, digest, 'download byte-exact')

    const up = await new Promise<{ status: number, body: string }>((resolve, reject) => {
      const req = https.request({ host: HOST, port, path: '/upload', method: 'PUT', ca, localAddress, lookup: loopbackLookup, agent: false, headers: { 'content-length': 100 * MB } }, res => {
        let body = ''
        res.on('data', (c: Buffer) => { body += c.toString() })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      })
      req.on('error', reject)
      let sent = 0
      const more = (): void => {
        while (sent < 100) {
          sent++
          if (!req.write(BLOCK)) { req.once('drain', more); return }
        }
        req.end()
      }
      more()
    })
    t.equal(up.status, 200)
    t.equal(up.body, digest, 'upload byte-exact')
  })

  t.ok(seen.every(v => v === localAddress), 'every request reached the origin with one X-Forwarded-For, the client\'s')
})
