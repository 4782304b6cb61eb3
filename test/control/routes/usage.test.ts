/**
 * GET /v1/instances/{id}/usage and /access-log: what gateways report through the RPC, as its owner
 * reads it. Sums across reports and gateways, truncated client addresses, pagination, 401/404/422,
 * retention and deletion with the instance.
 */
import t, { type Test } from 'tap'
import { RPC_PROTOCOL_VERSION, type AccessLogReport, type UsageReport } from '../../../proto/rpc/index.ts'
import type { Db } from '../../../control/db/knex.ts'
import { assertError, bearer, forEachDatabase } from '../harness.ts'
import { startRpc, type RpcHarness } from '../rpc/fixtures.ts'
import { Clock, mustCreate, newUser } from './tunnel-fixtures.ts'

const HOUR = 3_600_000
/** The harness clock's start: 2026-03-01T12:00:00Z. */
const NOON = Date.parse('2026-03-01T12:00:00Z')

async function report (h: RpcHarness, gatewayId: string, usage: UsageReport[], accessLog: AccessLogReport[] = []): Promise<void> {
  await h.rpc.report({ protocol: RPC_PROTOCOL_VERSION, gatewayId, sentAt: new Date(h.clock!.time).toISOString(), full: false, peers: [], certificates: [], usage, accessLog })
}

function hit (instanceId: string, at: number, over: Partial<AccessLogReport> = {}): AccessLogReport {
  return { instanceId, at: new Date(at).toISOString(), method: 'GET', path: '/', status: 200, bytesIn: 0, bytesOut: 10, durationMs: 5, client: '203.0.113.77', ...over }
}

async function setup (t: Test, db: Db, env: Record<string, string> = {}): Promise<{ h: RpcHarness, owner: { id: string, token: string }, inst: { id: string } }> {
  const h = await startRpc(t, db, { clock: new Clock(), listen: false, env })
  const owner = await newUser(h, 'owner')
  const inst = await mustCreate(t, h, owner.token, `traffic-${Math.random().toString(36).slice(2, 8)}`)
  return { h, owner, inst }
}

