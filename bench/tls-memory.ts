/**
 * Where the memory of a held TLS connection goes, in one process on loopback: a server (plain TCP,
 * node's tls, node's http2 server with allowHTTP1 as the edge makes it, or a real Edge in front of
 * a loopback origin) in a child process, clients in this one. 20 connections opened and closed
 * (warm-up), then 1, then N from 127.3.0.0/16 (one per address), each sending one request (with an
 * --up body first) and reading the answer (an --down body), then held idle. Per connection: the
 * difference between the N and the 1 reading over N - 1, after four forced collections, of RSS, the
 * JS heap and glibc malloc's bytes in use and free (mallinfo2); and the OpenSSL mode of the server's
 * SSL_CTX and of a live SSL (bench/native/tls-probe.c, built here with cc). With --live the server
 * runs under bench/native/malloc-live.c (LD_PRELOAD) and the blocks allocated while the N were
 * opened and still live at the end are listed by size and allocating function (addr2line).
 * Servers in turn, --rounds times. Loopback only; not root; needs cc and Node's headers.
 */
import { execFileSync, fork, type ChildProcess } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import http from 'node:http'
import http2 from 'node:http2'
import { createRequire } from 'node:module'
import net from 'node:net'
import { loadavg, tmpdir } from 'node:os'
import { dirname, join, resolve } from 'node:path'
import tls from 'node:tls'
import { fileURLToPath } from 'node:url'
import { setTimeout as sleep } from 'node:timers/promises'
import { isMain, numberOption, parseBenchArgs, UsageError } from './baseline/cli.ts'
import { benchDataDir, startLoopbackEdge } from './baseline/edge.ts'

const ROOT = resolve(fileURLToPath(import.meta.url), '../..')
const OUT = join(ROOT, 'bench', 'out', 'native')
const SERVERS = ['net', 'tls', 'h2', 'edge'] as const
type ServerKind = typeof SERVERS[number]
const HOSTNAME = 'app.tls-memory.test'
const WARM_UP = 20
const OPEN_PARALLEL = 100
const OPEN_TIMEOUT_MS = 30_000

const SPEC = {
  name: 'bench/tls-memory.ts',
  about: `Memory per held TLS connection in one server process, by layer (RSS, JS heap, malloc in use
and free) and, with --live, by allocating function. Servers: net (plain TCP), tls (node's tls), h2
(http2.createSecureServer with allowHTTP1, as the edge), edge (an Edge in front of a loopback
origin). Needs cc and Node's headers (node_api.h, openssl/); loopback only; not root.`,
  options: {
    connections: { type: 'string', default: '2000', value: 'N', help: 'connections held, 2-20000' },
    servers: { type: 'string', default: 'net,tls,h2,edge', value: 'LIST', help: `servers in turn, of ${SERVERS.join(', ')}` },
    rounds: { type: 'string', default: '1', value: 'N', help: 'rounds over the servers, 1-10' },
    up: { type: 'string', default: '0', value: 'BYTES', help: 'request body each connection sends before idling, 0-16777216' },
    down: { type: 'string', default: '0', value: 'BYTES', help: 'response body each connection reads before idling, 0-16777216' },
    'down-chunk': { type: 'string', value: 'BYTES', help: 'the net, tls and h2 servers write the response body in pieces of this size, each after the last was taken (default: one write)' },
    'tls-write-max': { type: 'string', value: 'BYTES', help: "the edge's tlsWriteMax, 0-16383 (0: node's own writes; default: the edge's default, 16000)" },
    h2: { type: 'boolean', help: 'clients speak HTTP/2 (ALPN h2; windows as a browser sets them: 6 MiB per stream, 15 MiB per connection), one request each; servers h2 and edge only' },
    live: { type: 'boolean', help: 'record the live malloc blocks by allocating function (slow; use a few hundred connections)' },
    'server-env': { type: 'string', value: "'K=V ...'", help: 'environment added to the server process (GLIBC_TUNABLES=..., MALLOC_ARENA_MAX=2)' },
  },
} as const

