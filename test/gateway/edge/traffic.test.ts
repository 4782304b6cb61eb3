import t from 'tap'
import { once } from 'node:events'
import WebSocket, { WebSocketServer } from 'ws'
import { controlRoute } from '../../../gateway/edge/index.ts'
import { pathOf, TrafficRecorder, type FinishedRequest } from '../../../gateway/edge/traffic.ts'
import { MAX_ACCESS_LOG_PATH, validateReport, RPC_PROTOCOL_VERSION } from '../../../proto/rpc/index.ts'
import { loopbackLookup, request, route, startEdge, startOrigin, waitFor } from './helpers.ts'

const HOUR = 3_600_000
const T0 = Date.parse('2026-03-01T10:00:00.000Z')

function finished (over: Partial<FinishedRequest> = {}): FinishedRequest {
  return { instanceId: 'inst-a', startedAt: T0 + 1_000, method: 'GET', target: '/', status: 200, bytesIn: 0, bytesOut: 0, durationMs: 3, client: '203.0.113.9', ...over }
}

t.test('requests of one instance in one hour add up into one bucket; another hour or instance gets its own', async t => {
  const traffic = new TrafficRecorder()
  traffic.record(finished({ bytesIn: 10, bytesOut: 100 }))
  traffic.record(finished({ startedAt: T0 + HOUR - 1, bytesIn: 5, bytesOut: 7 }))
  traffic.record(finished({ startedAt: T0 + HOUR, bytesIn: 1, bytesOut: 2 }))
  traffic.record(finished({ instanceId: 'inst-b', bytesOut: 9 }))
  const batch = traffic.take()
  t.same(batch.usage.sort((a, b) => `${a.instanceId}${a.hour}`.localeCompare(`${b.instanceId}${b.hour}`)), [
    { instanceId: 'inst-a', hour: '2026-03-01T10:00:00.000Z', bytesIn: 15, bytesOut: 107, requests: 2 },
    { instanceId: 'inst-a', hour: '2026-03-01T11:00:00.000Z', bytesIn: 1, bytesOut: 2, requests: 1 },
    { instanceId: 'inst-b', hour: '2026-03-01T10:00:00.000Z', bytesIn: 0, bytesOut: 9, requests: 1 },
  ])
  t.equal(batch.accessLog.length, 4)
  t.same(traffic.take(), { usage: [], accessLog: [], accessLogDropped: 0 }, 'take() empties the recorder')
})

t.test('an access-log entry keeps the path and never the query string', async t => {
  const traffic = new TrafficRecorder()
  traffic.record(finished({ method: 'POST', target: '/share/abc?token=s3cret&x=1', status: 201, bytesIn: 42, bytesOut: 17, durationMs: 12.6 }))
  const [entry] = traffic.take().accessLog
  t.same(entry, {
    instanceId: 'inst-a', at: new Date(T0 + 1_000).toISOString(), method: 'POST', path: '/share/abc', status: 201,
    bytesIn: 42, bytesOut: 17, durationMs: 13, client: '203.0.113.9',
  })
  t.notMatch(JSON.stringify(entry), /s3cret|token/)
  t.equal(pathOf('/a?b?c'), '/a')
  t.equal(pathOf('/' + 'x'.repeat(5000)).length, MAX_ACCESS_LOG_PATH, 'long paths are cut')
})

t.test('a full access log drops its oldest entries and counts them', async t => {
  const traffic = new TrafficRecorder({ maxAccessLogEntries: 3 })
  for (let i = 0; i < 5000; i++) traffic.record(finished({ target: `/${i}` }))
  t.equal(traffic.pendingEntries, 3)
  const batch = traffic.take()
  t.same(batch.accessLog.map(e => e.path), ['/4997', '/4998', '/4999'], 'the newest kept')
  t.equal(batch.accessLogDropped, 4997)
  t.equal(batch.usage[0].requests, 5000, 'usage still counts every request')
})

