/**
 * Concurrency of instance creation: one subdomain claimed by many users at once, plan limits under
 * parallel creates, tunnel addresses under parallel allocation. On Postgres these run as truly
 * concurrent transactions (PGlite serialises them, which checks the same answers).
 */
import t from 'tap'
import type { Subscription } from '../../../control/services/plans.ts'
import { assertError, bearer, forEachDatabase } from '../harness.ts'
import { createInstance, newUser, startInstanceApp } from './tunnel-fixtures.ts'

await forEachDatabase(t, async (t, db) => {
  t.test('50 users create one subdomain at once: exactly one wins, the rest get 409', async t => {
    const h = await startInstanceApp(t, db)
    const users = []
    for (let i = 0; i < 50; i++) users.push(await newUser(h, 'race'))
    const results = await Promise.all(users.map(async u => await createInstance(h, u.token, 'contested')))
    const won = results.filter(r => r.status === 201)
    t.equal(won.length, 1, 'one 201')
    const lost = results.filter(r => r.status !== 201)
    t.equal(lost.length, 49)
    for (const r of lost) {
      assertError(t, r, 'SUBDOMAIN_TAKEN')
      t.equal(r.body.error.details.subdomain, 'contested')
      t.equal(r.body.error.details.suggestions.length, 3)
    }
    const rows = await db('instances').where({ subdomain: 'contested' })
    t.equal(rows.length, 1)
    t.equal(rows[0].id, won[0].body.instance.id)
    const leases = await db('tunnel_ips').whereNotNull('instance_id').whereNotIn('instance_id', db('instances').select('id'))
    t.same(leases, [], 'losers left no address leased')
  })

  t.test('parallel creates at the plan limit never exceed it', async t => {
    const plans = new Map<string, Subscription>()
    const h = await startInstanceApp(t, db, { plans })
    const free = await newUser(h, 'limit')
    const pro = await newUser(h, 'limit')
    const business = await newUser(h, 'limit')
    plans.set(pro.id, { plan: 'pro', status: 'active' })
    plans.set(business.id, { plan: 'business', status: 'active' })
    const attempts = []
    for (const [user, label] of [[free, 'f'], [pro, 'p'], [business, 'b']] as const) {
      for (let i = 0; i < 20; i++) attempts.push({ user, label, request: createInstance(h, user.token, `lim-${label}-${i}`) })
    }
    const results = await Promise.all(attempts.map(async a => ({ ...a, res: await a.request })))
    for (const [user, label, limit] of [[free, 'f', 1], [pro, 'p', 3], [business, 'b', 10]] as const) {
      const mine = results.filter(r => r.label === label)
      t.equal(mine.filter(r => r.res.status === 201).length, limit, `${label}: exactly ${limit} created`)
      for (const r of mine.filter(r => r.res.status !== 201)) assertError(t, r.res, 'LIMIT_EXCEEDED', label)
      const listed = await h.request('GET', '/v1/instances', undefined, bearer(user.token))
      t.equal(listed.body.instances.length, limit, `${label}: ${limit} stored`)
    }
  })

  t.test('parallel creates never share a tunnel address', async t => {
    const h = await startInstanceApp(t, db)
    const users = []
    for (let i = 0; i < 40; i++) users.push(await newUser(h, 'ip'))
    const results = await Promise.all(users.map(async (u, i) => await createInstance(h, u.token, `ip-race-${i}`)))
    t.equal(results.filter(r => r.status === 201).length, 40, 'all created')
    const ips = results.map(r => r.body.instance.tunnel_ip as string)
    t.equal(new Set(ips).size, 40, 'distinct addresses')
    const pool = h.services.ipam.pool
    for (const ip of ips) {
      const n = ip.split('.').reduce((a, o) => a * 256 + Number(o), 0)
      t.ok(pool.contains(n), `${ip} inside the pool, not network/gateway/broadcast`)
    }
  })
})
