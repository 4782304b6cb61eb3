/**
 * `cloud-connect start` as a user runs it (spawned, temp CC_DATA_DIR, free ports): it prints the
 * API URL, WireGuard endpoint and key, CA certificate and outbox; /health and /ready answer; an account can
 * register, verify (link from the outbox) and log in; an instance's container connects over
 * WireGuard and its web server answers HTTPS requests through the edge and the userspace TCP
 * stack; SIGTERM stops it cleanly. Bad settings stop it with one line naming the variable.
 */
import t, { type Test } from 'tap'
import { spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Metrics } from '../../gateway/metrics.ts'
import { TcpStack } from '../../gateway/netstack/tcp/index.ts'
import { generatePrivateKey, publicKeyFromPrivate } from '../../proto/noise/keys.ts'
import { IPPROTO_TCP, parseIPv4, parseIPv4Prefix } from '../../proto/wire/ipv4.ts'
import { parseLogLines } from '../helpers/strict-json.ts'
import { CLI, REPO_ROOT, json, spawnCli } from '../helpers/cli-process.ts'
import { serviceEnv } from '../agent/service.ts'
import { udpDevice } from '../helpers/udp-device.ts'


const baseEnv = (dataDir: string): NodeJS.ProcessEnv => serviceEnv(dataDir, {}, {})

function tempDir (t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'cc-start-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

interface Banner { api: string, wgPort: number, publicKey: string, https: number, ca: string, outbox: string }

async function waitForBanner (child: ChildProcess, output: { text: string }): Promise<Banner> {
  const deadline = Date.now() + 90_000
  while (!output.text.includes('  Data ') && Date.now() < deadline && child.exitCode === null) await new Promise(resolve => setTimeout(resolve, 50))
  const find = (re: RegExp): RegExpExecArray => {
    const m = re.exec(output.text)
    if (m === null) throw new Error(`no ${String(re)} in:\n${output.text}`)
    return m
  }
  const api = find(/^ {2}API +(http:\/\/\S+)\/v1 /m)[1]
  const wg = find(/^ {2}WireGuard +localhost:(\d+) +public key (\S+)$/m)
  return {
    api,
    wgPort: Number(wg[1]),
    publicKey: wg[2],
    https: Number(find(/^ {2}HTTPS +https:\/\/<subdomain>\.localhost:(\d+)/m)[1]),
    ca: find(/^ {2}CA certificate +(\S+)/m)[1],
    outbox: find(/^ {2}Mail outbox +(\S+)$/m)[1],
  }
}

/**
 * An Erugo container in miniature: WireGuard (Device + UdpShell), our userspace TCP on its tunnel
 * address, and an HTTP server on port 80 behind it.
 */
async function startContainer (t: Test, gatewayKey: string, wgPort: number, tunnelIp: string, privateKey: Buffer): Promise<{ requests: string[] }> {
  const metrics = new Metrics()
  const { device, shell } = udpDevice({
    privateKey,
    metrics,
    deliverPacket (packet) {
      const ip = parseIPv4(packet)
      if (ip.protocol === IPPROTO_TCP) tcp.input(ip, Buffer.from(packet.subarray(0, ip.headerLen + ip.payloadLen)))
    },
  })
  const tcp = new TcpStack({ localAddress: tunnelIp, ip: { send: datagram => { shell.sendPacket(datagram) } }, metrics })
  device.addPeer({ publicKey: Buffer.from(gatewayKey, 'base64'), allowedIPs: [parseIPv4Prefix('10.100.0.1/32')], endpoint: { address: '127.0.0.1', port: wgPort }, persistentKeepalive: 1 })
  await shell.listen()
  const requests: string[] = []
  const server = http.createServer((req, res) => {
    requests.push(`${req.method ?? ''} ${req.url ?? ''} host=${req.headers.host ?? ''} proto=${String(req.headers['x-forwarded-proto'])}`)
    res.writeHead(200, { 'content-type': 'text/plain' }).end(`hello from ${tunnelIp}\n`)
  })
  tcp.listen(80, socket => { server.emit('connection', socket) })
  t.teardown(async () => {
    tcp.close()
    server.close()
    await shell.close()
  })
  return { requests }
}

async function httpsGet (port: number, hostname: string, ca: string): Promise<{ status: number, body: string }> {
  return await new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, servername: hostname, path: '/shares', headers: { host: hostname }, ca, timeout: 10_000 }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body }) })
    })
    req.on('timeout', () => { req.destroy(new Error('timeout')) })
    req.on('error', reject)
    req.end()
  })
}

