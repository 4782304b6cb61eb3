/** Tunnel address pool: layout, order of allocation, quarantine, races, exhaustion. */
import t from 'tap'
import type { Db } from '../../../control/db/knex.ts'
import { isApiError } from '../../../control/errors.ts'
import { IpamService, TunnelPool } from '../../../control/services/ipam.ts'
import { formatIPv4, parseIPv4Address } from '../../../proto/wire/ipv4.ts'
import { forEachDatabase } from '../harness.ts'

const ip = parseIPv4Address

t.test('pool layout: network, gateway and broadcast are never allocatable', async t => {
  const big = new TunnelPool('10.100.0.0/16')
  t.equal(formatIPv4(big.gatewayAddress), '10.100.0.1')
  t.equal(formatIPv4(big.firstAllocatable), '10.100.0.2')
  t.equal(formatIPv4(big.lastAllocatable), '10.100.255.254')
  t.equal(formatIPv4(big.broadcast), '10.100.255.255')
  t.equal(big.size, 65533)
  t.notOk(big.contains(ip('10.100.0.0')))
  t.notOk(big.contains(ip('10.100.0.1')))
  t.notOk(big.contains(ip('10.100.255.255')))
  t.notOk(big.contains(ip('10.101.0.2')))
  t.ok(big.contains(ip('10.100.1.0')), 'a .0 inside a /16 is an ordinary host')
  const tiny = new TunnelPool('192.168.7.4/30')
  t.equal(tiny.size, 1)
  t.equal(formatIPv4(tiny.firstAllocatable), '192.168.7.6')
  t.throws(() => new TunnelPool('10.0.0.0/31'), /too small/)
})

class Clock {
  time = Date.parse('2026-03-01T00:00:00Z')
  now = (): Date => new Date(this.time)
}

let seq = 0
/** Instance rows for leases to point at (the lease has a foreign key). */
async function instances (db: Db, count: number): Promise<string[]> {
  const userId = `usr_ipam${process.pid}x${++seq}`.padEnd(26, '0')
  await db('users').insert({ id: userId, email: `${userId}@example.com`, name: 'n', password_hash: 'x', terms_accepted_at: new Date(), privacy_accepted_at: new Date() })
  const ids = []
  for (let i = 0; i < count; i++) {
    const id = `inst_${seq}x${String(i).padStart(3, '0')}`.padEnd(27, '0')
    await db('instances').insert({ id, user_id: userId, name: 'n', subdomain: `ipam-${seq}-${i}`, token_jti: 'j' })
    ids.push(id)
  }
  return ids
}

async function allocateOrCode (ipam: IpamService, db: Db, id: string): Promise<string> {
  try {
    return formatIPv4(await db.transaction(async trx => await ipam.allocate(trx, id)))
  } catch (err) {
    if (isApiError(err)) return err.data!.code
    throw err
  }
}

