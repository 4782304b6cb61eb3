import t from 'tap'
import { RouteMap, normalizeHost, type Route } from '../../../gateway/edge/routes.ts'

const a: Route = { instanceId: 'a', tunnelIp: '10.100.0.2', port: 80, hostnames: ['Share.Example.COM', 'files.example.com'] }
const b: Route = { instanceId: 'b', tunnelIp: '10.100.0.3', port: 80, hostnames: ['b.example.com'], maxConnections: 4 }

t.test('normalizeHost: case, port and trailing dot are ignored', async t => {
  t.equal(normalizeHost('Share.Example.COM'), 'share.example.com')
  t.equal(normalizeHost('share.example.com:443'), 'share.example.com')
  t.equal(normalizeHost('share.example.com.'), 'share.example.com')
  t.equal(normalizeHost('SHARE.example.com.:8443'), 'share.example.com')
})

t.test('normalizeHost: IP literals and junk route nowhere', async t => {
  for (const bad of ['', '[::1]:443', 'a b.com', 'a..b', '-a.com', 'a.com:port', 'a.com:99999999', 'x'.repeat(64) + '.com', 'é.com', 'a.com/evil', undefined]) {
    t.equal(normalizeHost(bad), '', String(bad))
  }
})

t.test('lookup matches any case, with port or trailing dot', async t => {
  const map = new RouteMap([a, b])
  t.equal(map.lookup('share.example.com')?.instanceId, 'a')
  t.equal(map.lookup('SHARE.EXAMPLE.COM:443')?.instanceId, 'a')
  t.equal(map.lookup('files.example.com.')?.instanceId, 'a')
  t.equal(map.lookup('b.example.com')?.maxConnections, 4)
  t.equal(map.lookup('c.example.com'), undefined)
  t.equal(map.lookup('example.com'), undefined, 'no implicit parent or wildcard match')
  t.same(map.hostnames().sort(), ['b.example.com', 'files.example.com', 'share.example.com'])
})

t.test('updateRoutes swaps the whole table at once', async t => {
  const map = new RouteMap([a])
  const before = map.lookup('share.example.com')
  map.updateRoutes([b])
  t.equal(map.lookup('share.example.com'), undefined, 'old hostnames gone')
  t.equal(map.lookup('b.example.com')?.instanceId, 'b')
  t.equal(before?.instanceId, 'a', 'a route object held by an in-flight request is unchanged')
  t.ok(Object.isFrozen(map.lookup('b.example.com')), 'routes are immutable')
})

t.test('a hostname claimed twice stays with the first route; invalid names are reported', async t => {
  const map = new RouteMap()
  const result = map.updateRoutes([a, { ...b, hostnames: ['share.example.com', 'b.example.com', 'bad name'] }])
  t.same(result.conflicts, ['share.example.com'])
  t.same(result.invalid, ['bad name'])
  t.equal(map.lookup('share.example.com')?.instanceId, 'a')
  t.equal(map.lookup('b.example.com')?.instanceId, 'b')
})
