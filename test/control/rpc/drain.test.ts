/**
 * Draining a fleet gateway (`cloud-connect gateway drain`, rpc/placement.ts): it takes no new
 * placements, the sweep moves its instances to eligible gateways, but an instance whose only fresh
 * session is on the draining gateway keeps that slot until its session exists on the replacement;
 * undrain makes it eligible again without anything moving back. Hellos and reports go through the
 * RPC service; time is a fake clock.
 */
import t, { type Test } from 'tap'
import { bearer, forEachDatabaseKind, openTestDatabase, type DatabaseKind } from '../harness.ts'
import { setGatewayDraining } from '../../../control/rpc/placement.ts'
import { Clock, newPublicKey, newUser } from '../routes/tunnel-fixtures.ts'
import { createInstances, hello, peerReport, placements, report, startRpc, type FleetInstance as Instance, type PlacementEntry as Placement, type RpcHarness } from './fixtures.ts'

const GATEWAYS = ['gw-a', 'gw-b', 'gw-c']
const HEARTBEAT = { timestamp: '2026-03-01T12:00:00Z' }

interface Fleet { h: RpcHarness, clock: Clock }

async function startFleet (t: Test, kind: DatabaseKind): Promise<Fleet> {
  const db = await openTestDatabase(t, kind)
  const clock = new Clock()
  const h = await startRpc(t, db, { clock, deps: { subscriptions: async () => ({ plan: 'business', status: 'active' }) } })
  for (const id of GATEWAYS) {
    await h.rpc.hello(hello(newPublicKey(), { gatewayId: id, endpoint: `${id}.example.test:51820`, listenPort: 51820, relayUrl: `https://${id}.example.test:8443`, relayFingerprint: 'ab'.repeat(32) }))
  }
  return { h, clock }
}

function slots (p: Placement): string[] {
  return [p.primary_gateway, p.backup_gateway].filter((id): id is string => id !== null)
}

function placedOn (all: Map<string, Placement>, instances: Instance[], gateway: string): Instance[] {
  return instances.filter(i => slots(all.get(i.id)!).includes(gateway))
}

/** Gateway `id` reports a fresh handshake for each instance in `fresh`, none for the others. */
async function reportFrom (f: Fleet, id: string, fresh: Instance[], silent: Instance[] = []): Promise<void> {
  await f.h.rpc.report(report([
    ...fresh.map(i => peerReport(i.key, f.clock.now(), { instanceId: i.id })),
    ...silent.map(i => peerReport(i.key, null, { instanceId: i.id })),
  ], { gatewayId: id }))
}

await forEachDatabaseKind(t, async (t, kind) => {
  t.test('draining gateway sweep: new placements avoid it, instances move once their other tunnel is up', async t => {
    const f = await startFleet(t, kind)
    const instances = await createInstances(t, f.h, 12, 'drain', { register: true })
    const before = await placements(f.h)
    const onC = placedOn(before, instances, 'gw-c')
    t.ok(onC.length >= 7, `gw-c carries ${onC.length}`)
    // Two instances on gw-c have their only fresh session there; the others have one on both gateways.
    const lonely = onC.slice(0, 2)
    for (const id of ['gw-a', 'gw-b']) {
      const mine = placedOn(before, instances, id)
      await reportFrom(f, id, mine.filter(i => !lonely.includes(i)), mine.filter(i => lonely.includes(i)))
    }
    await reportFrom(f, 'gw-c', onC)
    t.equal((await f.h.rpc.sweep()).placements, 0, 'before the drain nothing moves')

    t.equal(await setGatewayDraining(f.h.services.db, 'gw-c', true), true, 'gw-c is known')
    t.equal(await setGatewayDraining(f.h.services.db, 'gw-nobody', true), false, 'an unknown id is reported')

    const operator = await newUser(f.h, 'operator')
    await f.h.services.db('users').where({ id: operator.id }).update({ role: 'admin' })
    const overview = await f.h.request('GET', '/v1/admin/overview', undefined, bearer(operator.token))
    t.equal(overview.status, 200, overview.raw)
    t.same(overview.body.gateways.map((g: { id: string, draining: boolean, alive: boolean }) => [g.id, g.draining, g.alive]).sort(),
      [['gw-a', false, true], ['gw-b', false, true], ['gw-c', true, true]], 'the operator overview shows the draining gateway, still alive')

    const fresh = await createInstances(t, f.h, 4, 'afterdrain', { register: true })
    const placedAfter = await placements(f.h)
    for (const inst of fresh) t.notOk(slots(placedAfter.get(inst.id)!).includes('gw-c'), 'a new placement avoids the draining gateway')

    const swept = await f.h.rpc.sweep()
    t.equal(swept.placements, onC.length - lonely.length, 'the sweep moved every instance with a tunnel elsewhere')
    const after = await placements(f.h)
    for (const inst of instances) {
      const was = before.get(inst.id)!
      const now = after.get(inst.id)!
      if (lonely.includes(inst)) {
        t.same(now, was, 'only fresh session on gw-c: the slot is kept')
      } else if (onC.includes(inst)) {
        t.same(slots(now).sort(), ['gw-a', 'gw-b'], 'moved off gw-c onto the two eligible gateways')
        const other = slots(was).find(id => id !== 'gw-c')!
        t.equal(now.primary_gateway, other, 'the gateway it already has a tunnel to is its primary')
      } else {
        t.same(now, was, 'instances not on gw-c stay')
      }
    }
    const beat = await f.h.request('POST', '/v1/tunnel/heartbeat', HEARTBEAT, bearer(onC[onC.length - 1].token))
    t.same((beat.body.peers as Array<{ gateway_id: string }>).map(p => p.gateway_id).sort(), ['gw-a', 'gw-b'], 'the heartbeat tells the container')
    t.equal((await f.h.rpc.sweep()).placements, 0, 'a second sweep changes nothing while the lonely sessions are still only on gw-c')

    // The lonely instances' tunnels to their other gateway come up: now they move too.
    f.clock.advance(5)
    for (const id of ['gw-a', 'gw-b']) await reportFrom(f, id, placedOn(after, instances, id))
    await reportFrom(f, 'gw-c', lonely)
    t.equal((await f.h.rpc.sweep()).placements, lonely.length, 'the lonely ones move once their replacement has a session')
    const drained = await placements(f.h)
    t.same(placedOn(drained, [...instances, ...fresh], 'gw-c'), [], 'nothing left on gw-c')
    for (const inst of lonely) t.equal(drained.get(inst.id)!.primary_gateway, slots(before.get(inst.id)!).find(id => id !== 'gw-c'), 'primary: the gateway whose session came up')

    // Undrain: eligible again, nothing flaps back, new instances go to it.
    t.equal(await setGatewayDraining(f.h.services.db, 'gw-c', false), true)
    t.equal((await f.h.rpc.sweep()).placements, 0, 'nothing moves back')
    t.same(await placements(f.h), drained)
    const returning = await createInstances(t, f.h, 3, 'undrained', { register: true })
    const last = await placements(f.h)
    for (const inst of returning) t.equal(last.get(inst.id)!.primary_gateway, 'gw-c', 'the empty, undrained gateway is the new primary')
  })
})