await forEachDatabase(t, async (t, db) => {
  // Each subtest uses its own disjoint pool; the cursor sequence is shared, so pools are exhausted
  // by it quickly and the fallback path (the interesting one) is what runs after the first subtest.

  t.test('quarantine: a released address comes back only after the delay', async t => {
    const clock = new Clock()
    const ipam = new IpamService({ pool: new TunnelPool('10.200.1.0/29'), quarantineSeconds: 3600, now: clock.now })
    const ids = await instances(db, 7)
    const got = []
    for (const id of ids.slice(0, 5)) got.push(await allocateOrCode(ipam, db, id))
    t.same([...got].sort(), ['10.200.1.2', '10.200.1.3', '10.200.1.4', '10.200.1.5', '10.200.1.6'], 'the five hosts of a /29 minus the gateway')
    t.equal(await allocateOrCode(ipam, db, ids[5]), 'SERVICE_UNAVAILABLE', 'exhausted: 503')
    const released = await ipam.release(db, ids[2])
    t.equal(formatIPv4(released!), got[2])
    t.equal(await ipam.addressOf(db, ids[2]), undefined)
    clock.time += 3599_000
    t.equal(await allocateOrCode(ipam, db, ids[5]), 'SERVICE_UNAVAILABLE', 'still quarantined just before the delay')
    clock.time += 1000
    t.equal(await allocateOrCode(ipam, db, ids[5]), got[2], 'reused once the delay has passed')
    t.equal(formatIPv4((await ipam.addressOf(db, ids[5]))!), got[2])
    t.equal(await ipam.release(db, ids[6]), undefined, 'releasing without a lease is a no-op')
  })

  t.test('fallback order: never-used gaps first, then the longest released', async t => {
    const clock = new Clock()
    const ipam = new IpamService({ pool: new TunnelPool('10.200.2.0/29'), quarantineSeconds: 60, now: clock.now })
    const ids = await instances(db, 8)
    // Fill .2 .3 .5 .6 and leave .4 never used (as a rolled-back transaction would).
    for (const [k, a] of [[0, '10.200.2.2'], [1, '10.200.2.3'], [2, '10.200.2.5'], [3, '10.200.2.6']] as const) {
      await db('tunnel_ips').insert({ address: ip(a), instance_id: ids[k], assigned_at: clock.now() })
    }
    await ipam.release(db, ids[2]) // .5 released first
    clock.time += 10_000
    await ipam.release(db, ids[0]) // .2 released later
    clock.time += 120_000
    t.equal(await allocateOrCode(ipam, db, ids[4]), '10.200.2.4', 'the never-used gap first')
    t.equal(await allocateOrCode(ipam, db, ids[5]), '10.200.2.5', 'then the one released longest ago')
    t.equal(await allocateOrCode(ipam, db, ids[6]), '10.200.2.2')
    t.equal(await allocateOrCode(ipam, db, ids[7]), 'SERVICE_UNAVAILABLE')
  })

  t.test('a rolled-back allocation leaves its address free', async t => {
    const clock = new Clock()
    const ipam = new IpamService({ pool: new TunnelPool('10.200.3.0/30'), quarantineSeconds: 60, now: clock.now })
    const [a, b] = await instances(db, 2)
    await t.rejects(db.transaction(async trx => {
      await ipam.allocate(trx, a)
      throw new Error('abort')
    }), /abort/)
    t.equal(await ipam.addressOf(db, a), undefined)
    t.equal(await allocateOrCode(ipam, db, b), '10.200.3.2', 'the only host is still available')
  })

  t.test('an instance deleted without release (account removed) frees its address', async t => {
    const clock = new Clock()
    const ipam = new IpamService({ pool: new TunnelPool('10.200.4.0/30'), quarantineSeconds: 3600, now: clock.now })
    const [a] = await instances(db, 1)
    const [b] = await instances(db, 1)
    t.equal(await allocateOrCode(ipam, db, a), '10.200.4.2')
    const owner = (await db('instances').where({ id: a }).first()).user_id
    await db('users').where({ id: owner }).delete() // cascades to the instance; lease loses its holder
    t.equal(await allocateOrCode(ipam, db, b), '10.200.4.2')
  })

  t.test('parallel allocations never share an address (fallback path under contention)', async t => {
    const clock = new Clock()
    const ipam = new IpamService({ pool: new TunnelPool('10.200.5.0/27'), quarantineSeconds: 0, now: clock.now })
    const ids = await instances(db, 32)
    const results = await Promise.all(ids.map(async id => await allocateOrCode(ipam, db, id)))
    const granted = results.filter(r => r !== 'SERVICE_UNAVAILABLE')
    t.equal(granted.length, 29, 'every host of the /27 handed out')
    t.equal(new Set(granted).size, 29, 'no address twice')
    t.equal(results.filter(r => r === 'SERVICE_UNAVAILABLE').length, 3, 'the rest told to retry later')
    const rows = await db('tunnel_ips').whereIn('instance_id', ids)
    t.equal(rows.length, 29)
  })
})