interface Settings {
  connections: number
  servers: ServerKind[]
  rounds: number
  up: number
  down: number
  downChunk: number
  tlsWriteMax: number
  h2: boolean
  live: boolean
  serverEnv: Record<string, string>
}

interface Reading {
  rss: number
  heapUsed: number
  arrayBuffers: number
  /** mallinfo2: arena, hblkhd (mmapped), uordblks (in use), fordblks (free) */
  malloc: number[]
  ctxMode: number | null
  sslMode: number[]
}

interface Probe {
  ctxMode (external: unknown): number | undefined
  watchSslMode (external: unknown): number
  sslMode (): number[]
  mallinfo (): number[]
  liveStart (): number
  liveDump (path: string): number
}

/** Builds bench/native/NAME.c into bench/out/native once; the path of the result. */
function buildNative (source: string, output: string, extra: string[]): string {
  const out = join(OUT, output)
  const src = join(ROOT, 'bench', 'native', source)
  if (existsSync(out)) return out
  const include = [join(dirname(process.execPath), '..', 'include', 'node'), '/usr/include/node'].find(dir => existsSync(join(dir, 'node_api.h')))
  if (include === undefined) throw new Error(`no Node headers (node_api.h) next to ${process.execPath}`)
  mkdirSync(OUT, { recursive: true })
  execFileSync(process.env.CC ?? 'cc', ['-O2', '-Wall', '-Wextra', '-shared', '-fPIC', `-I${include}`, '-o', out, src, ...extra], { stdio: ['ignore', 'inherit', 'inherit'] })
  return out
}

// ---- server side (a child process: --serve KIND) ----

