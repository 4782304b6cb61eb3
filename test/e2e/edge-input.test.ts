/**
 * Bad input on the public edge of `cloud-connect start`, with two instances (two owners, two
 * containers) behind it: malformed requests, oversized headers, request smuggling framing, a Host
 * of one instance on a connection whose SNI named the other (HTTP/1.1 and HTTP/2), TLS garbage and
 * unknown names, and slowloris trickles. Each gets a clear 4xx or a close; the containers keep
 * being served to everyone else meanwhile (normal requests succeed while 20 trickling connections
 * are open), and the service keeps running.
 *
 *   ns gw: cloud-connect start, curl, raw TLS clients (e2e-tools.ts raw)
 *     | veth                     | veth
 *   ns peera: wireguard-go, nginx   ns peerb: wireguard-go, nginx
 */
import t from 'tap'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { Lab, requireLab } from '../helpers/lab.ts'
import {
  ApiClient, connectPeer, createInstance, httpsCurlExit, httpsFetch, rawExchange, listenEnv, serviceEnv, signUp, startAllInOne,
  startOrigin, twoContainerLab, waitForHttps, type RawOptions,
} from '../helpers/lab/e2e.ts'

const BASE_DOMAIN = 'cc.test'
const API_PORT = 8080
const WG_PORT = 51820
const HTTPS_PORT = 8443
/** The edge's default: client request headers must be complete within 60 s (checked every 5 s). */
const HEADERS_TIMEOUT_S = 60