t.test('start: prints its facts, serves the API, carries a container\'s HTTPS, stops on SIGTERM', async t => {
  const dataDir = tempDir(t)
  const { child, output, exited } = spawnCli(t, ['start'], baseEnv(dataDir))

  const banner = await waitForBanner(child, output)
  t.match(banner.api, /^http:\/\/127\.0\.0\.1:\d+$/)
  t.ok(banner.wgPort > 0)
  t.ok(existsSync(banner.ca), 'the CA certificate exists')
  t.equal(banner.outbox, join(dataDir, 'outbox'))
  const keyFile = join(dataDir, 'gateway.key')
  t.equal(statSync(keyFile).mode & 0o777, 0o600, 'gateway key is 0600')
  t.equal(publicKeyFromPrivate(Buffer.from(readFileSync(keyFile, 'utf8').trim(), 'base64')).toString('base64'), banner.publicKey, 'the printed key is the stored key\'s')
  t.match(output.text, /"msg":"cloud-connect ready"/)

  const health = await json(`${banner.api}/health`)
  t.equal(health.status, 200)
  t.same(health.body, { status: 'ok', database: 'ok' })
  t.match(output.text, new RegExp(`health: ${banner.api}/health, ready: ${banner.api}/ready\\)`), 'the banner prints both URLs')
  const ready = await json(`${banner.api}/ready`)
  t.equal(ready.status, 200, JSON.stringify(ready.body))
  t.match(ready.body.components, { database: { status: 'ok' }, gateways: { status: 'ok' }, wireguard: { status: 'ok' }, https: { status: 'ok' }, stripe_webhooks: { status: 'not_configured' } })

  // Register, verify through the outbox, log in.
  const email = `start-${process.pid}@example.com`
  const password = 'correct horse battery'
  const reg = await json(`${banner.api}/v1/auth/register`, 'POST', { name: 'Start Test', email, password, password_confirmation: password, accept_terms: true, accept_privacy: true, accept_marketing: false, erugo_version: '1.0.0' })
  t.equal(reg.status, 201)
  let token: string | undefined
  for (let i = 0; i < 100 && token === undefined; i++) {
    const files = existsSync(banner.outbox) ? readdirSync(banner.outbox) : []
    for (const f of files) token ??= /verify-email\?token=([^\s&]+)/.exec(readFileSync(join(banner.outbox, f), 'utf8'))?.[1]
    if (token === undefined) await new Promise(resolve => setTimeout(resolve, 50))
  }
  t.ok(token, 'a verification mail in the outbox')
  t.equal((await json(`${banner.api}/v1/auth/verify-email?token=${token!}`)).status, 200)
  const login = await json(`${banner.api}/v1/auth/login`, 'POST', { email, password })
  t.equal(login.status, 200, 'register -> login works')
  const access = login.body.access_token as string

  // An instance: the credentials name this gateway.
  const created = await json(`${banner.api}/v1/instances`, 'POST', { name: 'Home', subdomain: 'myfiles' }, access)
  t.equal(created.status, 201)
  t.equal(created.body.instance.full_domain, 'myfiles.localhost')
  t.equal(created.body.credentials.wireguard.server_public_key, banner.publicKey)
  t.equal(created.body.credentials.wireguard.server_endpoint, `localhost:${banner.wgPort}`)
  const tunnelIp = created.body.instance.tunnel_ip as string

  // The container registers its key and serves HTTP behind the tunnel.
  const containerKey = generatePrivateKey()
  const registered = await json(`${banner.api}/v1/tunnel/register`, 'POST', { public_key: publicKeyFromPrivate(containerKey).toString('base64') }, created.body.credentials.instance_token)
  t.equal(registered.status, 200)
  const container = await startContainer(t, banner.publicKey, banner.wgPort, tunnelIp, containerKey)
  const ca = readFileSync(banner.ca, 'utf8')
  let answer: { status: number, body: string } | null = null
  for (let i = 0; i < 60 && answer?.status !== 200; i++) {
    answer = await httpsGet(banner.https, 'myfiles.localhost', ca).catch(() => null)
    if (answer?.status !== 200) await new Promise(resolve => setTimeout(resolve, 250))
  }
  t.equal(answer?.status, 200, 'HTTPS through the edge, the tunnel and both TCP stacks')
  t.equal(answer?.body, `hello from ${tunnelIp}\n`)
  t.match(container.requests[container.requests.length - 1], /^GET \/shares host=myfiles\.localhost proto=https$/)
  let status = ''
  for (let i = 0; i < 60 && status !== 'connected'; i++) {
    status = (await json(`${banner.api}/v1/tunnel/status`, 'GET', undefined, created.body.credentials.instance_token)).body.tunnel_status
    if (status !== 'connected') await new Promise(resolve => setTimeout(resolve, 250))
  }
  t.equal(status, 'connected', 'the gateway\'s handshake report made it connected')

  child.kill('SIGTERM')
  t.equal(await exited, 0, 'clean exit on SIGTERM')
  t.match(output.text, /"msg":"stopped"/)

  // Every log record of the run, read strictly: JSON.parse would hide a repeated key.
  const { records, bad } = parseLogLines(output.text.split('\n').filter(line => line.startsWith('{')).join('\n'))
  t.same(bad, [], 'no record with a repeated key or broken JSON')
  t.ok(records.length > 20, `${records.length} records read`)
  t.ok(records.some(r => typeof r.module === 'string' && r.module.includes('/')), 'nested modules logged as one joined path')
  t.ok(records.some(r => r.msg === 'request' && r.path === '/shares' && r.status === 200), 'the proxied request among them')
})