function serve (kind: ServerKind, down: number, downChunk: number, tlsWriteMax: number): void {
  const probe = createRequire(import.meta.url)(buildNative('tls-probe.c', 'tls-probe.node', [])) as Probe
  const body = Buffer.alloc(down, 0x61)
  const answer: Answer = (req, res) => {
    req.resume()
    req.on('end', () => {
      res.writeHead(200, { 'content-length': String(down === 0 ? 2 : down) })
      if (down === 0) res.end('ok')
      else writeInPieces(res as unknown as NodeJS.WritableStream, body, downChunk, () => res.end())
    })
  }
  const reply = (socket: net.Socket): void => {
    // Reads the whole request (and any body after it), answers the first read.
    socket.on('data', () => {})
    socket.once('data', () => {
      if (down === 0) { socket.write('HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok'); return }
      socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${down}\r\n\r\n`)
      writeInPieces(socket, body, downChunk, () => {})
    })
  }
  // Stopped with SIGTERM: exit through process.exit so the 'exit' hooks remove the edge's data directory.
  process.once('SIGTERM', () => process.exit(0))
  const started = kind === 'edge' ? startEdge(answer, tlsWriteMax) : startBare(kind, reply, answer)
  void started.then(({ port, external }) => {
    if (external !== undefined) probe.watchSslMode(external)
    const reading = (): Reading => {
      for (let i = 0; i < 4; i++) (globalThis as { gc?: () => void }).gc?.()
      const m = process.memoryUsage()
      return { rss: m.rss, heapUsed: m.heapUsed, arrayBuffers: m.arrayBuffers, malloc: probe.mallinfo(), ctxMode: external === undefined ? null : probe.ctxMode(external) ?? null, sslMode: probe.sslMode() }
    }
    process.on('message', (message: { op: string, path?: string }) => {
      if (message.op === 'read') process.send?.({ reading: reading() })
      else if (message.op === 'live-start') process.send?.({ ok: probe.liveStart() })
      else if (message.op === 'live-dump') process.send?.({ ok: probe.liveDump(message.path ?? '') })
    })
    process.send?.({ port })
  })
}

/**
 * `body` in writes of `piece` bytes (0: one write), the next one only once the last was taken by the
 * socket (a write waiting in the stream's buffer would be joined with the next into one larger
 * TLS write).
 */
function writeInPieces (out: NodeJS.WritableStream, body: Buffer, piece: number, done: () => void): void {
  const size = piece === 0 ? body.length : piece
  let offset = 0
  const next = (): void => {
    if (offset >= body.length) { done(); return }
    const chunk = body.subarray(offset, offset + size)
    offset += size
    out.write(chunk, () => next())
  }
  next()
}

type Answer = (req: http.IncomingMessage | http2.Http2ServerRequest, res: http.ServerResponse | http2.Http2ServerResponse) => void

async function startBare (kind: ServerKind, reply: (socket: net.Socket) => void, answer: Answer): Promise<{ port: number, external: unknown }> {
  const { key, cert } = selfSigned()
  const server = kind === 'net'
    ? net.createServer(reply)
    : kind === 'tls'
      ? tls.createServer({ key, cert }, reply)
      : http2.createSecureServer({ key, cert, allowHTTP1: true }, answer as (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => void)
  if (kind === 'h2') {
    const limits = server as unknown as { keepAliveTimeout: number }
    limits.keepAliveTimeout = 3_600_000
    ;(server as http2.Http2SecureServer).setTimeout(0)
  }
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return { port: (server.address() as net.AddressInfo).port, external: sharedContextExternal(server) }
}

/** The v8::External holding the SSL_CTX of a TLS server's default context (node's private field). */
function sharedContextExternal (server: unknown): unknown {
  const creds = (server as { _sharedCreds?: { context?: { _external?: unknown } } })._sharedCreds
  return creds?.context?._external
}

async function startEdge (answer: Answer, tlsWriteMax: number): Promise<{ port: number, external: unknown }> {
  const origin = http.createServer({ keepAliveTimeout: 3_600_000 }, answer as http.RequestListener)
  await new Promise<void>(resolve => origin.listen(0, '127.0.0.1', resolve))
  const edge = await startLoopbackEdge(benchDataDir('tls-memory'), [{ instanceId: 'tls-memory', tunnelIp: '127.0.0.1', port: (origin.address() as net.AddressInfo).port, hostnames: [HOSTNAME] }], {
    keepAliveTimeoutMs: 3_600_000,
    idleTimeoutMs: 3_600_000,
    ...(tlsWriteMax >= 0 ? { tlsWriteMax } : {}),
  })
  const server = (edge as unknown as { httpsServer?: unknown }).httpsServer
  return { port: edge.addresses().https.port, external: sharedContextExternal(server) }
}

/** An EC P-256 certificate for the bare servers (the edge issues its own from its local CA). */
function selfSigned (): { key: string, cert: string } {
  const dir = mkdtempSync(join(tmpdir(), 'cc-tls-memory-'))
  try {
    execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '2', '-subj', `/CN=${HOSTNAME}`], { stdio: 'ignore' })
    return { key: readFileSync(join(dir, 'key.pem'), 'utf8'), cert: readFileSync(join(dir, 'cert.pem'), 'utf8') }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

// ---- client side ----

class Server {
  private constructor (readonly child: ChildProcess, readonly port: number) {}

  static async start (kind: ServerKind, s: Settings, liveLibrary: string | undefined): Promise<Server> {
    const env: NodeJS.ProcessEnv = { ...process.env, ...s.serverEnv }
    if (liveLibrary !== undefined) env.LD_PRELOAD = liveLibrary
    const child = fork(join(ROOT, 'bin', 'run-ts.js'), [join(ROOT, 'bench', 'tls-memory.ts'), '--serve', kind, '--down', String(s.down), '--down-chunk', String(s.downChunk), '--tls-write-max', String(s.tlsWriteMax)], { execArgv: ['--expose-gc'], env, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    process.on('exit', () => child.kill('SIGKILL'))
    const port = await new Promise<number>((resolve, reject) => {
      child.once('message', (m: { port: number }) => resolve(m.port))
      child.once('exit', code => reject(new Error(`${kind} server exited (${code})`)))
    })
    return new Server(child, port)
  }

  async ask<T> (message: { op: string, path?: string }): Promise<T> {
    return await new Promise<T>(resolve => {
      this.child.once('message', m => resolve(m as T))
      this.child.send(message)
    })
  }

  async stop (): Promise<void> {
    const exited = new Promise(resolve => this.child.once('exit', resolve))
    this.child.kill('SIGTERM')
    await exited
  }
}

/** One connection from 127.3.x.y: a request (after an `up`-byte body), its whole answer read, then held. */
async function open (kind: ServerKind, port: number, index: number, s: Settings): Promise<Held> {
  const options = { port, host: '127.0.0.1', localAddress: `127.3.${(index >> 8) & 255}.${index & 255 || 1}` }
  if (s.h2) return await openH2(options, index, s)
  return await new Promise((resolve, reject) => {
    const socket: net.Socket = kind === 'net'
      ? net.connect(options, send)
      : tls.connect({ ...options, servername: HOSTNAME, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] }, send)
    const timer = setTimeout(() => { socket.destroy(); reject(new Error(`connection ${index} not answered in ${OPEN_TIMEOUT_MS} ms`)) }, OPEN_TIMEOUT_MS)
    socket.on('error', err => { clearTimeout(timer); reject(err) })
    function send (): void {
      const head = s.up === 0
        ? `GET / HTTP/1.1\r\nhost: ${HOSTNAME}\r\n\r\n`
        : `POST / HTTP/1.1\r\nhost: ${HOSTNAME}\r\ncontent-length: ${s.up}\r\n\r\n`
      socket.write(head)
      if (s.up > 0) socket.write(Buffer.alloc(s.up, 0x62))
      let got = 0
      const want = Math.max(s.down, 2)
      socket.on('data', (chunk: Buffer) => {
        got += chunk.length
        if (got < want) return
        socket.removeAllListeners('data')
        socket.on('data', () => {})
        clearTimeout(timer)
        resolve(socket)
      })
    }
  })
}

interface Held { destroy: () => void }

/** The same over HTTP/2: one session, one stream read to its end, the session held. */
async function openH2 (options: tls.ConnectionOptions, index: number, s: Settings): Promise<Held> {
  return await new Promise((resolve, reject) => {
    const session = http2.connect(`https://${HOSTNAME}`, {
      createConnection: () => tls.connect({ ...options, servername: HOSTNAME, rejectUnauthorized: false, ALPNProtocols: ['h2'] }),
      settings: { initialWindowSize: 6 * 1048576 },
    })
    const timer = setTimeout(() => { session.destroy(); reject(new Error(`connection ${index} not answered in ${OPEN_TIMEOUT_MS} ms`)) }, OPEN_TIMEOUT_MS)
    session.on('error', err => { clearTimeout(timer); reject(err) })
    session.once('connect', () => { session.setLocalWindowSize(15 * 1048576) })
    const stream = session.request(s.up === 0 ? { ':path': '/' } : { ':path': '/', ':method': 'POST', 'content-length': String(s.up) })
    stream.on('error', err => { clearTimeout(timer); reject(err) })
    stream.end(s.up > 0 ? Buffer.alloc(s.up, 0x62) : undefined)
    stream.on('data', () => {})
    stream.on('end', () => { clearTimeout(timer); resolve(session) })
  })
}

