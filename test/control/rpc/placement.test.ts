/**
 * The fleet in control: gateway tunnel addresses, primary/backup placement (even spread, re-placed
 * when a gateway stops reporting unless a session there is fresh, a returning gateway taking new
 * placements without anything flapping back), live sessions from reports, per-gateway snapshots
 * over the real RPC listener, and tunnel_config.peers / the heartbeat's peers over the real API.
 * Hellos and reports go through the RPC service; time is a fake clock.
 */
import t, { type Test } from 'tap'
import { createHash } from 'node:crypto'
import { RPC_PATHS, validateSnapshot, type ConfigSnapshot } from '../../../proto/rpc/index.ts'
import { formatIPv4 } from '../../../proto/wire/ipv4.ts'
import { bearer, forEachDatabaseKind, openTestDatabase, type DatabaseKind } from '../harness.ts'
import { Clock, newPublicKey, newUser } from '../routes/tunnel-fixtures.ts'
import { createInstances, hello, peerReport, placements, report, startRpc, type FleetInstance as Instance, type PlacementEntry as Placement, type RpcHarness } from './fixtures.ts'

const GATEWAYS = ['gw-a', 'gw-b', 'gw-c']
const HEARTBEAT = { timestamp: '2026-03-01T12:00:00Z' }


const fingerprint = (id: string): string => createHash('sha256').update(id).digest('hex')

interface Fleet {
  h: RpcHarness
  clock: Clock
  keys: Map<string, string>
  users: string[]
}

async function startFleet (t: Test, kind: DatabaseKind, env: Record<string, string> = {}): Promise<Fleet> {
  const db = await openTestDatabase(t, kind)
  const clock = new Clock()
  const h = await startRpc(t, db, { clock, env, deps: { subscriptions: async () => ({ plan: 'business', status: 'active' }) } })
  return { h, clock, keys: new Map(), users: [] }
}

async function sayHello (f: Fleet, id: string): Promise<void> {
  const key = f.keys.get(id) ?? newPublicKey()
  f.keys.set(id, key)
  await f.h.rpc.hello(hello(key, { gatewayId: id, endpoint: `${id}.example.test:51820`, listenPort: 51820, relayUrl: `https://${id}.example.test:8443`, relayFingerprint: fingerprint(id) }))
}

async function register (f: Fleet, inst: Instance): Promise<any> { // eslint-disable-line @typescript-eslint/no-explicit-any
  const res = await f.h.request('POST', '/v1/tunnel/register', { public_key: inst.key }, bearer(inst.token))
  if (res.status !== 200) throw new Error(`register: ${res.status} ${res.raw}`)
  return res.body
}

async function gatewayAddress (f: Fleet, id: string): Promise<string> {
  const row = await f.h.services.db('gateways').where({ id }).first('tunnel_address') as { tunnel_address: string | number }
  return formatIPv4(Number(row.tunnel_address))
}

/** Gateway `id` reports a handshake at `at` for each instance in `fresh` (and none for `silent`). */
async function reportFrom (f: Fleet, id: string, fresh: Instance[], at: Date, silent: Instance[] = []): Promise<void> {
  await f.h.rpc.report(report([
    ...fresh.map(i => peerReport(i.key, at, { instanceId: i.id })),
    ...silent.map(i => peerReport(i.key, null, { instanceId: i.id })),
  ], { gatewayId: id }))
}

function placedOn (all: Map<string, Placement>, instances: Instance[], gateway: string): Instance[] {
  return instances.filter(i => { const p = all.get(i.id)!; return p.primary_gateway === gateway || p.backup_gateway === gateway })
}

/** A fleet of GATEWAYS that said hello, with `count` instances created and their tunnels registered. */
async function registeredFleet (t: Test, kind: DatabaseKind, count: number, prefix: string): Promise<{ f: Fleet, instances: Instance[] }> {
  const f = await startFleet(t, kind)
  for (const id of GATEWAYS) await sayHello(f, id)
  const instances = await createInstances(t, f.h, count, prefix)
  for (const inst of instances) await register(f, inst)
  return { f, instances }
}