t.test('a full access log wrapped around its ring keeps arrival order, and starts over empty after take()', async t => {
  const traffic = new TrafficRecorder({ maxAccessLogEntries: 3 })
  for (let i = 0; i < 7; i++) traffic.record(finished({ target: `/${i}?q=${i}`, status: 200 + i, bytesOut: 2 ** 33 + i, durationMs: i + 0.4 }))
  const first = traffic.take()
  t.same(first.accessLog.map(e => [e.path, e.status, e.bytesOut, e.durationMs]), [
    ['/4', 204, 2 ** 33 + 4, 4], ['/5', 205, 2 ** 33 + 5, 5], ['/6', 206, 2 ** 33 + 6, 6],
  ], 'the newest three, oldest first, every field as recorded')
  t.equal(first.accessLogDropped, 4)
  traffic.record(finished({ target: '/7', status: 0 }))
  traffic.record(finished({ target: '/8', method: 'DELETE', client: '2001:db8::1' }))
  const second = traffic.take()
  t.same(second.accessLog.map(e => [e.path, e.status, e.method, e.client]), [['/7', 0, 'GET', '203.0.113.9'], ['/8', 200, 'DELETE', '2001:db8::1']])
  t.equal(second.accessLogDropped, 0)
  t.equal(traffic.pendingEntries, 0)
})

t.test('access-log times are the instants the requests began, to the millisecond', async t => {
  const traffic = new TrafficRecorder()
  const times = [T0, T0 + 7, T0 + 42, T0 + 999, T0 + 999.9, T0 + 1_000, T0 + 1_005, T0 + HOUR + 120, T0 - 1, T0 + 2 * 86_400_000 + 61_001]
  for (const startedAt of times) traffic.record(finished({ startedAt }))
  t.same(traffic.take().accessLog.map(e => e.at), times.map(ms => new Date(ms).toISOString()))
})

t.test('requests of two instances taking turns each add up in their own bucket', async t => {
  const traffic = new TrafficRecorder()
  for (let i = 0; i < 10; i++) traffic.record(finished({ instanceId: i % 3 === 0 ? 'inst-b' : 'inst-a', bytesIn: 1, bytesOut: 10 }))
  traffic.record(finished({ instanceId: 'inst-a', startedAt: T0 + HOUR, bytesOut: 5 }))
  traffic.record(finished({ instanceId: 'inst-a', bytesOut: 1 }))
  t.same(traffic.take().usage.sort((a, b) => `${a.instanceId}${a.hour}`.localeCompare(`${b.instanceId}${b.hour}`)), [
    { instanceId: 'inst-a', hour: '2026-03-01T10:00:00.000Z', bytesIn: 6, bytesOut: 61, requests: 7 },
    { instanceId: 'inst-a', hour: '2026-03-01T11:00:00.000Z', bytesIn: 0, bytesOut: 5, requests: 1 },
    { instanceId: 'inst-b', hour: '2026-03-01T10:00:00.000Z', bytesIn: 4, bytesOut: 40, requests: 4 },
  ])
})

t.test('a batch given back after a failed report is merged before newer traffic, within the bounds', async t => {
  const traffic = new TrafficRecorder({ maxAccessLogEntries: 4 })
  traffic.record(finished({ target: '/1', bytesOut: 10 }))
  traffic.record(finished({ target: '/2', bytesOut: 10 }))
  const failed = traffic.take()
  traffic.record(finished({ target: '/3', bytesOut: 1 }))
  traffic.record(finished({ target: '/4', bytesOut: 1 }))
  traffic.record(finished({ target: '/5', bytesOut: 1 }))
  traffic.restore(failed)
  const batch = traffic.take()
  t.same(batch.accessLog.map(e => e.path), ['/2', '/3', '/4', '/5'], 'oldest dropped past the bound')
  t.equal(batch.accessLogDropped, 1)
  t.same(batch.usage, [{ instanceId: 'inst-a', hour: '2026-03-01T10:00:00.000Z', bytesIn: 0, bytesOut: 23, requests: 5 }], 'usage added, not replaced')
})

t.test('past its bucket bound, usage drops the oldest hour rather than the newest', async t => {
  const traffic = new TrafficRecorder({ maxUsageBuckets: 2 })
  traffic.record(finished({ instanceId: 'a', startedAt: T0 }))
  traffic.record(finished({ instanceId: 'b', startedAt: T0 + HOUR }))
  traffic.record(finished({ instanceId: 'c', startedAt: T0 + 2 * HOUR }))
  traffic.record(finished({ instanceId: 'd', startedAt: T0 }))
  t.same(traffic.take().usage.map(u => u.instanceId).sort(), ['b', 'c'])
  t.equal(traffic.droppedUsageBuckets, 2)
})