interface Row {
  round: number
  server: ServerKind
  load: string
  rssKB: number
  heapKB: number
  mallocInUseKB: number
  mallocFreeKB: number
  mallocMmapKB: number
  rssHeldMB: number
  ctxMode: string
  sslMode: string
}

async function measure (kind: ServerKind, round: number, s: Settings, liveLibrary: string | undefined): Promise<Row> {
  const server = await Server.start(kind, s, liveLibrary)
  const held: Held[] = []
  try {
    for (let i = 0; i < WARM_UP; i++) (await open(kind, server.port, 60_000 + i, s)).destroy()
    await sleep(300)
    held.push(await open(kind, server.port, 1, s))
    await sleep(300)
    const { reading: one } = await server.ask<{ reading: Reading }>({ op: 'read' })
    if (liveLibrary !== undefined) await server.ask({ op: 'live-start' })
    for (let i = 2; i <= s.connections; i += OPEN_PARALLEL) {
      const batch: Array<Promise<Held>> = []
      for (let j = i; j < Math.min(i + OPEN_PARALLEL, s.connections + 1); j++) batch.push(open(kind, server.port, j, s))
      held.push(...await Promise.all(batch))
    }
    await sleep(1_000)
    const { reading: all } = await server.ask<{ reading: Reading }>({ op: 'read' })
    if (liveLibrary !== undefined) {
      const path = join(OUT, `live-${kind}.txt`)
      await server.ask({ op: 'live-dump', path })
      printLive(kind, path, s.connections - 1)
    }
    const per = (a: number, b: number): number => Math.round((b - a) / (s.connections - 1) / 1024 * 100) / 100
    const hex = (v: number | null | undefined): string => v === null || v === undefined || v < 0 ? '-' : `0x${v.toString(16)}`
    return {
      round,
      server: kind,
      load: loadavg()[0]!.toFixed(1),
      rssKB: per(one.rss, all.rss),
      heapKB: per(one.heapUsed, all.heapUsed),
      mallocInUseKB: per(one.malloc[2]!, all.malloc[2]!),
      mallocFreeKB: per(one.malloc[3]!, all.malloc[3]!),
      mallocMmapKB: per(one.malloc[1]!, all.malloc[1]!),
      rssHeldMB: Math.round(all.rss / 1048576 * 10) / 10,
      ctxMode: hex(all.ctxMode),
      sslMode: all.sslMode[1] === 0 ? '-' : hex(all.sslMode[0]),
    }
  } finally {
    for (const socket of held) socket.destroy()
    await server.stop()
  }
}