await forEachDatabase(t, async (t, db) => {
  t.test('usage: reports from several gateways add up per hour; buckets oldest first with totals', async t => {
    const { h, owner, inst } = await setup(t, db)
    const hour = (n: number): string => new Date(NOON - n * HOUR).toISOString()
    await report(h, 'gw-1', [{ instanceId: inst.id, hour: hour(2), bytesIn: 100, bytesOut: 1000, requests: 3 }])
    await report(h, 'gw-2', [{ instanceId: inst.id, hour: hour(2), bytesIn: 1, bytesOut: 2, requests: 1 }, { instanceId: inst.id, hour: hour(1), bytesIn: 5, bytesOut: 6, requests: 2 }])
    await report(h, 'gw-1', [{ instanceId: inst.id, hour: hour(30), bytesIn: 9, bytesOut: 9, requests: 9 }])
    const res = await h.request('GET', `/v1/instances/${inst.id}/usage`, undefined, bearer(owner.token))
    t.equal(res.status, 200)
    t.same(res.body, {
      instance_id: inst.id,
      from: '2026-02-28T12:00:00Z',
      to: '2026-03-01T12:00:00Z',
      buckets: [
        { hour: '2026-03-01T10:00:00Z', bytes_in: 101, bytes_out: 1002, requests: 4 },
        { hour: '2026-03-01T11:00:00Z', bytes_in: 5, bytes_out: 6, requests: 2 },
      ],
      totals: { bytes_in: 106, bytes_out: 1008, requests: 6 },
    }, 'the last 24 hours by default; the hour 30 h ago is outside')
    const wide = await h.request('GET', `/v1/instances/${inst.id}/usage?from=2026-02-27T18:30:00Z&to=2026-03-01T11:00:00Z`, undefined, bearer(owner.token))
    t.equal(wide.body.from, '2026-02-27T18:00:00Z', 'from rounded down to its hour')
    t.same(wide.body.buckets.map((b: { hour: string }) => b.hour), ['2026-02-28T06:00:00Z', '2026-03-01T10:00:00Z'], 'to is exclusive')
    t.same(wide.body.totals, { bytes_in: 110, bytes_out: 1011, requests: 13 })
  })

  t.test('usage and access log: 401 without a token, 404 for another user\'s instance or a made-up id', async t => {
    const { h, inst } = await setup(t, db)
    await report(h, 'gw-1', [{ instanceId: inst.id, hour: new Date(NOON - HOUR).toISOString(), bytesIn: 1, bytesOut: 1, requests: 1 }], [hit(inst.id, NOON - 1000)])
    const stranger = await newUser(h, 'stranger')
    for (const path of ['usage', 'access-log']) {
      assertError(t, await h.request('GET', `/v1/instances/${inst.id}/${path}`), 'UNAUTHORIZED', `${path} without auth`)
      const other = await h.request('GET', `/v1/instances/${inst.id}/${path}`, undefined, bearer(stranger.token))
      assertError(t, other, 'NOT_FOUND', `${path} of another user's instance`)
      t.notMatch(other.raw, /203\.0\.113|bytes/, 'nothing of the instance leaks')
      assertError(t, await h.request('GET', `/v1/instances/inst_0000000000000000000000/${path}`, undefined, bearer(stranger.token)), 'NOT_FOUND', `${path} of a missing instance`)
      assertError(t, await h.request('GET', `/v1/instances/nonsense/${path}`, undefined, bearer(stranger.token)), 'NOT_FOUND', `${path} of a malformed id`)
    }
  })

  t.test('usage: bad ranges are 422 in the error shape', async t => {
    const { h, owner, inst } = await setup(t, db)
    const get = async (query: string): ReturnType<RpcHarness['request']> => await h.request('GET', `/v1/instances/${inst.id}/usage?${query}`, undefined, bearer(owner.token))
    for (const [query, field] of [
      ['from=2026-03-01T10:00:00Z&to=2026-03-01T09:00:00Z', 'to'],
      ['from=2026-03-01T10:00:00Z&to=2026-03-01T10:00:00Z', 'to'],
      ['from=2025-11-01T00:00:00Z&to=2026-03-01T00:00:00Z', 'to'],
      ['from=2026-03-02T00:00:00Z', 'from'],
      ['from=yesterday', 'from'],
      ['to=2026-13-45T00:00:00Z', 'to'],
    ]) {
      const res = await get(query)
      assertError(t, res, 'VALIDATION_ERROR', query)
      t.ok(Object.keys(res.body.error.details.fields).includes(field), `${query}: names ${field}`)
    }
    t.equal((await get('from=2025-12-01T00:00:00Z&to=2026-03-01T00:00:00Z')).status, 200, '90 days is within the limit')
  })

  t.test('access log: newest first, client truncated to /24 and /48, the query never stored', async t => {
    const { h, owner, inst } = await setup(t, db)
    await report(h, 'gw-1', [], [
      hit(inst.id, NOON - 3000, { method: 'POST', path: '/upload', status: 201, bytesIn: 4096, bytesOut: 12, durationMs: 40, client: '198.51.100.23' }),
      hit(inst.id, NOON - 1000, { path: '/share/x', client: '2001:db8:abcd:12:34::9' }),
      hit(inst.id, NOON - 2000, { client: '::ffff:192.0.2.200' }),
      hit(inst.id, NOON - 500, { client: 'unknown' }),
    ])
    const res = await h.request('GET', `/v1/instances/${inst.id}/access-log`, undefined, bearer(owner.token))
    t.equal(res.status, 200)
    t.same(res.body, {
      entries: [
        { at: '2026-03-01T11:59:59.500Z', method: 'GET', path: '/', status: 200, bytes_in: 0, bytes_out: 10, duration_ms: 5, client: null },
        { at: '2026-03-01T11:59:59.000Z', method: 'GET', path: '/share/x', status: 200, bytes_in: 0, bytes_out: 10, duration_ms: 5, client: '2001:db8:abcd::' },
        { at: '2026-03-01T11:59:58.000Z', method: 'GET', path: '/', status: 200, bytes_in: 0, bytes_out: 10, duration_ms: 5, client: '192.0.2.0' },
        { at: '2026-03-01T11:59:57.000Z', method: 'POST', path: '/upload', status: 201, bytes_in: 4096, bytes_out: 12, duration_ms: 40, client: '198.51.100.0' },
      ],
      next_cursor: null,
    })
    const stored = await db('instance_access_log').where({ instance_id: inst.id }).pluck('client') as Array<string | null>
    t.notOk(stored.some(c => c !== null && /\.23$|:9$|\.200$/.test(c)), `no full address in the table: ${stored.join(', ')}`)
  })

  t.test('access log: full addresses when the operator opts in', async t => {
    const { h, owner, inst } = await setup(t, db, { CC_ACCESS_LOG_FULL_ADDRESSES: 'true' })
    await report(h, 'gw-1', [], [hit(inst.id, NOON - 2000, { client: '198.51.100.23' }), hit(inst.id, NOON - 1000, { client: '2001:0db8:abcd:0012:0034:0000:0000:0009' })])
    const res = await h.request('GET', `/v1/instances/${inst.id}/access-log`, undefined, bearer(owner.token))
    t.same(res.body.entries.map((e: { client: string }) => e.client), ['2001:db8:abcd:12:34::9', '198.51.100.23'])
  })

  t.test('access log: pages follow next_cursor to the end, each entry once, even while new entries arrive', async t => {
    const { h, owner, inst } = await setup(t, db)
    // Two entries share a timestamp: the id breaks the tie.
    await report(h, 'gw-1', [], [0, 1, 2, 3, 3, 4, 5].map((s, i) => hit(inst.id, NOON - 10_000 + s * 1000, { path: `/p${i}` })))
    const seen: string[] = []
    let cursor: string | null = null
    let pages = 0
    do {
      const url: string = `/v1/instances/${inst.id}/access-log?limit=3${cursor === null ? '' : `&cursor=${cursor}`}`
      const res = await h.request('GET', url, undefined, bearer(owner.token))
      t.equal(res.status, 200)
      t.ok(res.body.entries.length <= 3)
      seen.push(...res.body.entries.map((e: { path: string }) => e.path))
      cursor = res.body.next_cursor
      if (pages === 0) await report(h, 'gw-2', [], [hit(inst.id, NOON - 100, { path: '/newer' })])
      pages++
    } while (cursor !== null && pages < 10)
    t.equal(pages, 3)
    t.same([...seen].sort(), ['/p0', '/p1', '/p2', '/p3', '/p4', '/p5', '/p6'], 'every entry once, the newer one not mixed into older pages')
    t.same(seen.slice(0, 2), ['/p6', '/p5'], 'newest first')
    t.same(seen.slice(2, 4).sort(), ['/p3', '/p4'], 'the two of one instant across a page boundary')
    t.same(seen.slice(4), ['/p2', '/p1', '/p0'])
    const first = await h.request('GET', `/v1/instances/${inst.id}/access-log?limit=1`, undefined, bearer(owner.token))
    t.equal(first.body.entries[0].path, '/newer', 'a fresh first page shows it')
  })

  t.test('access log: bad limit or cursor is 422', async t => {
    const { h, owner, inst } = await setup(t, db)
    for (const query of ['limit=0', 'limit=501', 'limit=ten', 'cursor=not*base64', `cursor=${Buffer.from('["x","1"]').toString('base64url')}`, `cursor=${Buffer.from('{}').toString('base64url')}`]) {
      assertError(t, await h.request('GET', `/v1/instances/${inst.id}/access-log?${query}`, undefined, bearer(owner.token)), 'VALIDATION_ERROR', query)
    }
  })

  t.test('reports naming unknown instances are accepted and their traffic skipped', async t => {
    const { h, owner, inst } = await setup(t, db)
    await report(h, 'gw-1', [
      { instanceId: 'inst_0000000000000000000000', hour: new Date(NOON - HOUR).toISOString(), bytesIn: 1, bytesOut: 1, requests: 1 },
      { instanceId: inst.id, hour: new Date(NOON - HOUR).toISOString(), bytesIn: 7, bytesOut: 8, requests: 1 },
    ], [hit('inst_0000000000000000000000', NOON - 10), hit(inst.id, NOON - 20)])
    const usage = await h.request('GET', `/v1/instances/${inst.id}/usage`, undefined, bearer(owner.token))
    t.same(usage.body.totals, { bytes_in: 7, bytes_out: 8, requests: 1 })
    t.equal(await db('instance_access_log').whereIn('instance_id', [inst.id, 'inst_0000000000000000000000']).count({ n: '*' }).first().then(r => Number(r?.n)), 1)
  })

  t.test('retention: old usage and access-log rows are pruned, recent ones kept; deleting the instance deletes both', async t => {
    const { h, owner, inst } = await setup(t, db, { CC_USAGE_RETENTION_DAYS: '2', CC_ACCESS_LOG_RETENTION_DAYS: '1' })
    await report(h, 'gw-1', [
      { instanceId: inst.id, hour: new Date(NOON - 72 * HOUR).toISOString(), bytesIn: 1, bytesOut: 1, requests: 1 },
      { instanceId: inst.id, hour: new Date(NOON - 24 * HOUR).toISOString(), bytesIn: 2, bytesOut: 2, requests: 2 },
    ], [hit(inst.id, NOON - 30 * HOUR, { path: '/old' }), hit(inst.id, NOON - HOUR, { path: '/recent' })])
    t.same(await h.services.usage.prune(), { usage: 1, accessLog: 1 })
    t.same((await db('instance_usage').where({ instance_id: inst.id }).select('requests')).map(r => Number(r.requests)), [2])
    t.same(await db('instance_access_log').where({ instance_id: inst.id }).pluck('path'), ['/recent'])
    t.equal((await h.request('DELETE', `/v1/instances/${inst.id}`, undefined, bearer(owner.token))).status, 204)
    t.equal(Number((await db('instance_usage').where({ instance_id: inst.id }).count({ n: '*' }).first())?.n), 0, 'usage gone with the instance')
    t.equal(Number((await db('instance_access_log').where({ instance_id: inst.id }).count({ n: '*' }).first())?.n), 0, 'access log gone with the instance')
  })
})
