/**
 * tus resumable uploads through the edge with a real tus server (@tus/server + @tus/file-store)
 * as origin and tus-js-client as the client: Location URLs name the public https address (built
 * by the origin from our forwarding headers), and an upload cut mid-way resumes where it stopped.
 */
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import https from 'node:https'
import net from 'node:net'
import { createHash, randomBytes } from 'node:crypto'
import { Server as TusServer } from '@tus/server'
import { FileStore } from '@tus/file-store'
import * as tus from 'tus-js-client'
import { startEdge, startOrigin, route, tempDir, loopbackLookup, waitFor, type TestEdge } from './helpers.ts'
import { netConnector, type UpstreamConnector } from '../../../gateway/edge/index.ts'

interface TusOrigin { port: number, dir: string, methods: string[] }

async function tusOrigin (t: Parameters<typeof startOrigin>[0]): Promise<TusOrigin> {
  const dir = tempDir(t, 'cc-tus-')
  const tusServer = new TusServer({ path: '/files', datastore: new FileStore({ directory: dir }), respectForwardedHeaders: true })
  const methods: string[] = []
  const { port } = await startOrigin(t, (req, res) => {
    methods.push(req.method ?? '')
    void tusServer.handle(req, res)
  })
  return { port, dir, methods }
}

function sha256 (b: Buffer): string {
  return createHash('sha256').update(b).digest('hex')
}

function storedFile (origin: TusOrigin, uploadUrl: string): Buffer {
  return fs.readFileSync(path.join(origin.dir, uploadUrl.split('/').pop()!))
}

interface UploadResult { url: string, error?: Error }

function upload (te: TestEdge, host: string, data: Buffer, options: Partial<tus.UploadOptions> & { agent?: https.Agent } = {}): Promise<UploadResult> & { upload: tus.Upload } {
  const { agent, ...rest } = options
  let u!: tus.Upload
  const p = new Promise<UploadResult>(resolve => {
    u = new tus.Upload(data, {
      endpoint: `https://${host}:${te.port}/files/`,
      metadata: { filename: 'share.bin', filetype: 'application/octet-stream' },
      httpStack: new tus.DefaultHttpStack({ ca: te.ca, lookup: loopbackLookup, ...(agent !== undefined ? { agent } : {}) } as object),
      retryDelays: [100, 300, 500, 1000, 1000, 2000],
      ...rest,
      onSuccess: () => resolve({ url: u.url ?? '' }),
      onError: error => resolve({ url: u.url ?? '', error }),
    })
    u.start()
  }) as Promise<UploadResult> & { upload: tus.Upload }
  p.upload = u
  return p
}

t.test('an upload through the edge: POST/PATCH, Location on the public https address', async t => {
  const origin = await tusOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])])
  const data = randomBytes(3 * 1024 * 1024 + 17)
  const result = await upload(te, 'a.example.test', data, { chunkSize: 1024 * 1024 })
  t.equal(result.error, undefined)
  t.match(result.url, new RegExp(`^https://a\\.example\\.test:${te.port}/files/[0-9a-z]+$`), 'Location built from X-Forwarded-Host/Proto, not the origin address')
  t.notMatch(result.url, /127\.0\.0\.1|http:/)
  t.equal(sha256(storedFile(origin, result.url)), sha256(data), 'byte-exact at the origin')
  t.ok(origin.methods.filter(m => m === 'PATCH').length >= 4, 'sent in chunks')
  t.ok(origin.methods.includes('POST'))
})

t.test('HEAD and OPTIONS carry the tus headers both ways', async t => {
  const origin = await tusOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])])
  const data = randomBytes(1000)
  const { url } = await upload(te, 'a.example.test', data)
  const ask = (method: string, p: string): Promise<{ status: number, headers: Record<string, unknown> }> => new Promise((resolve, reject) => {
    https.request({ host: 'a.example.test', port: te.port, method, path: p, ca: te.ca, lookup: loopbackLookup, agent: false, headers: { 'tus-resumable': '1.0.0' } },
      res => { res.resume(); res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers })) }).on('error', reject).end()
  })
  const head = await ask('HEAD', new URL(url).pathname)
  t.equal(head.status, 200)
  t.equal(head.headers['upload-offset'], '1000')
  t.equal(head.headers['upload-length'], '1000')
  t.equal(head.headers['tus-resumable'], '1.0.0')
  const options = await ask('OPTIONS', '/files')
  t.equal(options.status, 204)
  t.match(options.headers['tus-extension'], /creation/)
  t.ok(options.headers['tus-version'])
})

