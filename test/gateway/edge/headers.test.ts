import t from 'tap'
import { upstreamRequestHeaders, downstreamResponseHeaders, forwardedElement, plainIp, publicAuthority, withoutHopByHop } from '../../../gateway/edge/headers.ts'

const facts = { clientIp: '203.0.113.7', host: 'share.example.com', proto: 'https' as const, requestId: 'r1' }

t.test('hop-by-hop headers are removed, including those Connection names (RFC 9110 7.6.1)', async t => {
  const out = withoutHopByHop({
    connection: 'keep-alive, X-Secret-Hop', 'x-secret-hop': '1', 'keep-alive': 'timeout=5', te: 'trailers', trailer: 'x',
    'transfer-encoding': 'chunked', upgrade: 'websocket', 'proxy-authorization': 'Basic x', proxy: 'http://evil',
    'proxy-connection': 'keep-alive', 'content-type': 'text/plain', 'upload-offset': '5',
  })
  t.same(out, { 'content-type': 'text/plain', 'upload-offset': '5' })
})

t.test('on upgrades Upgrade and Connection: upgrade survive', async t => {
  const out = withoutHopByHop({ connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-key': 'k' }, true)
  t.same(out, { connection: 'upgrade', upgrade: 'websocket', 'sec-websocket-key': 'k' })
})

t.test('HTTP/2 pseudo-headers do not reach the origin', async t => {
  const out = upstreamRequestHeaders({ ':method': 'GET', ':path': '/', ':authority': 'share.example.com', ':scheme': 'https', accept: '*/*' }, facts)
  t.notOk(Object.keys(out).some(k => k.startsWith(':')))
  t.equal(out.host, 'share.example.com')
})

t.test('client-supplied forwarding headers are replaced, never appended to', async t => {
  const out = upstreamRequestHeaders({
    host: 'share.example.com',
    'x-forwarded-for': '10.0.0.1', 'x-forwarded-proto': 'http', 'x-forwarded-host': 'evil.com', 'x-real-ip': '10.0.0.1',
    forwarded: 'for=10.0.0.1', 'x-forwarded-port': '1', 'x-request-id': 'spoof', expect: '100-continue',
  }, facts)
  t.equal(out['x-forwarded-for'], '203.0.113.7')
  t.equal(out['x-real-ip'], '203.0.113.7')
  t.equal(out['x-forwarded-proto'], 'https')
  t.equal(out['x-forwarded-host'], 'share.example.com')
  t.equal(out.forwarded, 'for=203.0.113.7;host=share.example.com;proto=https')
  t.equal(out['x-request-id'], 'r1')
  t.equal(out['x-forwarded-port'], undefined)
  t.equal(out.expect, undefined)
})

t.test('Forwarded quotes IPv6 nodes and host:port (RFC 7239 4 and 6)', async t => {
  t.equal(forwardedElement({ ...facts, clientIp: '2001:db8::1', host: 'share.example.com:8443' }),
    'for="[2001:db8::1]";host="share.example.com:8443";proto=https')
})

t.test('Forwarded names each request\'s own client and host when requests of different clients alternate', async t => {
  const a = { ...facts, clientIp: '198.51.100.1' }
  const b = { ...facts, clientIp: '2001:db8::2', host: 'other.example.com:8443' }
  const third = { ...a, host: 'third.example.com' }
  const seen = [a, b, a, a, third, { ...third, proto: 'http' as const }, b].map(f => upstreamRequestHeaders({ connection: 'keep-alive' }, f).forwarded)
  t.same(seen, [
    'for=198.51.100.1;host=share.example.com;proto=https',
    'for="[2001:db8::2]";host="other.example.com:8443";proto=https',
    'for=198.51.100.1;host=share.example.com;proto=https',
    'for=198.51.100.1;host=share.example.com;proto=https',
    'for=198.51.100.1;host=third.example.com;proto=https',
    'for=198.51.100.1;host=third.example.com;proto=http',
    'for="[2001:db8::2]";host="other.example.com:8443";proto=https',
  ])
})

t.test('Connection: keep-alive, Keep-Alive and close remove what they name, like any other Connection value', async t => {
  const cases: Array<[string, Record<string, string>]> = [
    ['keep-alive', { 'x-hop': '1', close: 'x', accept: '*/*' }],
    ['Keep-Alive', { 'x-hop': '1', close: 'x', accept: '*/*' }],
    ['close', { 'x-hop': '1', accept: '*/*' }],
    ['Keep-Alive, X-Hop', { close: 'x', accept: '*/*' }],
  ]
  for (const [connection, expected] of cases) {
    t.same(withoutHopByHop({ connection, 'keep-alive': 'timeout=5', 'x-hop': '1', close: 'x', accept: '*/*' }), expected, connection)
  }
})

t.test('IPv4-mapped client addresses are shown as IPv4', async t => {
  t.equal(plainIp('::ffff:198.51.100.4'), '198.51.100.4')
  t.equal(plainIp('2001:db8::2'), '2001:db8::2')
  t.equal(plainIp(undefined), 'unknown')
})

t.test('response headers lose hop-by-hop fields and keep the rest (Location untouched)', async t => {
  const out = downstreamResponseHeaders({ connection: 'close', 'transfer-encoding': 'chunked', location: 'https://share.example.com/files/abc', 'tus-resumable': '1.0.0', 'set-cookie': ['a=1', 'b=2'] })
  t.same(out, { location: 'https://share.example.com/files/abc', 'tus-resumable': '1.0.0', 'set-cookie': ['a=1', 'b=2'] })
})

t.test('the public authority is what a client would put in a URL', async t => {
  t.equal(publicAuthority('MyFiles.Example.COM.:443', 'https'), 'myfiles.example.com')
  t.equal(publicAuthority('myfiles.example.com', 'https'), 'myfiles.example.com')
  t.equal(publicAuthority('Share.Example.com:8443', 'https'), 'share.example.com:8443')
  t.equal(publicAuthority('share.example.com.:0443', 'https'), 'share.example.com', 'leading zeros: still the default port')
  t.equal(publicAuthority('share.example.com:80', 'http'), 'share.example.com')
  t.equal(publicAuthority('share.example.com:80', 'https'), 'share.example.com:80')
})
