/**
 * The internal RPC listener: secret check before anything else, the config long-poll (at once
 * when stale, waits otherwise, wakes on a change), hello feeding what POST /v1/instances and
 * /v1/tunnel/register tell containers, and the error contract.
 */
import t from 'tap'
import { generatePrivateKey, publicKeyFromPrivate } from '../../../proto/noise/keys.ts'
import { RPC_PATHS, RPC_PROTOCOL_VERSION, validateSnapshot } from '../../../proto/rpc/index.ts'
import { secretMatches, bearerSecret } from '../../../control/rpc/secret.ts'
import { bearer, forEachDatabase } from '../harness.ts'
import { BASE_DOMAIN, GATEWAY_KEY, mustCreate, newPublicKey, newUser } from '../routes/tunnel-fixtures.ts'
import { SECRET, hello, startRpc } from './fixtures.ts'

const key = (): string => publicKeyFromPrivate(generatePrivateKey()).toString('base64')

async function errorCode (res: Response): Promise<string> {
  const body = await res.json() as { error: { code: string, message: string, details: unknown } }
  return body.error.code
}

t.test('secretMatches: equal only for the same string, whatever the lengths', async t => {
  t.ok(secretMatches(SECRET, SECRET))
  t.notOk(secretMatches(SECRET.slice(0, -1), SECRET), 'a prefix')
  t.notOk(secretMatches(SECRET + 'x', SECRET), 'an extension')
  t.notOk(secretMatches('', SECRET), 'empty')
  t.notOk(secretMatches(SECRET.replace(/.$/, c => c === 'a' ? 'b' : 'a'), SECRET), 'last character differs')
  t.equal(bearerSecret(`Bearer ${SECRET}`), SECRET)
  t.equal(bearerSecret(`bearer ${SECRET}`), null, 'scheme is case-sensitive here (we are the only client)')
  t.equal(bearerSecret('Bearer '), null)
  t.equal(bearerSecret(undefined), null)
})