/**
 * A tunnel that can drop: every upstream connection goes through a loopback relay. drop(ms) cuts
 * the connections open now, and new ones stall (as TCP SYNs are retransmitted while a WireGuard
 * peer is away) until the tunnel is back.
 */
async function droppableTunnel (t: Parameters<typeof startOrigin>[0], originPort: number): Promise<{ connector: UpstreamConnector, drop: (forMs: number) => void }> {
  const open = new Set<net.Socket>()
  let downUntil = 0
  const relay = net.createServer(inner => {
    open.add(inner)
    inner.on('error', () => {})
    inner.once('close', () => open.delete(inner))
    const join = (): void => {
      if (inner.destroyed) return
      const outer = net.connect({ host: '127.0.0.1', port: originPort })
      open.add(outer)
      outer.on('error', () => inner.destroy())
      outer.once('close', () => { open.delete(outer); inner.destroy() })
      inner.once('close', () => outer.destroy())
      inner.pipe(outer)
      outer.pipe(inner)
    }
    const wait = downUntil - Date.now()
    if (wait > 0) setTimeout(join, wait)
    else join()
  })
  await new Promise<void>(resolve => relay.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { for (const s of open) s.destroy(); relay.close() })
  const relayPort = (relay.address() as net.AddressInfo).port
  return {
    connector: { createConnection: (r, _o) => netConnector.createConnection(r, { host: '127.0.0.1', port: relayPort }) },
    drop (forMs) {
      downUntil = Date.now() + forMs
      for (const s of open) s.destroy()
    },
  }
}

t.test('the tunnel drops mid-upload for a second: the upload resumes from its offset', async t => {
  const origin = await tusOrigin(t)
  const tunnel = await droppableTunnel(t, origin.port)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])], { connector: tunnel.connector })
  const data = randomBytes(24 * 1024 * 1024)
  let dropped = false
  const result = await upload(te, 'a.example.test', data, {
    onProgress: (sent) => {
      if (!dropped && sent > data.length * 0.3) { dropped = true; tunnel.drop(1_000) }
    },
  })
  t.ok(dropped, 'the tunnel was dropped mid-way')
  t.equal(result.error, undefined, 'upload finished')
  t.equal(sha256(storedFile(origin, result.url)), sha256(data), 'byte-exact after resuming')
  const afterFirstPatch = origin.methods.slice(origin.methods.indexOf('PATCH') + 1)
  t.ok(afterFirstPatch.includes('HEAD'), 'client asked for the offset (HEAD) after the drop')
  t.ok(afterFirstPatch.includes('PATCH'), 'and continued with PATCH')
  t.equal(origin.methods.filter(m => m === 'POST').length, 1, 'resumed, not restarted')
  t.ok(await waitFor(() => te.lines.some(l => l.method === 'PATCH' && (l.status === 502 || l.aborted === true))), 'the cut PATCH failed at the edge')
})

t.test('the client connection to the edge is cut mid-upload: the upload resumes', async t => {
  const origin = await tusOrigin(t)
  const te = await startEdge(t, [route('a', origin.port, ['a.example.test'])])
  const agent = new https.Agent({ keepAlive: true, ca: te.ca, lookup: loopbackLookup } as https.AgentOptions)
  t.teardown(() => agent.destroy())
  const data = randomBytes(24 * 1024 * 1024)
  let cut = false
  const result = await upload(te, 'a.example.test', data, {
    agent,
    onProgress: (sent) => {
      if (!cut && sent > data.length * 0.4) {
        cut = true
        for (const list of Object.values(agent.sockets)) for (const s of list ?? []) s.destroy()
      }
    },
  })
  t.ok(cut)
  t.equal(result.error, undefined)
  t.equal(sha256(storedFile(origin, result.url)), sha256(data))
  t.equal(origin.methods.filter(m => m === 'POST').length, 1, 'one upload resource: resumed')
  t.ok(origin.methods.filter(m => m === 'HEAD').length >= 1)
})