async function snapshotOf (t: Test, f: Fleet, gateway?: string): Promise<ConfigSnapshot> {
  const res = await f.h.call('GET', RPC_PATHS.config + (gateway === undefined ? '' : `?gateway=${gateway}`))
  t.equal(res.status, 200, `snapshot for ${gateway ?? 'the single gateway'}`)
  return validateSnapshot(await res.json())
}

await forEachDatabaseKind(t, async (t, kind) => {
  t.test('three gateways, 30 instances: primaries 10/10/10, a different backup each, gateway addresses apart', async t => {
    const f = await startFleet(t, kind)
    for (const id of GATEWAYS) await sayHello(f, id)
    t.equal(await gatewayAddress(f, 'gw-a'), '10.100.0.1', 'the first gateway keeps the pool\'s first host')
    t.equal(await gatewayAddress(f, 'gw-b'), '10.100.255.254', 'later ones from the top down')
    t.equal(await gatewayAddress(f, 'gw-c'), '10.100.255.253')
    await sayHello(f, 'gw-b')
    t.equal(await gatewayAddress(f, 'gw-b'), '10.100.255.254', 'a gateway keeps its address across hellos')

    const instances = await createInstances(t, f.h, 30, 'even')
    const all = await placements(f.h)
    t.equal(all.size, 30, 'every instance placed at creation')
    const primaries = new Map<string, number>()
    const totals = new Map<string, number>()
    for (const p of all.values()) {
      t.not(p.backup_gateway, null, 'a backup while three gateways are alive')
      t.not(p.backup_gateway, p.primary_gateway, 'primary and backup differ')
      primaries.set(p.primary_gateway, (primaries.get(p.primary_gateway) ?? 0) + 1)
      for (const g of [p.primary_gateway, p.backup_gateway!]) totals.set(g, (totals.get(g) ?? 0) + 1)
    }
    for (const id of GATEWAYS) {
      t.ok(Math.abs((primaries.get(id) ?? 0) - 10) <= 1, `${id}: ${primaries.get(id)} primaries`)
      t.ok(Math.abs((totals.get(id) ?? 0) - 20) <= 1, `${id}: ${totals.get(id)} placements in all`)
    }

    const operator = await newUser(f.h, 'operator')
    await f.h.services.db('users').where({ id: operator.id }).update({ role: 'admin' })
    const overview = await f.h.request('GET', '/v1/admin/overview', undefined, bearer(operator.token))
    t.equal(overview.status, 200, overview.raw)
    t.same(overview.body.gateways.map((g: { id: string, placed_instances: number, alive: boolean, region: string | null }) => [g.id, g.placed_instances, g.alive, g.region]).sort(),
      GATEWAYS.map(id => [id, totals.get(id), true, null]), 'the operator overview counts each gateway\'s placements')

    const gatewayIps = new Set([await gatewayAddress(f, 'gw-a'), await gatewayAddress(f, 'gw-b'), await gatewayAddress(f, 'gw-c')])
    for (const inst of instances) t.notOk(gatewayIps.has(inst.tunnelIp), `${inst.tunnelIp} is no gateway's`)
    const first = instances[0]
    const primary = all.get(first.id)!.primary_gateway
    t.equal(first.body.credentials.wireguard.server_public_key, f.keys.get(primary), 'creation hands out the primary\'s key')
    t.equal(first.body.credentials.wireguard.server_endpoint, `${primary}.example.test:51820`)
    t.equal(first.body.credentials.wireguard.allowed_ips, `${await gatewayAddress(f, primary)}/32`, 'and its address')
  })

  t.test('register and heartbeat answer every placed gateway, primary first, each with its own address', async t => {
    const f = await startFleet(t, kind)
    for (const id of GATEWAYS) await sayHello(f, id)
    const [inst] = await createInstances(t, f.h, 1, 'peers')
    const p = (await placements(f.h)).get(inst.id)!
    const body = await register(f, inst)
    const peers = body.tunnel_config.peers as Array<Record<string, unknown>>
    t.same(peers.map(x => [x.gateway_id, x.role]), [[p.primary_gateway, 'primary'], [p.backup_gateway, 'backup']])
    for (const peer of peers) {
      const id = peer.gateway_id as string
      t.same(peer, { gateway_id: id, role: peer.role, region: null, public_key: f.keys.get(id), endpoint: `${id}.example.test:51820`, allowed_ips: `${await gatewayAddress(f, id)}/32`, persistent_keepalive: 25 })
    }
    t.not(peers[0].allowed_ips, peers[1].allowed_ips, 'distinct allowed_ips per gateway')
    t.same(body.tunnel_config.peer, { public_key: peers[0].public_key, endpoint: peers[0].endpoint, allowed_ips: peers[0].allowed_ips, persistent_keepalive: 25 }, 'peer is the primary')
    t.equal(body.tunnel_config.interface.address, `${inst.tunnelIp}/32`, 'one tunnel address on every gateway')

    const refused = await f.h.request('POST', '/v1/tunnel/register', { public_key: f.keys.get(p.backup_gateway!) }, bearer(inst.token))
    t.equal(refused.status, 422, 'the backup gateway\'s key cannot be registered as a peer either')

    const beat = await f.h.request('POST', '/v1/tunnel/heartbeat', HEARTBEAT, bearer(inst.token))
    t.equal(beat.status, 200)
    t.same(beat.body, { status: 'ok', next_heartbeat_in: 60, peers }, 'the heartbeat answers the same peers')

    const paths = (await f.h.request('GET', '/v1/openapi.json')).body.paths
    const schemaOf = (path: string): any => paths[path].post.responses['200'].content['application/json'].schema // eslint-disable-line @typescript-eslint/no-explicit-any
    const fields = ['gateway_id', 'role', 'region', 'public_key', 'endpoint', 'allowed_ips', 'persistent_keepalive']
    t.same(schemaOf('/v1/tunnel/register').properties.tunnel_config.properties.peers.items.required, fields, 'the OpenAPI document describes tunnel_config.peers')
    t.same(schemaOf('/v1/tunnel/heartbeat').properties.peers.items.required, fields, 'and the heartbeat\'s peers')
  })

  t.test('a gateway that stops reporting: its instances move to live gateways, except those with a fresh session there', async t => {
    const { f, instances } = await registeredFleet(t, kind, 30, 'failover')
    const before = await placements(f.h)
    const onC = placedOn(before, instances, 'gw-c')
    t.ok(onC.length >= 19, `gw-c carries ${onC.length}`)
    const pinned = onC.slice(0, 5)
    const t0 = f.clock.now()
    for (const id of ['gw-a', 'gw-b']) await reportFrom(f, id, placedOn(before, instances, id), t0)
    await reportFrom(f, 'gw-c', pinned, t0, onC.slice(5))
    t.same(await f.h.rpc.sweep().then(r => r.placements), 0, 'all alive: nothing moves')

    f.clock.advance(20)
    for (const id of ['gw-a', 'gw-b']) await reportFrom(f, id, placedOn(before, instances, id), f.clock.now())
    const versionBefore = await f.h.services.tunnel.configVersion()
    const swept = await f.h.rpc.sweep()
    t.equal(swept.gateways, 1, 'gw-c is no longer alive')
    t.ok(await f.h.services.tunnel.configVersion() > versionBefore, 'the version moved')
    const after = await placements(f.h)
    for (const inst of instances) {
      const was = before.get(inst.id)!
      const now = after.get(inst.id)!
      t.not(now.backup_gateway, now.primary_gateway)
      if (pinned.includes(inst)) {
        t.same(now, was, 'a fresh session on gw-c keeps the placement')
      } else if (onC.includes(inst)) {
        t.ok(now.primary_gateway !== 'gw-c' && now.backup_gateway !== 'gw-c', 'moved off gw-c')
        t.ok(now.backup_gateway !== null, 'two live gateways: still a backup')
        if (was.primary_gateway === 'gw-c') t.equal(now.primary_gateway, was.backup_gateway, 'the backup, already tunnelled, became the primary')
        else t.equal(now.primary_gateway, was.primary_gateway, 'a live primary stays')
      } else {
        t.same(now, was, 'instances not on gw-c stay')
      }
    }
    const snapA = await snapshotOf(t, f, 'gw-a')
    t.same(snapA.fleet?.map(g => g.id), ['gw-a', 'gw-b'], 'the fleet: alive gateways only')
    for (const r of snapA.routes ?? []) t.notOk(r.gateways.includes('gw-c'), 'no route through a gateway that is not alive')

    // Past the session window the pinned ones move too.
    f.clock.advance(170)
    for (const id of ['gw-a', 'gw-b']) await reportFrom(f, id, placedOn(before, instances, id), f.clock.now())
    await f.h.rpc.sweep()
    const later = await placements(f.h)
    t.equal(placedOn(later, instances, 'gw-c').length, 0, 'nothing left on gw-c once its sessions are stale')
    const beat = await f.h.request('POST', '/v1/tunnel/heartbeat', HEARTBEAT, bearer(pinned[0].token))
    t.notOk((beat.body.peers as Array<{ gateway_id: string }>).some(p => p.gateway_id === 'gw-c'), 'the heartbeat tells the container')
    t.equal(beat.body.peers.length, 2)

    // gw-c returns: nothing flaps back, new instances go to it.
    await sayHello(f, 'gw-c')
    await reportFrom(f, 'gw-c', [], f.clock.now())
    const settled = await f.h.rpc.sweep()
    t.equal(settled.placements, 0, 'no placement moves back')
    t.same(await placements(f.h), later)
    const fresh = await createInstances(t, f.h, 6, 'returning')
    const newer = await placements(f.h)
    t.same([...newer.entries()].filter(([id]) => later.has(id)), [...later.entries()], 'old placements untouched')
    for (const inst of fresh) t.equal(newer.get(inst.id)!.primary_gateway, 'gw-c', 'the least loaded, returning gateway is the new primary')
  })

  t.test('snapshots per gateway: its address, its placed peers, the fleet and the routes with live session holders', async t => {
    const { f, instances } = await registeredFleet(t, kind, 9, 'snap')
    const all = await placements(f.h)
    const t0 = f.clock.now()
    // Each gateway saw a handshake from every instance placed on it; gw-b's are the newer.
    await reportFrom(f, 'gw-a', placedOn(all, instances, 'gw-a'), new Date(t0.getTime() - 10_000))
    await reportFrom(f, 'gw-b', placedOn(all, instances, 'gw-b'), t0)
    await reportFrom(f, 'gw-c', placedOn(all, instances, 'gw-c'), new Date(t0.getTime() - 5_000))

    for (const id of GATEWAYS) {
      const snap = await snapshotOf(t, f, id)
      t.equal(snap.gateway.address, await gatewayAddress(f, id), `${id}: its own address`)
      t.equal(snap.gateway.publicKey, f.keys.get(id))
      t.same(snap.peers.map(p => p.instanceId).sort(), placedOn(all, instances, id).map(i => i.id).sort(), `${id}: only the peers placed on it`)
      t.same(snap.fleet, GATEWAYS.map(g => ({ id: g, relayUrl: `https://${g}.example.test:8443`, relayFingerprint: fingerprint(g), region: null })))
      t.equal(snap.routes?.length, 9, 'a route for every routed instance')
      for (const route of snap.routes ?? []) {
        const p = all.get(route.instanceId)!
        const order = { 'gw-b': 0, 'gw-c': 1, 'gw-a': 2 } as Record<string, number>
        t.same(route.gateways, [p.primary_gateway, p.backup_gateway!].sort((x, y) => order[x] - order[y]), 'session holders, freshest first')
        t.match(route.hostnames[0], /^snap-\d\.erugo\.test$/)
      }
    }
    const single = await snapshotOf(t, f)
    t.equal(single.peers.length, 9, 'without gateway=: every peer, as before')
    t.equal(single.gateway.address, '10.100.0.1')
    t.equal(single.fleet, undefined)
    t.equal(single.routes, undefined)

    const unknown = await f.h.call('GET', `${RPC_PATHS.config}?gateway=gw-nobody`)
    t.equal(unknown.status, 503, 'a gateway that has not said hello is told to retry')
    const bad = await f.h.call('GET', `${RPC_PATHS.config}?gateway=${encodeURIComponent('gw a/../x')}`)
    t.equal(bad.status, 422)

    // The long-poll wakes when a session appears or lapses.
    const version = (await snapshotOf(t, f, 'gw-a')).version
    const lone = instances.find(i => !placedOn(all, instances, 'gw-a').includes(i))!
    const pending = f.h.call('GET', `${RPC_PATHS.config}?since=${version}&gateway=gw-a`)
    await new Promise(resolve => setTimeout(resolve, 100))
    await reportFrom(f, 'gw-a', [...placedOn(all, instances, 'gw-a'), lone], f.clock.now())
    const woken = await pending
    t.equal(woken.status, 200, 'a new live session wakes the poll')
    const next = validateSnapshot(await woken.json())
    t.equal(next.routes?.find(r => r.instanceId === lone.id)?.gateways[0], 'gw-a', 'the freshest holder first')

    f.clock.advance(181)
    for (const id of GATEWAYS) await reportFrom(f, id, [], f.clock.now())
    const lapsed = await snapshotOf(t, f, 'gw-a')
    t.ok(lapsed.version > next.version, 'lapsed sessions bump the version on report')
    t.ok(lapsed.routes?.every(r => r.gateways.length === 0), 'no live session left after the session window')
  })

  t.test('region: a placement for a region prefers its gateways, then the least loaded', async t => {
    const f = await startFleet(t, kind)
    for (const id of GATEWAYS) {
      const key = newPublicKey()
      f.keys.set(id, key)
      await f.h.rpc.hello(hello(key, { gatewayId: id, endpoint: `${id}.example.test:51820`, region: id === 'gw-a' ? 'us' : 'eu' }))
    }
    const instances = await createInstances(t, f.h, 4, 'region')
    const placement = f.h.registry.placement
    await f.h.services.db('placements').delete()
    const placed = []
    for (const inst of instances) placed.push(await placement.place(f.h.services.db, inst.id, 'eu'))
    t.same(placed.map(p => [p?.primary_gateway, p?.backup_gateway]), [['gw-b', 'gw-c'], ['gw-c', 'gw-b'], ['gw-b', 'gw-c'], ['gw-c', 'gw-b']], 'both in the region while it has two alive')
    const body = await register(f, instances[0])
    t.same(body.tunnel_config.peers.map((p: { region: string | null }) => p.region), ['eu', 'eu'], 'peers carry their region')
  })

  t.test('region at registration: an instance placed elsewhere moves to the container\'s region unless its tunnel is live; re-placement keeps the region', async t => {
    const f = await startFleet(t, kind)
    const regions: Record<string, string> = { 'gw-a': 'us', 'gw-b': 'eu', 'gw-c': 'eu' }
    for (const id of GATEWAYS) {
      const key = newPublicKey()
      f.keys.set(id, key)
      await f.h.rpc.hello(hello(key, { gatewayId: id, endpoint: `${id}.example.test:51820`, region: regions[id] }))
    }
    const instances = await createInstances(t, f.h, 6, 'regreg')
    const before = await placements(f.h)
    const inUs = instances.filter(i => before.get(i.id)!.primary_gateway === 'gw-a')
    t.ok(inUs.length >= 2, 'creation (no region known) put some primaries in us')
    const [moving, healthy] = inUs

    // `healthy` has a live tunnel on gw-a: it stays, whatever region its container names.
    await register(f, healthy)
    await reportFrom(f, 'gw-a', [healthy], f.clock.now())
    const kept = await f.h.request('POST', '/v1/tunnel/register', { public_key: healthy.key, region: 'eu' }, bearer(healthy.token))
    t.equal(kept.status, 200, kept.raw)
    t.equal(kept.body.tunnel_config.peers[0].gateway_id, 'gw-a', 'a live tunnel is never moved')

    const moved = await f.h.request('POST', '/v1/tunnel/register', { public_key: moving.key, region: 'eu' }, bearer(moving.token))
    t.equal(moved.status, 200, moved.raw)
    t.same(moved.body.tunnel_config.peers.map((p: { region: string | null }) => p.region), ['eu', 'eu'], 'no live tunnel: primary and backup in the container\'s region')
    const row = await f.h.services.db('instances').where({ id: moving.id }).first('region') as { region: string | null }
    t.equal(row.region, 'eu', 'the region is kept for later placements')

    // Its primary stops reporting: the sweep re-places it within the region.
    const primary = moved.body.tunnel_config.peers[0].gateway_id as string
    f.clock.advance(600)
    for (const id of GATEWAYS.filter(g => g !== primary)) { await sayHello(f, id); await reportFrom(f, id, [], f.clock.now()) }
    await f.h.rpc.sweep()
    const after = (await placements(f.h)).get(moving.id)!
    t.equal(regions[after.primary_gateway], 'eu', `re-placed in eu (${after.primary_gateway})`)
    t.not(after.primary_gateway, primary)

    const bad = await f.h.request('POST', '/v1/tunnel/register', { public_key: moving.key, region: 'EU West' }, bearer(moving.token))
    t.equal(bad.status, 422, 'a malformed region: 422')
    t.equal(bad.body.error.code, 'VALIDATION_ERROR')
    t.ok(Array.isArray(bad.body.error.details.fields?.region), 'details.fields.region')
  })

  t.test('gateway addresses are never handed to instances, even in a small pool', async t => {
    const f = await startFleet(t, kind, { CC_TUNNEL_POOL: '10.9.0.0/29' })
    for (const id of GATEWAYS) await sayHello(f, id)
    t.same([await gatewayAddress(f, 'gw-a'), await gatewayAddress(f, 'gw-b'), await gatewayAddress(f, 'gw-c')], ['10.9.0.1', '10.9.0.6', '10.9.0.5'])
    const user = (await newUser(f.h, 'small')).token
    const got: string[] = []
    for (let i = 0; i < 4; i++) {
      const res = await f.h.request('POST', '/v1/instances', { name: 'x', subdomain: `small-${i}` }, bearer(user))
      if (res.status === 201) got.push(res.body.instance.tunnel_ip)
      else t.equal(res.status, 503, 'the pool is full once the three free hosts are used')
    }
    t.same(got.sort(), ['10.9.0.2', '10.9.0.3', '10.9.0.4'])
  })

  t.test('gateways saying hello at the same moment get distinct addresses, one of them the first host', async t => {
    const f = await startFleet(t, kind)
    const ids = Array.from({ length: 6 }, (_, i) => `gw-${i}`)
    await Promise.all(ids.map(async id => { await sayHello(f, id) }))
    const addresses = await Promise.all(ids.map(async id => await gatewayAddress(f, id)))
    t.equal(new Set(addresses).size, ids.length, `distinct: ${addresses.join(' ')}`)
    t.same([...addresses].sort(), ['10.100.0.1', '10.100.255.250', '10.100.255.251', '10.100.255.252', '10.100.255.253', '10.100.255.254'].sort(), 'the first host, then from the top down without gaps')
  })
})