await forEachDatabase(t, async (t, db) => {
  t.test('wrong or missing secret -> 401 on every endpoint, before routing', async t => {
    await db('gateways').delete()
    const h = await startRpc(t, db)
    const paths: Array<[string, string, unknown]> = [
      ['GET', RPC_PATHS.config, undefined],
      ['POST', RPC_PATHS.hello, hello(key())],
      ['POST', RPC_PATHS.reports, { protocol: 1 }],
      ['GET', '/internal/v1/nope', undefined],
    ]
    const secrets: Array<[string, string | null]> = [
      ['no header', null],
      ['wrong secret', 'x'.repeat(SECRET.length)],
      ['prefix of the secret', SECRET.slice(0, 20)],
      ['secret plus a character', SECRET + 'a'],
    ]
    for (const [method, path, body] of paths) {
      for (const [label, secret] of secrets) {
        const res = await h.call(method, path, body, secret)
        t.equal(res.status, 401, `${label}: ${method} ${path}`)
        t.match(res.headers.get('www-authenticate'), /^Bearer /)
        t.equal(await errorCode(res), 'UNAUTHORIZED')
      }
    }
    const basic = await fetch(h.server!.url + RPC_PATHS.config, { headers: { authorization: `Basic ${Buffer.from(`gw:${SECRET}`).toString('base64')}` } })
    t.equal(basic.status, 401, 'Basic scheme')
    t.equal(await db('gateways').count('* as n').first().then(r => Number(r!.n)), 0, 'no hello was recorded')
    const ok = await h.call('GET', RPC_PATHS.config)
    t.equal(ok.status, 200, 'the right secret works')
  })

  t.test('config long-poll: at once when stale, waits when current, wakes on a change', async t => {
    const h = await startRpc(t, db, { waitMs: 1_500 })
    const user = await newUser(h)
    const inst = await mustCreate(t, h, user.token, 'polled')
    const peerKey = newPublicKey()
    t.equal((await h.request('POST', '/v1/tunnel/register', { public_key: peerKey }, bearer(inst.token))).status, 200)

    const first = await h.call('GET', RPC_PATHS.config)
    t.equal(first.status, 200)
    const snapshot = validateSnapshot(await first.json())
    t.equal(first.headers.get('etag'), `"${snapshot.version}"`)
    t.equal(snapshot.version, await h.services.tunnel.configVersion())
    t.same(snapshot.gateway, { address: '10.100.0.1', listenPort: 51820, publicKey: GATEWAY_KEY, endpoint: 'connect.erugo.test:51820' })
    t.same(snapshot.peers, [{ instanceId: inst.id, publicKey: peerKey, tunnelIp: inst.tunnelIp, hostnames: [`polled.${BASE_DOMAIN}`], port: 80 }])

    let started = Date.now()
    const stale = await h.call('GET', `${RPC_PATHS.config}?since=${snapshot.version - 1}`)
    t.equal(stale.status, 200, 'an older version gets the snapshot')
    t.ok(Date.now() - started < 1_000, 'at once')
    const unknown = await h.call('GET', `${RPC_PATHS.config}?since=${snapshot.version + 1000}`)
    t.equal(unknown.status, 200, 'a version control never had (control restarted on a new database) gets it too')

    started = Date.now()
    const idle = await h.call('GET', `${RPC_PATHS.config}?since=${snapshot.version}`)
    const waited = Date.now() - started
    t.equal(idle.status, 204, 'nothing new: 204')
    t.ok(waited >= 1_400, `waited the configured time (${waited} ms)`)
    t.ok(waited < 4_000, 'and not much longer')

    started = Date.now()
    const pending = h.call('GET', `${RPC_PATHS.config}?since=${snapshot.version}`)
    await new Promise(resolve => setTimeout(resolve, 200))
    t.equal((await h.request('DELETE', `/v1/instances/${inst.id}`, undefined, bearer(user.token))).status, 204)
    const woken = await pending
    t.equal(woken.status, 200, 'a change ends the wait with the new snapshot')
    t.ok(Date.now() - started < 1_400, `before the wait ran out (${Date.now() - started} ms)`)
    const next = validateSnapshot(await woken.json())
    t.ok(next.version > snapshot.version)
    t.same(next.peers, [], 'the deleted instance is gone')

    for (const bad of ['-1', 'abc', '1.5', '9'.repeat(20)]) {
      const res = await h.call('GET', `${RPC_PATHS.config}?since=${bad}`)
      t.equal(res.status, 422, `since=${bad}`)
      t.equal(await errorCode(res), 'VALIDATION_ERROR')
    }
  })

  t.test('a gateway hanging up ends its wait; closing the listener answers pending polls', async t => {
    const h = await startRpc(t, db, { waitMs: 60_000 })
    const version = await h.services.tunnel.configVersion()
    const hungUp = h.call('GET', `${RPC_PATHS.config}?since=${version}`).catch(() => null)
    const deadline = Date.now() + 5_000
    while (h.rpc.watcher.waiting === 0 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
    t.equal(h.rpc.watcher.waiting, 1, 'one poll waiting')
    // A second poll whose client hangs up.
    const ctl = new AbortController()
    const second = fetch(h.server!.url + `${RPC_PATHS.config}?since=${version}`, { headers: { authorization: `Bearer ${SECRET}` }, signal: ctl.signal }).catch(() => null)
    while (h.rpc.watcher.waiting < 2 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
    ctl.abort()
    await second
    const gone = Date.now() + 5_000
    while (h.rpc.watcher.waiting > 1 && Date.now() < gone) await new Promise(resolve => setTimeout(resolve, 10))
    t.equal(h.rpc.watcher.waiting, 1, 'the hung-up poll stopped waiting')
    const started = Date.now()
    await h.server!.close(1_000)
    const res = await hungUp
    t.equal(res?.status, 204, 'closing answers the pending poll')
    t.ok(Date.now() - started < 3_000)
  })

  t.test('hello: POST /v1/instances and /v1/tunnel/register hand out the gateway that said hello', async t => {
    const h = await startRpc(t, db, { env: {} })
    const user = await newUser(h, 'hello')
    const before = await mustCreate(t, h, user.token, 'before-hello')
    t.equal(before.body.credentials.wireguard.server_public_key, GATEWAY_KEY, 'configured key until a hello')

    const gatewayKey = key()
    const res = await h.call('POST', RPC_PATHS.hello, hello(gatewayKey))
    t.equal(res.status, 200)
    t.same(await res.json(), { protocol: RPC_PROTOCOL_VERSION, gatewayId: 'gw-test', reportIntervalMs: 5_000, configVersion: await h.services.tunnel.configVersion() })

    const other = await newUser(h, 'hello2')
    const after = await mustCreate(t, h, other.token, 'after-hello')
    t.equal(after.body.credentials.wireguard.server_public_key, gatewayKey, 'the real key')
    t.equal(after.body.credentials.wireguard.server_endpoint, 'gw1.example.test:41820', 'the real endpoint')
    const reg = await h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(before.token))
    t.equal(reg.status, 200)
    t.equal(reg.body.tunnel_config.peer.public_key, gatewayKey)
    t.equal(reg.body.tunnel_config.peer.endpoint, 'gw1.example.test:41820')
    const refused = await h.request('POST', '/v1/tunnel/register', { public_key: gatewayKey }, bearer(before.token))
    t.equal(refused.status, 422, 'the reported gateway key cannot be registered as a peer')

    const snap = validateSnapshot(await (await h.call('GET', RPC_PATHS.config)).json())
    t.same(snap.gateway, { address: '10.100.0.1', listenPort: 41820, publicKey: gatewayKey, endpoint: 'gw1.example.test:41820' })

    // A gateway that does not know its public name: configured host, its own port.
    const quiet = key()
    t.equal((await h.call('POST', RPC_PATHS.hello, hello(quiet, { gatewayId: 'gw-2', endpoint: null, listenPort: 51999 }))).status, 200)
    const third = await mustCreate(t, h, (await newUser(h, 'hello3')).token, 'third-hello')
    t.equal(third.body.credentials.wireguard.server_public_key, quiet, 'the newest hello wins')
    t.equal(third.body.credentials.wireguard.server_endpoint, 'connect.erugo.test:51999')
  })

  t.test('hello with no configured key: creation is 503 until a gateway says hello', async t => {
    await db('gateways').delete() // the database is shared by this file's tests
    const h = await startRpc(t, db, { configuredKey: null })
    const user = await newUser(h, 'nokey')
    const refused = await h.request('POST', '/v1/instances', { name: 'x', subdomain: 'no-gateway-yet' }, bearer(user.token))
    t.equal(refused.status, 503)
    t.equal((await h.call('POST', RPC_PATHS.hello, hello(key()))).status, 200)
    t.equal((await h.request('POST', '/v1/instances', { name: 'x', subdomain: 'no-gateway-yet' }, bearer(user.token))).status, 201)
  })

  t.test('errors: protocol, validation, JSON, media type, routing', async t => {
    await db('gateways').delete()
    const h = await startRpc(t, db)
    const mismatch = await h.call('POST', RPC_PATHS.hello, hello(key(), { protocol: RPC_PROTOCOL_VERSION + 1 }))
    t.equal(mismatch.status, 409)
    t.equal(await errorCode(mismatch), 'PROTOCOL_MISMATCH')
    const bad = await h.call('POST', RPC_PATHS.hello, hello('not-a-key'))
    t.equal(bad.status, 422)
    const body = await bad.json() as { error: { code: string, message: string, details: { field: string } } }
    t.equal(body.error.details.field, 'publicKey', 'names the field')
    const badEndpoint = await h.call('POST', RPC_PATHS.hello, hello(key(), { endpoint: 'gw:99999' }))
    t.equal(badEndpoint.status, 422, 'port out of range')
    const notJson = await fetch(h.server!.url + RPC_PATHS.hello, { method: 'POST', headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'application/json' }, body: '{"protocol":' })
    t.equal(notJson.status, 422)
    const text = await fetch(h.server!.url + RPC_PATHS.hello, { method: 'POST', headers: { authorization: `Bearer ${SECRET}`, 'content-type': 'text/plain' }, body: '{}' })
    t.equal(text.status, 415)
    t.equal((await h.call('GET', '/internal/v1/nope')).status, 404)
    const wrongMethod = await h.call('POST', RPC_PATHS.config, {})
    t.equal(wrongMethod.status, 405)
    t.equal(wrongMethod.headers.get('allow'), 'GET')
    const reportMismatch = await h.call('POST', RPC_PATHS.reports, { protocol: 99, gatewayId: 'g', sentAt: new Date().toISOString(), full: true, peers: [], certificates: [] })
    t.equal(reportMismatch.status, 409)
    t.equal(await db('gateways').count('* as n').first().then(r => Number(r!.n)), 0, 'nothing recorded from refused messages')
  })
})