/** The live blocks by size, with the first caller that is not an allocator wrapper. */
function printLive (kind: ServerKind, path: string, per: number): void {
  const bySite = new Map<string, { size: number, count: number, callers: string[] }>()
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line === '') continue
    const [size, ...callers] = line.split(' ')
    const key = `${size} ${callers.join(' ')}`
    const site = bySite.get(key) ?? { size: Number(size), count: 0, callers }
    site.count++
    bySite.set(key, site)
  }
  const sites = [...bySite.values()].filter(site => site.count >= per / 2).sort((a, b) => b.size * b.count - a.size * a.count).slice(0, 20)
  const names = symbolize([...new Set(sites.flatMap(site => site.callers))])
  console.log(`\nlive malloc blocks per connection, ${kind} (blocks allocated while the ${per} were opened, still live; sites with at least one block per two connections):`)
  console.log('| bytes | blocks per connection | allocated in |\n|---:|---:|---|')
  for (const site of sites) {
    const chain = site.callers.map(a => names.get(a) ?? a).filter(n => !/^(CRYPTO_(z|m)alloc|operator new|\?\?)/.test(n)).slice(0, 2).join(' < ')
    console.log(`| ${site.size} | ${(site.count / per).toFixed(2)} | ${chain} |`)
  }
}

/** Function names for addresses in the node binary (addr2line), where it can. */
function symbolize (addresses: string[]): Map<string, string> {
  const names = new Map<string, string>()
  const real = addresses.filter(a => a !== '(nil)')
  if (real.length === 0) return names
  try {
    const out = execFileSync('addr2line', ['-f', '-C', '-e', process.execPath, ...real], { encoding: 'utf8', maxBuffer: 1 << 24 }).split('\n')
    real.forEach((a, i) => names.set(a, withoutParameters(out[i * 2] ?? '??')))
  } catch {
    // No addr2line: raw addresses.
  }
  return names
}

/** `ns::f(int, char const*) const` -> `ns::f`; a `(anonymous namespace)` inside the name stays. */
function withoutParameters (name: string): string {
  const end = name.replace(/ const$/, '')
  if (!end.endsWith(')')) return end
  let depth = 0
  for (let i = end.length - 1; i >= 0; i--) {
    if (end[i] === ')') depth++
    else if (end[i] === '(' && --depth === 0) return end.slice(0, i)
  }
  return end
}