/** A TCP port free on loopback right now. */
async function freePort (): Promise<number> {
  const server = net.createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as net.AddressInfo).port
  await new Promise<void>(resolve => server.close(() => { resolve() }))
  return port
}

/** GET through the edge: TLS to 127.0.0.1 for `hostname`, trusting only `ca`. */
async function edgeGet (port: number, hostname: string, path: string, ca: string): Promise<{ status: number, headers: http.IncomingHttpHeaders, body: string }> {
  return await new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port, servername: hostname, path, headers: { host: `${hostname}:${port}` }, ca, timeout: 10_000 }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, body }) })
    })
    req.on('timeout', () => { req.destroy(new Error('timeout')) })
    req.on('error', reject)
    req.end()
  })
}

t.test('start: the dashboard and API names reach control through the edge, with the CA and HSTS', async t => {
  const dataDir = tempDir(t)
  const httpsPort = await freePort()
  const { child, output, exited } = spawnCli(t, ['start'], { ...baseEnv(dataDir), CC_HTTPS_PORT: String(httpsPort) })
  const banner = await waitForBanner(child, output)
  t.equal(banner.https, httpsPort)
  t.match(output.text, new RegExp(`^ {2}Dashboard +https://app\\.localhost:${httpsPort}/$`, 'm'), 'the banner names the dashboard')
  t.match(output.text, new RegExp(`^ {2}API +https://api\\.localhost:${httpsPort}/v1$`, 'm'), 'and the API through the edge')
  t.match(output.text, /^ {2}API +http:\/\/127\.0\.0\.1:\d+\/v1 +\(direct/m, 'the direct API line is kept, marked as direct')
  const ca = readFileSync(banner.ca, 'utf8')

  // The control route comes with the first snapshot: poll briefly.
  let health: { status: number, headers: http.IncomingHttpHeaders, body: string } | null = null
  for (let i = 0; i < 40 && health?.status !== 200; i++) {
    health = await edgeGet(httpsPort, 'app.localhost', '/health', ca).catch(() => null)
    if (health?.status !== 200) await new Promise(resolve => setTimeout(resolve, 250))
  }
  t.equal(health?.status, 200, 'https://app.localhost/health through the edge')
  t.same(JSON.parse(health?.body ?? '{}'), { status: 'ok', database: 'ok' })
  t.equal(health?.headers['strict-transport-security'], 'max-age=31536000')
  const openapi = await edgeGet(httpsPort, 'api.localhost', '/v1/openapi.json', ca)
  t.equal(openapi.status, 200, 'https://api.localhost/v1/openapi.json through the edge')
  t.equal(openapi.headers['strict-transport-security'], 'max-age=31536000')
  t.ok(JSON.parse(openapi.body).openapi, 'the OpenAPI document')
  const appApi = await edgeGet(httpsPort, 'app.localhost', '/v1/openapi.json', ca)
  t.equal(appApi.status, 200, 'the API on the dashboard\'s origin too')

  // Mail links point at the dashboard's origin (CC_PUBLIC_URL's default in start).
  const email = `front-${process.pid}@example.com`
  const password = 'correct horse battery'
  const reg = await json(`${banner.api}/v1/auth/register`, 'POST', { name: 'Front Test', email, password, password_confirmation: password, accept_terms: true, accept_privacy: true, accept_marketing: false, erugo_version: '1.0.0' })
  t.equal(reg.status, 201)
  let mail = ''
  for (let i = 0; i < 100 && mail === ''; i++) {
    const files = existsSync(banner.outbox) ? readdirSync(banner.outbox) : []
    mail = files.map(f => readFileSync(join(banner.outbox, f), 'utf8')).find(text => text.includes('verify-email?token=')) ?? ''
    if (mail === '') await new Promise(resolve => setTimeout(resolve, 50))
  }
  t.match(mail, new RegExp(`https://app\\.localhost:${httpsPort}/\\S*verify-email\\?token=`), 'the verification link opens the dashboard\'s origin')

  child.kill('SIGTERM')
  t.equal(await exited, 0, 'clean exit on SIGTERM')
})

t.test('start: a bad setting stops it with one line naming the variable', async t => {
  const dataDir = tempDir(t)
  const cases: Array<[string, string, RegExp]> = [
    ['CC_HTTPS_PORT', 'https', /^cloud-connect start: CC_HTTPS_PORT: /],
    ['CC_WG_PORT', '70000', /^cloud-connect start: CC_WG_PORT: /],
    ['CC_BASE_DOMAIN', 'not a domain!', /^cloud-connect start: CC_BASE_DOMAIN: /],
    ['CC_REPORT_INTERVAL', 'often', /^cloud-connect start: CC_REPORT_INTERVAL: /],
  ]
  for (const [name, value, pattern] of cases) {
    const r = spawnSync(process.execPath, [CLI, 'start'], { cwd: REPO_ROOT, env: { ...baseEnv(dataDir), [name]: value }, encoding: 'utf8', timeout: 60_000 })
    t.equal(r.status, 2, `${name}: exit 2`)
    t.equal(r.stderr.trim().split('\n').length, 1, `${name}: one line`)
    t.match(r.stderr, pattern, `${name}: names the variable`)
  }
  const help = spawnSync(process.execPath, [CLI, 'start', '--help'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 60_000 })
  t.equal(help.status, 0)
  t.match(help.stdout, /^Usage: cloud-connect start/)
  for (const name of ['CC_API_PORT', 'CC_HTTPS_PORT', 'CC_HTTP_PORT', 'CC_WG_PORT', 'CC_DATA_DIR', 'CC_BASE_DOMAIN', 'CC_REPORT_INTERVAL']) t.match(help.stdout, name)
})
