/**
 * Small programs the end-to-end tests run inside lab namespaces (`node bin/run-ts.js THIS MODE ...`):
 *
 *   ws-server HOST:PORT            WebSocket echo (text and binary, as received); prints `listening ...`
 *   ws-client URL CA_FILE ADDRESS  connects with the CA, resolving every name to ADDRESS, sends text,
 *                                  a 1 MB binary message and 200 small ones, checks every echo;
 *                                  prints one JSON line {ok, messages, bytes, error?}
 *   generate BYTES SEED            writes Generator(BYTES, SEED) (lab/generator.ts) to stdout, then
 *                                  its SHA-256 (hex) as the last line of stderr
 *   raw JSON                       RawOptions: `count` connections (TLS with SNI, or plain TCP) each
 *                                  writing `parts` `intervalMs` apart, reading until the server
 *                                  closes or `totalMs`; prints one JSON line: RawResult[]
 */
import { readFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import net, { type LookupFunction } from 'node:net'
import tls from 'node:tls'
import WebSocket, { WebSocketServer } from 'ws'
import { Generator } from './generator.ts'

function splitHostPort (text: string): { host: string, port: number } {
  const colon = text.lastIndexOf(':')
  return { host: text.slice(0, colon), port: Number(text.slice(colon + 1)) }
}

function wsServer (listen: string): void {
  const { host, port } = splitHostPort(listen)
  const wss = new WebSocketServer({ host, port, maxPayload: 16 << 20 })
  wss.on('connection', ws => {
    ws.on('message', (data, isBinary) => { ws.send(data, { binary: isBinary }) })
    ws.on('error', () => {})
  })
  wss.on('listening', () => { process.stdout.write(`listening ${listen}\n`) })
  for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => { wss.close(); process.exit(0) })
}

async function wsClient (url: string, caFile: string, address: string): Promise<void> {
  const lookup: LookupFunction = (_host, options, callback) => {
    if (options.all === true) (callback as unknown as (e: null, a: Array<{ address: string, family: number }>) => void)(null, [{ address, family: 4 }])
    else callback(null, address, 4)
  }
  const result = { ok: false, messages: 0, bytes: 0, error: undefined as string | undefined }
  const timer = setTimeout(() => { result.error = 'timed out'; print() }, 30_000)
  function print (): void {
    clearTimeout(timer)
    process.stdout.write(JSON.stringify(result) + '\n')
    process.exit(result.ok ? 0 : 1)
  }
  try {
    const ws = new WebSocket(url, { ca: readFileSync(caFile), lookup, maxPayload: 16 << 20 })
    const messages: Array<{ data: Buffer, binary: boolean }> = []
    let waiting: (() => void) | null = null
    ws.on('message', (data: Buffer, binary: boolean) => { messages.push({ data, binary }); waiting?.() })
    ws.on('unexpected-response', (_req, res) => { result.error = `HTTP ${res.statusCode ?? 0}`; print() })
    await once(ws, 'open')
    const next = async (): Promise<{ data: Buffer, binary: boolean }> => {
      while (messages.length === 0) await new Promise<void>(resolve => { waiting = resolve })
      return messages.shift()!
    }
    const expect = async (sent: Buffer | string): Promise<void> => {
      const got = await next()
      const binary = typeof sent !== 'string'
      if (got.binary !== binary || !got.data.equals(Buffer.from(sent))) throw new Error(`echo ${result.messages} differs`)
      result.messages++
      result.bytes += got.data.length
    }
    ws.send('hello through the tunnel')
    await expect('hello through the tunnel')
    const blob = randomBytes(1_000_000)
    ws.send(blob)
    await expect(blob)
    const small = Array.from({ length: 200 }, (_, i) => `message ${i}`)
    for (const m of small) ws.send(m)
    for (const m of small) await expect(m)
    ws.close(1000)
    await once(ws, 'close')
    result.ok = true
  } catch (err) {
    result.error ??= (err as Error).message
  }
  print()
}

export interface RawOptions {
  address: string
  port: number
  /** TLS with this SNI (and `ca`); absent: plain TCP. */
  sni?: string
  ca?: string
  parts: string[]
  intervalMs?: number
  totalMs: number
  count?: number
}

export interface RawResult {
  /** What the server sent (latin1, first 4 KiB). */
  response: string
  bytes: number
  /** The server closed (or reset) the connection before totalMs. */
  closed: boolean
  elapsedMs: number
  /** Parts written before the server closed. */
  written: number
  error?: string
}

async function rawOne (o: RawOptions): Promise<RawResult> {
  const started = Date.now()
  const result: RawResult = { response: '', bytes: 0, closed: false, elapsedMs: 0, written: 0 }
  return await new Promise(resolve => {
    const socket = o.sni !== undefined
      ? tls.connect({ host: o.address, port: o.port, servername: o.sni, ca: o.ca === undefined ? undefined : readFileSync(o.ca), ALPNProtocols: ['http/1.1'] })
      : net.connect({ host: o.address, port: o.port })
    let timer: NodeJS.Timeout | undefined
    let done = false
    const finish = (closed: boolean): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      clearTimeout(limit)
      result.closed = closed
      result.elapsedMs = Date.now() - started
      socket.destroy()
      resolve(result)
    }
    const limit = setTimeout(() => { finish(false) }, o.totalMs)
    socket.on('data', (b: Buffer) => {
      result.bytes += b.length
      if (result.response.length < 4096) result.response += b.toString('latin1').slice(0, 4096 - result.response.length)
    })
    socket.on('error', err => { result.error ??= err.message })
    socket.on('close', () => { finish(true) })
    const writeNext = (): void => {
      if (done || result.written >= o.parts.length) return
      socket.write(o.parts[result.written++])
      timer = setTimeout(writeNext, o.intervalMs ?? 0)
    }
    socket.once(o.sni !== undefined ? 'secureConnect' : 'connect', writeNext)
  })
}

async function raw (o: RawOptions): Promise<void> {
  const results = await Promise.all(Array.from({ length: o.count ?? 1 }, async () => await rawOne(o)))
  process.stdout.write(JSON.stringify(results) + '\n')
}

async function generate (bytes: number, seed: number): Promise<void> {
  const g = new Generator(bytes, seed)
  process.stdout.on('error', () => process.exit(1))
  for (let chunk = g.nextChunk(); chunk !== null; chunk = g.nextChunk()) {
    if (!process.stdout.write(chunk)) await once(process.stdout, 'drain')
  }
  await new Promise<void>(resolve => process.stdout.end(resolve))
  process.stderr.write(`${g.hash.digest('hex')}\n`)
}

const [mode, ...args] = process.argv.slice(2)
if (mode === 'ws-server') wsServer(args[0])
else if (mode === 'ws-client') await wsClient(args[0], args[1], args[2])
else if (mode === 'generate') await generate(Number(args[0]), Number(args[1]))
else if (mode === 'raw') await raw(JSON.parse(args[0]) as RawOptions)
else {
  process.stderr.write('usage: e2e-tools.ts ws-server HOST:PORT | ws-client URL CA ADDRESS | generate BYTES SEED | raw JSON\n')
  process.exit(2)
}