function settings (values: Record<string, string | boolean | undefined>): Settings {
  const servers = String(values.servers).split(',').map(name => name.trim())
  for (const name of servers) if (!(SERVERS as readonly string[]).includes(name)) throw new UsageError(`--servers: unknown server "${name}"`)
  if (values.h2 === true && servers.some(name => name !== 'h2' && name !== 'edge')) throw new UsageError('--h2: servers h2 and edge only')
  const serverEnv: Record<string, string> = {}
  for (const pair of String(values['server-env'] ?? '').split(/\s+/).filter(p => p !== '')) {
    const eq = pair.indexOf('=')
    if (eq <= 0) throw new UsageError(`--server-env: "${pair}" is not K=V`)
    serverEnv[pair.slice(0, eq)] = pair.slice(eq + 1)
  }
  return {
    connections: numberOption('connections', values.connections as string, 2, 20_000),
    servers: servers as ServerKind[],
    rounds: numberOption('rounds', values.rounds as string, 1, 10),
    up: numberOption('up', values.up as string, 0, 16_777_216),
    down: numberOption('down', values.down as string, 0, 16_777_216),
    downChunk: values['down-chunk'] === undefined ? 0 : numberOption('down-chunk', values['down-chunk'] as string, 1, 16_777_216),
    tlsWriteMax: values['tls-write-max'] === undefined ? -1 : numberOption('tls-write-max', values['tls-write-max'] as string, 0, 16_383),
    h2: values.h2 === true,
    live: values.live === true,
    serverEnv,
  }
}

async function main (): Promise<void> {
  const serveAt = process.argv.indexOf('--serve')
  if (serveAt !== -1) {
    const option = (name: string): number => { const at = process.argv.indexOf(name); return at === -1 ? 0 : Number(process.argv[at + 1]) }
    serve(process.argv[serveAt + 1] as ServerKind, option('--down'), option('--down-chunk'), option('--tls-write-max'))
    return
  }
  const s = parseBenchArgs(SPEC, values => settings(values))
  buildNative('tls-probe.c', 'tls-probe.node', [])
  const liveLibrary = s.live ? buildNative('malloc-live.c', 'malloc-live.so', ['-ldl']) : undefined
  console.log(`TLS memory bench ${new Date().toISOString()}, node ${process.version} (OpenSSL ${process.versions.openssl}), ${s.connections} connections, up ${s.up} B, down ${s.down} B${s.h2 ? ' over HTTP/2' : ''}${s.tlsWriteMax >= 0 ? `, edge tlsWriteMax ${s.tlsWriteMax}` : ''}${s.downChunk > 0 ? ` in writes of ${s.downChunk} B` : ''}${Object.keys(s.serverEnv).length > 0 ? `, server env ${JSON.stringify(s.serverEnv)}` : ''}, load average ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
  const rows: Row[] = []
  for (let round = 1; round <= s.rounds; round++) {
    for (const kind of s.servers) rows.push(await measure(kind, round, s, liveLibrary))
  }
  console.log('\n| round | server | load | RSS KB | JS heap KB | malloc in use KB | malloc free KB | malloc mmapped KB | RSS held MB | SSL_CTX mode | live SSL mode |')
  console.log('|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|')
  for (const r of rows) console.log(`| ${r.round} | ${r.server} | ${r.load} | ${r.rssKB} | ${r.heapKB} | ${r.mallocInUseKB} | ${r.mallocFreeKB} | ${r.mallocMmapKB} | ${r.rssHeldMB} | ${r.ctxMode} | ${r.sslMode} |`)
  console.log('(per connection: the N-connection reading minus the 1-connection reading, over N - 1; modes: SSL_MODE_AUTO_RETRY 0x4, SSL_MODE_RELEASE_BUFFERS 0x10)')
  console.log(`load average after: ${loadavg().map(l => l.toFixed(2)).join(' ')}`)
}

if (isMain(import.meta.url)) await main()