t.test('the edge: bad input gets a 4xx or a close, everyone else is still served', async t => {
  if (!requireLab(t, ['nginx'])) return
  const lab = await Lab.create(t)
  const { gwNs, nsA, nsB, publicIp } = await twoContainerLab(lab)
  const dataDir = mkdtempSync(join(tmpdir(), 'cc-e2e-edge-'))
  t.teardown(() => { rmSync(dataDir, { recursive: true, force: true }) })
  for (const who of ['a', 'b']) {
    mkdirSync(join(dataDir, `files-${who}`))
    writeFileSync(join(dataDir, `files-${who}`, 'whoami.txt'), `container ${who.toUpperCase()}\n`)
  }

  const svc = await startAllInOne(lab, gwNs, serviceEnv({
    CC_DATA_DIR: join(dataDir, 'service'),
    CC_BASE_DOMAIN: BASE_DOMAIN,
    ...listenEnv(publicIp, { api: API_PORT, wg: WG_PORT, https: HTTPS_PORT }),
    CC_HTTP_PORT: '8000',
  }))
  const api = new ApiClient(lab, gwNs, svc.api)
  const instances = []
  for (const [who, ns] of [['alpha', nsA], ['bravo', nsB]] as const) {
    const access = await signUp(api, svc.outbox, `${who}@example.com`)
    const inst = await createInstance(api, access, who)
    await connectPeer(lab, new ApiClient(lab, ns, `http://${publicIp}:${API_PORT}`), inst.token)
    await startOrigin(lab, ns, join(dataDir, `files-${who[0]}`))
    instances.push(inst)
  }
  const [hostA, hostB] = instances.map(i => i.fullDomain)
  t.equal((await waitForHttps(lab, gwNs, hostA, HTTPS_PORT, '/whoami.txt', svc.ca)).body, 'container A\n')
  t.equal((await waitForHttps(lab, gwNs, hostB, HTTPS_PORT, '/whoami.txt', svc.ca)).body, 'container B\n')

  const tlsTo = (sni: string, parts: string[], extra: Partial<RawOptions> = {}): Promise<Awaited<ReturnType<typeof rawExchange>>> =>
    rawExchange(lab, gwNs, { address: '127.0.0.1', port: HTTPS_PORT, sni, ca: svc.ca, parts, totalMs: 10_000, ...extra })
  const normal = async (host: string, body: string): Promise<void> => {
    const r = await httpsFetch(lab, gwNs, host, HTTPS_PORT, '/whoami.txt', svc.ca, [], 20)
    if (r.status !== 200 || r.body !== body) throw new Error(`${host}: ${r.status} ${r.body.slice(0, 200)}`)
  }

  // Slowloris first: 20 connections on A's name trickling header lines, open through everything below.
  const trickle = tlsTo(hostA, [`GET /whoami.txt HTTP/1.1\r\nHost: ${hostA}\r\n`, ...Array.from({ length: 60 }, (_, i) => `X-Slow-${i}: y\r\n`)],
    { intervalMs: 2000, totalMs: (HEADERS_TIMEOUT_S + 30) * 1000, count: 20 })
  const trickleStarted = Date.now()
  await sleep(1000)
  const served: string[] = []
  const failed: string[] = []
  const normalLoop = (async () => {
    // Everyone else, while the trickles are open: a request to each container every 3 s.
    while (Date.now() - trickleStarted < (HEADERS_TIMEOUT_S - 5) * 1000) {
      try {
        await normal(hostA, 'container A\n')
        await normal(hostB, 'container B\n')
        served.push(`${((Date.now() - trickleStarted) / 1000).toFixed(0)}s`)
      } catch (err) {
        failed.push((err as Error).message)
      }
      await sleep(3000)
    }
  })()

  await t.test('malformed requests: 400 and the connection closed', async t => {
    for (const [what, request] of [
      ['a request line that is not HTTP', 'THIS IS NOT HTTP\r\n\r\n'],
      ['a header line without a colon', `GET /whoami.txt HTTP/1.1\r\nHost: ${hostA}\r\nno colon here\r\n\r\n`],
      ['a control character in a header value', `GET /whoami.txt HTTP/1.1\r\nHost: ${hostA}\r\nX-Bad: a\u0001b\r\n\r\n`],
      ['Content-Length and Transfer-Encoding together (smuggling)', `POST /upload HTTP/1.1\r\nHost: ${hostA}\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /whoami.txt HTTP/1.1\r\nHost: ${hostA}\r\n\r\n`],
      ['two different Content-Length values', `POST /upload HTTP/1.1\r\nHost: ${hostA}\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nabcde`],
      ['an absolute-form target for another site', `GET http://example.com/ HTTP/1.1\r\nHost: ${hostA}\r\n\r\n`],
    ] as const) {
      const [r] = await tlsTo(hostA, [request])
      t.match(r.response, /^HTTP\/1\.1 400 /, `${what}: 400`)
      t.notMatch(r.response, /container A/, `${what}: nothing reached the container`)
      if (!what.startsWith('an absolute-form')) t.ok(r.closed, `${what}: closed`)
    }
  })

  await t.test('oversized headers: 431', async t => {
    const [one] = await tlsTo(hostA, [`GET /whoami.txt HTTP/1.1\r\nHost: ${hostA}\r\nX-Big: ${'a'.repeat(32 * 1024)}\r\n\r\n`])
    t.match(one.response, /^HTTP\/1\.1 431 /, 'one 32 KiB header')
    t.ok(one.closed)
    const many = Array.from({ length: 1500 }, (_, i) => `X-Header-${String(i).padStart(4, '0')}: vvvvvvvvvv\r\n`).join('')
    const [lots] = await tlsTo(hostA, [`GET /whoami.txt HTTP/1.1\r\nHost: ${hostA}\r\n${many}\r\n`])
    t.match(lots.response, /^HTTP\/1\.1 431 /, '1500 small headers (34 KB)')
    t.ok(lots.closed)
    const h2 = await lab.curl(gwNs, ['-sS', '-o', '/dev/null', '-w', '%{http_code} %{http_version}', '--http2', '-H', `X-Big: ${'b'.repeat(32 * 1024)}`,
      '--cacert', svc.ca, '--resolve', `${hostA}:${HTTPS_PORT}:127.0.0.1`, `https://${hostA}:${HTTPS_PORT}/whoami.txt`], { timeoutMs: 20_000 })
    t.ok(h2.code !== 0 || /^4\d\d 2$/.test(h2.stdout), `HTTP/2: refused (curl ${h2.code}, ${h2.stdout})`)
  })

  await t.test('a Host of the other instance on a connection opened for this one: 421, never its content', async t => {
    const [r] = await tlsTo(hostA, [`GET /whoami.txt HTTP/1.1\r\nHost: ${hostB}\r\n\r\n`])
    t.match(r.response, /^HTTP\/1\.1 421 /, 'HTTP/1.1: 421 Misdirected Request')
    t.notMatch(r.response, /container B/)
    const [kept] = await tlsTo(hostA, [`GET /whoami.txt HTTP/1.1\r\nHost: ${hostA}\r\n\r\nGET /whoami.txt HTTP/1.1\r\nHost: ${hostB}\r\n\r\n`])
    t.match(kept.response, /container A/, 'the first request on the connection is served')
    t.match(kept.response, /HTTP\/1\.1 421 /, 'the second, for the other instance, is not')
    t.notMatch(kept.response, /container B/)
    const h2 = await httpsFetch(lab, gwNs, hostA, HTTPS_PORT, '/whoami.txt', svc.ca, ['--http2', '-H', `Host: ${hostB}`])
    t.equal(h2.status, 421, 'HTTP/2 (:authority of the other instance): 421')
    t.notMatch(h2.body, /container B/)
    t.equal(await httpsCurlExit(lab, gwNs, `nobody.${BASE_DOMAIN}`, HTTPS_PORT, '/', svc.ca), 35, 'a name no instance has: no certificate, TLS refused')
  })

  await t.test('not TLS at all: the connection is closed', async t => {
    const [garbage] = await rawExchange(lab, gwNs, { address: '127.0.0.1', port: HTTPS_PORT, parts: [randomBytes(4096).toString('latin1')], totalMs: 10_000 })
    t.ok(garbage.closed, `random bytes: closed after ${garbage.elapsedMs} ms`)
    const [plain] = await rawExchange(lab, gwNs, { address: '127.0.0.1', port: HTTPS_PORT, parts: [`GET / HTTP/1.1\r\nHost: ${hostA}\r\n\r\n`], totalMs: 10_000 })
    t.ok(plain.closed, 'plain HTTP on the HTTPS port: closed')
    t.notMatch(plain.response, /container A/)
  })

  await t.test('slowloris: every trickling connection is cut at the headers timeout; others were served throughout', async t => {
    const results = await trickle
    await normalLoop
    t.equal(results.length, 20)
    const late = results.filter(r => !r.closed || r.elapsedMs > (HEADERS_TIMEOUT_S + 15) * 1000)
    t.same(late.map(r => r.elapsedMs), [], 'all closed by the server within the headers timeout (+ its check interval)')
    t.comment(`closed after ${(Math.min(...results.map(r => r.elapsedMs)) / 1000).toFixed(1)}-${(Math.max(...results.map(r => r.elapsedMs)) / 1000).toFixed(1)} s, ${results[0].written} header lines in`)
    t.same(results.filter(r => r.response !== '' && !r.response.startsWith('HTTP/1.1 408 ')).map(r => r.response.slice(0, 100)), [], 'each got a 408 or a plain close')
    t.notOk(results.some(r => r.response.includes('container A')), 'no trickle reached the container')
    t.same(failed, [], 'no normal request failed meanwhile')
    t.ok(served.length >= 5, `normal requests to both containers succeeded meanwhile (at ${served.join(', ')})`)
  })

  await normal(hostA, 'container A\n')
  await normal(hostB, 'container B\n')
  t.ok(svc.process.running, 'the service is still running')
})
