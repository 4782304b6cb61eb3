/**
 * IPv6 end to end on loopback, no root needed: a real gateway on its default dual-stack addresses
 * and a container (a second Gateway, its HTTP origin on its own userspace TCP) whose WireGuard
 * endpoint for the gateway is first 127.0.0.1 and then [::1]. HTTPS clients over 127.0.0.1 and
 * [::1]; the origin sees each client's address in X-Forwarded-For and in Forwarded (RFC 7239,
 * IPv6 quoted and bracketed); the gateway reports the container's endpoint as plain IPv4, then
 * follows it to IPv6 (roaming, paper 2.1). Both UDP socket implementations.
 */
import t from 'tap'
import { until } from '../../helpers/until.ts'
import fs from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import type net from 'node:net'
import pino from 'pino'
import { Gateway } from '../../../gateway/index.ts'
import { validateConfig } from '../../../gateway/config/schema.ts'
import { batchedUdpUnavailable, type UdpIo } from '../../../gateway/wireguard/socket.ts'
import { encodeKey, generatePrivateKey, publicKeyFromPrivate } from '../../../proto/noise/keys.ts'
import { captureLogger, tempDir } from './helpers.ts'

const HOST = 'files.example.test'
const silent = pino({ level: 'silent' })

function keyPair (): { privateKey: string, publicKey: string } {
  const key = generatePrivateKey()
  return { privateKey: encodeKey(key), publicKey: encodeKey(publicKeyFromPrivate(key)) }
}

/** dns.lookup replacement resolving every name to `address` (the TLS servername stays the name). */
function lookupTo (address: string): net.LookupFunction {
  const family = address.includes(':') ? 6 : 4
  return ((_host: string, options: unknown, cb: (...args: unknown[]) => void): void => {
    if (typeof options === 'object' && options !== null && (options as { all?: boolean }).all === true) cb(null, [{ address, family }])
    else cb(null, address, family)
  }) as unknown as net.LookupFunction
}


const kinds: UdpIo[] = ['dgram']
if (batchedUdpUnavailable === null) kinds.push('batched')
else t.comment(`batched UDP socket ${batchedUdpUnavailable}: only node:dgram is tested`)

for (const io of kinds) {
  t.test(`${io}: HTTPS over 127.0.0.1 and [::1] to an instance whose tunnel roams from IPv4 to IPv6`, async t => {
    const gateway = keyPair()
    const container = keyPair()
    const { logger, lines } = captureLogger()
    // The gateway as a deployment runs it: no listen addresses given, so every listener is dual-stack.
    const gw = await Gateway.start(validateConfig({
      privateKey: gateway.privateKey,
      listenPort: 0,
      udpIo: io,
      address: '10.100.0.1',
      peers: [{ publicKey: container.publicKey, allowedIPs: ['10.100.0.2/32'], hostnames: [HOST], port: 80, name: 'inst' }],
      edge: { dataDir: tempDir(t), httpsListen: '[::]:0', httpListen: null },
    }), logger)
    t.teardown(() => gw.close(0))
    t.match(gw.listen, /^\[::\]:\d+$/, `WireGuard listens on [::] (${gw.listen})`)
    const wgPort = Number(gw.listen.slice(gw.listen.lastIndexOf(':') + 1))
    const httpsAddress = gw.edge!.addresses().https
    t.equal(httpsAddress.address, '::', 'HTTPS listens on ::')

    const containerPeer = (endpoint: string): Record<string, unknown> =>
      ({ publicKey: gateway.publicKey, allowedIPs: ['10.100.0.1/32'], endpoint, persistentKeepalive: 1 })
    const containerRaw = { privateKey: container.privateKey, listenPort: 0, udpIo: io, address: '10.100.0.2' }
    const gwC = await Gateway.start(validateConfig({ ...containerRaw, peers: [containerPeer(`127.0.0.1:${wgPort}`)] }), silent)
    t.teardown(() => gwC.close(0))

    const seen: Array<{ xff: unknown, realIp: unknown, forwarded: unknown }> = []
    const origin = http.createServer((req, res) => {
      seen.push({ xff: req.headers['x-forwarded-for'], realIp: req.headers['x-real-ip'], forwarded: req.headers.forwarded })
      res.end(`hello ${req.url}`)
    })
    gwC.tcp.listen(80, socket => { socket.on('error', () => {}); origin.emit('connection', socket) })
    t.teardown(() => { origin.closeAllConnections() })

    await gw.edge!.certificatesSettled()
    const ca = fs.readFileSync(gw.edge!.caCertificatePath!)
    const get = (address: string, path: string): Promise<{ status: number, body: string }> => new Promise((resolve, reject) => {
      const req = https.request({ host: HOST, port: httpsAddress.port, path, ca, lookup: lookupTo(address), agent: false }, res => {
        let body = ''
        res.on('data', (c: Buffer) => { body += c.toString() })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
      })
      req.on('error', reject)
      req.end()
    })
    const endpoint = (): string | null => gw.status().peers.find(p => p.publicKey === container.publicKey)?.endpoint ?? null

    await until('the tunnel over IPv4', () => gw.sessionLive('inst'), 10_000)
    t.match(endpoint(), new RegExp(`^127\\.0\\.0\\.1:\\d+$`), `an IPv4 peer on the dual-stack socket is reported as plain IPv4 (${String(endpoint())})`)

    const v4 = await get('127.0.0.1', '/over-ipv4')
    t.same(v4, { status: 200, body: 'hello /over-ipv4' }, 'HTTPS over 127.0.0.1 reaches the instance')
    t.same(seen.at(-1), { xff: '127.0.0.1', realIp: '127.0.0.1', forwarded: `for=127.0.0.1;host="${HOST}:${httpsAddress.port}";proto=https` },
      'an IPv4 client is forwarded as plain IPv4')

    const v6 = await get('::1', '/over-ipv6')
    t.same(v6, { status: 200, body: 'hello /over-ipv6' }, 'HTTPS over [::1] reaches the instance')
    t.same(seen.at(-1), { xff: '::1', realIp: '::1', forwarded: `for="[::1]";host="${HOST}:${httpsAddress.port}";proto=https` },
      'an IPv6 client: bare in X-Forwarded-For, quoted and bracketed in Forwarded (RFC 7239 6)')
    const logged = lines.filter(l => l.msg === 'request').map(l => l.client)
    t.ok(logged.includes('::1') && logged.includes('127.0.0.1'), `the request log names both clients (${JSON.stringify(logged)})`)
    t.notOk(JSON.stringify(lines).includes('::ffff:'), 'no IPv4-mapped address in any log line')

    // Roaming: the container comes back from an IPv6 address (as an agent does after a network
    // change: a new socket and a fresh handshake); the gateway follows its authenticated packets.
    await gwC.close(0)
    const gwC6 = await Gateway.start(validateConfig({ ...containerRaw, peers: [containerPeer(`[::1]:${wgPort}`)] }), silent)
    t.teardown(() => gwC6.close(0))
    gwC6.tcp.listen(80, socket => { socket.on('error', () => {}); origin.emit('connection', socket) })
    await until('the gateway to follow the container to IPv6', () => endpoint()?.startsWith('[::1]:') === true, 10_000)
    t.match(endpoint(), /^\[::1\]:\d+$/, `the container's endpoint is now IPv6 (${String(endpoint())})`)
    const after = await get('::1', '/after-roaming')
    t.same(after, { status: 200, body: 'hello /after-roaming' }, 'requests reach the instance over the IPv6 tunnel')
    t.equal(gw.status().udp.sendErrors, 0, 'no send failed on either family')
  })
}