t.test('a report carrying usage and access log validates; one without them (an older gateway) too', async t => {
  const traffic = new TrafficRecorder()
  traffic.record(finished({ target: '/x?y=1' }))
  const batch = traffic.take()
  const base = { protocol: RPC_PROTOCOL_VERSION, gatewayId: 'gw', sentAt: new Date(T0).toISOString(), full: true, peers: [], certificates: [] }
  const report = validateReport({ ...base, usage: batch.usage, accessLog: batch.accessLog, accessLogDropped: 0 })
  t.same(report.accessLog, batch.accessLog)
  t.same(report.usage, batch.usage)
  t.same(validateReport(base), base)
  t.throws(() => validateReport({ ...base, accessLog: [{ ...batch.accessLog[0], method: 'G T' }] }), { code: 'VALIDATION_ERROR' })
  t.throws(() => validateReport({ ...base, usage: [{ ...batch.usage[0], bytesIn: -1 }] }), { code: 'VALIDATION_ERROR' })
})

// Through a real edge on loopback: what the proxy records per request.

t.test('the edge records each answered request of an instance: body bytes, path without query, status, client', async t => {
  const { port } = await startOrigin(t, (req, res) => {
    let n = 0
    req.on('data', (c: Buffer) => { n += c.length })
    req.on('end', () => {
      if (req.url?.startsWith('/missing') === true) { res.writeHead(404); res.end('no'); return }
      res.end('y'.repeat(n * 2))
    })
  })
  const te = await startEdge(t, [route('inst-a', port, ['a.example.test']), controlRoute('example.test', { host: '127.0.0.1', port })])
  t.equal((await request(te, 'a.example.test', { method: 'POST', path: '/upload?token=s3cret', body: 'x'.repeat(1000) })).status, 200)
  t.equal((await request(te, 'a.example.test', { path: '/missing' })).status, 404)
  t.equal((await request(te, 'app.example.test', { path: '/dashboard' })).status, 200, 'control\'s own route')
  t.equal((await request(te, 'unknown.example.test', { servername: 'a.example.test' })).status, 404, 'no route')
  const ws = new WebSocket(`wss://a.example.test:${te.port}/ws?k=v`, { ca: te.ca, lookup: loopbackLookup } as WebSocket.ClientOptions)
  ws.on('error', () => {})
  t.equal((await new Promise<number>(resolve => ws.on('unexpected-response', (_req, res) => { res.resume(); res.on('end', () => resolve(res.statusCode ?? 0)) }))), 200, 'an upgrade the origin answers without switching')
  t.ok(await waitFor(() => te.edge.traffic.pendingEntries === 3))
  const batch = te.edge.traffic.take()
  t.same(batch.accessLog.map(e => [e.method, e.path, e.status, e.bytesIn, e.bytesOut, e.client]), [
    ['POST', '/upload', 200, 1000, 2000, '127.0.0.1'],
    ['GET', '/missing', 404, 0, 2, '127.0.0.1'],
    ['GET', '/ws', 200, 0, 0, '127.0.0.1'],
  ], 'control\'s route and unknown hosts are not any instance\'s traffic')
  t.ok(batch.accessLog.every(e => e.instanceId === 'inst-a' && e.durationMs >= 0))
  t.notMatch(JSON.stringify(batch), /s3cret|k=v/, 'no query string anywhere')
  t.same(batch.usage.map(u => [u.instanceId, u.requests, u.bytesIn, u.bytesOut]), [['inst-a', 3, 1000, 2002]])
})

t.test('a WebSocket is recorded when it closes, with the bytes that crossed it', async t => {
  const { server, port } = await startOrigin(t, (_req, res) => { res.end() })
  const wss = new WebSocketServer({ server })
  wss.on('connection', socket => { socket.on('message', (d: Buffer) => socket.send(d)) })
  t.teardown(() => { for (const c of wss.clients) c.terminate(); wss.close() })
  const te = await startEdge(t, [route('inst-ws', port, ['ws.example.test'])])
  const ws = new WebSocket(`wss://ws.example.test:${te.port}/live`, { ca: te.ca, lookup: loopbackLookup } as WebSocket.ClientOptions)
  await once(ws, 'open')
  ws.send(Buffer.alloc(10_000))
  await once(ws, 'message')
  t.equal(te.edge.traffic.pendingEntries, 0, 'nothing while open')
  ws.close()
  t.ok(await waitFor(() => te.edge.traffic.pendingEntries === 1))
  const [entry] = te.edge.traffic.take().accessLog
  t.equal(entry.status, 101)
  t.equal(entry.path, '/live')
  t.ok(entry.bytesIn > 10_000 && entry.bytesIn < 10_100, `frames up: ${entry.bytesIn}`)
  t.ok(entry.bytesOut > 10_000 && entry.bytesOut < 10_100, `frames down: ${entry.bytesOut}`)
})
