/** Spec "Instance Management Endpoints": /v1/instances, every success and error path. */
import t from 'tap'
import { parseIPv4Address } from '../../../proto/wire/ipv4.ts'
import { assertError, bearer, forEachDatabase, signUp } from '../harness.ts'
import {
  BASE_DOMAIN, Clock, createInstance, GATEWAY_ENDPOINT, GATEWAY_KEY, INSTANCE_ID, ISO_SECONDS, mustCreate, newPublicKey, newUser, startInstanceApp,
} from './tunnel-fixtures.ts'

const CREATE_KEYS = ['credentials', 'instance']
const CREATED_INSTANCE_KEYS = ['created_at', 'full_domain', 'id', 'name', 'status', 'subdomain', 'tunnel_ip']
const SUMMARY_KEYS = ['created_at', 'custom_domain', 'id', 'last_seen', 'name', 'status', 'subdomain', 'suspended_reason', 'tunnel_ip']
const DETAIL_KEYS = [...SUMMARY_KEYS, 'alerts', 'full_domain'].sort()

await forEachDatabase(t, async (t, db) => {
  t.test('create: 201 with the spec body and working credentials', async t => {
    const clock = new Clock()
    const h = await startInstanceApp(t, db, { clock })
    const user = await newUser(h)
    const res = await createInstance(h, user.token, 'MyFiles', '  My Erugo Server ')
    t.equal(res.status, 201)
    t.same(Object.keys(res.body).sort(), CREATE_KEYS)
    t.same(Object.keys(res.body.instance).sort(), CREATED_INSTANCE_KEYS)
    const inst = res.body.instance
    t.match(inst.id, INSTANCE_ID)
    t.equal(inst.name, 'My Erugo Server', 'name trimmed')
    t.equal(inst.subdomain, 'myfiles', 'subdomain lower-cased')
    t.equal(inst.full_domain, `myfiles.${BASE_DOMAIN}`)
    t.equal(inst.status, 'pending')
    t.equal(inst.created_at, '2026-03-01T12:00:00Z')
    t.match(inst.tunnel_ip, /^10\.100\.\d+\.\d+$/)
    t.not(inst.tunnel_ip, '10.100.0.0', 'never the network address')
    t.not(inst.tunnel_ip, '10.100.0.1', 'never the gateway address')
    t.same(Object.keys(res.body.credentials).sort(), ['instance_token', 'wireguard'])
    t.same(res.body.credentials.wireguard, {
      server_public_key: GATEWAY_KEY,
      server_endpoint: GATEWAY_ENDPOINT,
      client_ip: `${inst.tunnel_ip}/32`,
      allowed_ips: '10.100.0.1/32',
    }, 'allowed_ips is only the gateway (not the /24 of the spec example)')
    const token = res.body.credentials.instance_token as string
    const [, payload] = token.split('.')
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString())
    t.equal(claims.instance_id, inst.id, 'token claims the instance id')
    t.equal(claims.user_id, user.id, 'token claims the user id')
    t.type(claims.iat, 'number')
    t.equal(claims.exp, undefined, 'no expiry')
    const status = await h.request('GET', '/v1/tunnel/status', undefined, bearer(token))
    t.equal(status.status, 200, 'instance token works on the tunnel endpoints')
  })

  t.test('create: validation errors', async t => {
    const h = await startInstanceApp(t, db)
    const user = await newUser(h)
    const cases: Array<[string, Record<string, unknown>, string]> = [
      ['empty name', { name: '  ', subdomain: 'okname' }, 'name'],
      ['101-char name', { name: 'n'.repeat(101), subdomain: 'okname' }, 'name'],
      ['missing subdomain', { name: 'x' }, 'subdomain'],
      ['leading hyphen', { name: 'x', subdomain: '-abc' }, 'subdomain'],
      ['trailing hyphen', { name: 'x', subdomain: 'abc-' }, 'subdomain'],
      ['underscore', { name: 'x', subdomain: 'a_b' }, 'subdomain'],
      ['dot', { name: 'x', subdomain: 'a.b' }, 'subdomain'],
      ['unicode', { name: 'x', subdomain: 'bücher' }, 'subdomain'],
      ['64 chars', { name: 'x', subdomain: 'a'.repeat(64) }, 'subdomain'],
      ['punycode prefix (RFC 5891)', { name: 'x', subdomain: 'xn--bcher-kva' }, 'subdomain'],
      ['reserved www', { name: 'x', subdomain: 'www' }, 'subdomain'],
      ['reserved API (case)', { name: 'x', subdomain: 'API' }, 'subdomain'],
      ['reserved dashboard', { name: 'x', subdomain: 'dashboard' }, 'subdomain'],
      ['reserved connect', { name: 'x', subdomain: 'connect' }, 'subdomain'],
      ['reserved tunnel', { name: 'x', subdomain: 'tunnel' }, 'subdomain'],
      ['reserved mail', { name: 'x', subdomain: 'mail' }, 'subdomain'],
      ['reserved admin', { name: 'x', subdomain: 'admin' }, 'subdomain'],
      ['unknown field', { name: 'x', subdomain: 'okname', tunnel_ip: '10.100.0.2' }, 'tunnel_ip'],
      ['subdomain as number', { name: 'x', subdomain: 42 }, 'subdomain'],
    ]
    for (const [label, body, field] of cases) {
      const res = await h.request('POST', '/v1/instances', body, bearer(user.token))
      assertError(t, res, 'VALIDATION_ERROR', label)
      t.ok(Array.isArray(res.body.error.details.fields?.[field]), `${label}: details.fields.${field}`)
    }
    const reserved = await h.request('POST', '/v1/instances', { name: 'x', subdomain: 'admin' }, bearer(user.token))
    t.same(reserved.body.error.details.fields.subdomain, ['is reserved'])
    t.equal(reserved.body.error.details.suggestions.length, 3, 'a reserved name comes with suggestions')
    t.equal(Number((await db('instances').where({ user_id: user.id }).count('* as n').first())!.n), 0, 'nothing stored')
    const ok = await createInstance(h, user.token, 'a'.repeat(63))
    t.equal(ok.status, 201, '63 characters is the maximum and allowed')
  })

  t.test('create: 409 SUBDOMAIN_TAKEN with available suggestions', async t => {
    const h = await startInstanceApp(t, db)
    const a = await newUser(h)
    const b = await newUser(h)
    await mustCreate(t, h, a.token, 'shared')
    await mustCreate(t, h, (await newUser(h)).token, 'shared1') // the first candidate is taken too
    const res = await createInstance(h, b.token, 'Shared')
    assertError(t, res, 'SUBDOMAIN_TAKEN')
    t.equal(res.body.error.details.subdomain, 'shared')
    const suggestions = res.body.error.details.suggestions as string[]
    t.equal(suggestions.length, 3)
    t.notOk(suggestions.includes('shared1'), 'a taken name is not suggested')
    for (const s of suggestions) {
      t.match(s, /^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/)
      const check = await h.request('GET', `/v1/subdomains/check?subdomain=${s}`, undefined, bearer(b.token))
      t.equal(check.body.available, true, `suggestion ${s} is available`)
    }
    t.equal((await createInstance(h, b.token, suggestions[0])).status, 201, 'a suggestion can be taken')
  })

  t.test('create: plan limits (Free 1, Pro 3, Business 10) -> 403 LIMIT_EXCEEDED', async t => {
    const plans = new Map()
    const h = await startInstanceApp(t, db, { plans })
    const free = await newUser(h)
    const pro = await newUser(h)
    const business = await newUser(h)
    const lapsed = await newUser(h)
    plans.set(pro.id, { plan: 'pro', status: 'active' })
    plans.set(business.id, { plan: 'business', status: 'trialing' })
    plans.set(lapsed.id, { plan: 'business', status: 'canceled' })
    for (const [user, limit, plan, label] of [[free, 1, 'free', 'free'], [pro, 3, 'pro', 'pro'], [business, 10, 'business', 'biz'], [lapsed, 1, 'free', 'lapsed']] as const) {
      for (let i = 0; i < limit; i++) await mustCreate(t, h, user.token, `${label}-${i}`)
      const over = await createInstance(h, user.token, `${label}-over`)
      assertError(t, over, 'LIMIT_EXCEEDED', label)
      t.same(over.body.error.details, { resource: 'instances', limit, plan }, `${label}: details`)
    }
    const list = await h.request('GET', '/v1/instances', undefined, bearer(business.token))
    t.equal(list.body.instances.length, 10)
    // Deleting frees a slot.
    const first = list.body.instances[0].id
    t.equal((await h.request('DELETE', `/v1/instances/${first}`, undefined, bearer(business.token))).status, 204)
    t.equal((await createInstance(h, business.token, 'biz-again')).status, 201)
  })

  t.test('create: unverified account -> 403 FORBIDDEN; no token -> 401', async t => {
    const h = await startInstanceApp(t, db)
    const login = await signUp(h, `unverified-${process.pid}@example.com`)
    const res = await createInstance(h, login.access_token, 'unverified')
    assertError(t, res, 'FORBIDDEN')
    t.equal(res.body.error.details.account_status, 'pending_email_verification')
    assertError(t, await h.request('POST', '/v1/instances', { name: 'x', subdomain: 'noauth' }), 'UNAUTHORIZED')
    t.equal((await h.request('GET', '/v1/instances', undefined, bearer(login.access_token))).status, 200, 'listing is allowed')
  })

  t.test('create: no gateway configured -> 503 and nothing stored', async t => {
    const h = await startInstanceApp(t, db, { env: { CC_GATEWAY_PUBLIC_KEY: '' } })
    const user = await newUser(h)
    assertError(t, await createInstance(h, user.token, 'nogateway'), 'SERVICE_UNAVAILABLE')
    t.equal(await db('instances').where({ subdomain: 'nogateway' }).first(), undefined)
  })

  t.test('list: own instances only, in creation order, spec item shape', async t => {
    const clock = new Clock()
    const h = await startInstanceApp(t, db, { clock, plans: { plan: 'pro', status: 'active' } })
    const a = await newUser(h)
    const b = await newUser(h)
    const first = await mustCreate(t, h, a.token, 'list-one')
    clock.advance(1)
    const second = await mustCreate(t, h, a.token, 'list-two')
    await mustCreate(t, h, b.token, 'list-other')
    const res = await h.request('GET', '/v1/instances', undefined, bearer(a.token))
    t.equal(res.status, 200)
    t.same(Object.keys(res.body), ['instances'])
    t.same(res.body.instances.map((i: { id: string }) => i.id), [first.id, second.id])
    for (const item of res.body.instances) t.same(Object.keys(item).sort(), SUMMARY_KEYS)
    t.same(res.body.instances[0], {
      id: first.id,
      name: 'My Erugo Server',
      subdomain: 'list-one',
      custom_domain: null,
      status: 'pending',
      suspended_reason: null,
      tunnel_ip: first.tunnelIp,
      last_seen: null,
      created_at: '2026-03-01T12:00:00Z',
    })
    const empty = await h.request('GET', '/v1/instances', undefined, bearer((await newUser(h)).token))
    t.same(empty.body, { instances: [] })
  })

  t.test('get: details; status and last_seen follow the tunnel', async t => {
    const clock = new Clock()
    const h = await startInstanceApp(t, db, { clock })
    const user = await newUser(h)
    const inst = await mustCreate(t, h, user.token, 'details')
    const res = await h.request('GET', `/v1/instances/${inst.id}`, undefined, bearer(user.token))
    t.equal(res.status, 200)
    t.same(Object.keys(res.body).sort(), DETAIL_KEYS)
    t.equal(res.body.full_domain, `details.${BASE_DOMAIN}`)
    t.equal(res.body.status, 'pending')
    t.equal(res.body.last_seen, null)
    clock.advance(30)
    t.equal((await h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(inst.token))).status, 200)
    const registered = await h.request('GET', `/v1/instances/${inst.id}`, undefined, bearer(user.token))
    t.equal(registered.body.status, 'pending', 'registered, no handshake reported yet')
    t.equal(registered.body.last_seen, null)
    // What a gateway's handshake report records (the report path itself: test/control/rpc).
    await db('instances').where({ id: inst.id }).update({ last_handshake_at: new Date(clock.time), last_seen: new Date(clock.time) })
    const after = await h.request('GET', `/v1/instances/${inst.id}`, undefined, bearer(user.token))
    t.equal(after.body.status, 'connected')
    t.equal(after.body.last_seen, '2026-03-01T12:00:30Z')
    t.match(after.body.last_seen, ISO_SECONDS)
  })

  t.test('get/patch/delete/regenerate: another user\'s or a missing instance is 404', async t => {
    const h = await startInstanceApp(t, db)
    const owner = await newUser(h)
    const other = await newUser(h)
    const inst = await mustCreate(t, h, owner.token, 'private')
    const missing = 'inst_0000000000000000000000'
    for (const id of [inst.id, missing, 'not-an-id', 'inst_short']) {
      const who = bearer(other.token)
      assertError(t, await h.request('GET', `/v1/instances/${id}`, undefined, who), 'NOT_FOUND', `GET ${id}`)
      assertError(t, await h.request('PATCH', `/v1/instances/${id}`, { name: 'stolen' }, who), 'NOT_FOUND', `PATCH ${id}`)
      assertError(t, await h.request('DELETE', `/v1/instances/${id}`, undefined, who), 'NOT_FOUND', `DELETE ${id}`)
      assertError(t, await h.request('POST', `/v1/instances/${id}/regenerate-token`, undefined, who), 'NOT_FOUND', `regenerate ${id}`)
    }
    const foreign = await h.request('GET', `/v1/instances/${inst.id}`, undefined, bearer(other.token))
    const absent = await h.request('GET', `/v1/instances/${missing}`, undefined, bearer(other.token))
    t.same(foreign.body, absent.body, 'same answer as for an id that does not exist')
    const row = await db('instances').where({ id: inst.id }).first()
    t.equal(row.name, 'My Erugo Server', 'untouched')
    t.equal((await h.request('GET', '/v1/tunnel/status', undefined, bearer(inst.token))).status, 200, 'token untouched')
  })

  t.test('patch alerts.offline: the owner turns offline mails off and on; bad values refused', async t => {
    const h = await startInstanceApp(t, db)
    const user = await newUser(h)
    const inst = await mustCreate(t, h, user.token, 'alerting')
    t.same((await h.request('GET', `/v1/instances/${inst.id}`, undefined, bearer(user.token))).body.alerts, { offline: true }, 'on by default')
    const off = await h.request('PATCH', `/v1/instances/${inst.id}`, { alerts: { offline: false } }, bearer(user.token))
    t.equal(off.status, 200)
    t.same(off.body, { id: inst.id, name: 'My Erugo Server', subdomain: 'alerting', full_domain: `alerting.${BASE_DOMAIN}`, alerts: { offline: false } })
    t.same((await h.request('GET', `/v1/instances/${inst.id}`, undefined, bearer(user.token))).body.alerts, { offline: false })
    t.equal((await db('instances').where({ id: inst.id }).first()).alerts_offline, false, 'stored')
    const on = await h.request('PATCH', `/v1/instances/${inst.id}`, { alerts: { offline: true }, name: 'Renamed' }, bearer(user.token))
    t.same(on.body.alerts, { offline: true })
    t.equal(on.body.name, 'Renamed', 'with other changes in one request')
    assertError(t, await h.request('PATCH', `/v1/instances/${inst.id}`, { alerts: {} }, bearer(user.token)), 'VALIDATION_ERROR', 'empty alerts')
    assertError(t, await h.request('PATCH', `/v1/instances/${inst.id}`, { alerts: { offline: 'sometimes' } }, bearer(user.token)), 'VALIDATION_ERROR', 'not a boolean')
    assertError(t, await h.request('PATCH', `/v1/instances/${inst.id}`, { alerts: { sms: true } }, bearer(user.token)), 'VALIDATION_ERROR', 'unknown alert')
    const other = await newUser(h)
    assertError(t, await h.request('PATCH', `/v1/instances/${inst.id}`, { alerts: { offline: false } }, bearer(other.token)), 'NOT_FOUND', 'another user')
    t.equal((await db('instances').where({ id: inst.id }).first()).alerts_offline, true, 'untouched by the refused requests')
  })

  t.test('patch: rename, move subdomain, same rules, spec shape', async t => {
    const h = await startInstanceApp(t, db)
    const user = await newUser(h)
    const other = await newUser(h)
    const inst = await mustCreate(t, h, user.token, 'before')
    await mustCreate(t, h, other.token, 'occupied')
    const renamed = await h.request('PATCH', `/v1/instances/${inst.id}`, { name: ' Production Server ' }, bearer(user.token))
    t.equal(renamed.status, 200)
    t.same(renamed.body, { id: inst.id, name: 'Production Server', subdomain: 'before', full_domain: `before.${BASE_DOMAIN}`, alerts: { offline: true } })
    const moved = await h.request('PATCH', `/v1/instances/${inst.id}`, { subdomain: 'Files' }, bearer(user.token))
    t.same(moved.body, { id: inst.id, name: 'Production Server', subdomain: 'files', full_domain: `files.${BASE_DOMAIN}`, alerts: { offline: true } })
    assertError(t, await createInstance(h, (await newUser(h)).token, 'before'), 'SUBDOMAIN_TAKEN', 'the old subdomain stays its owner\'s for the quarantine')
    t.equal((await h.request('GET', '/v1/subdomains/check?subdomain=before', undefined, bearer(user.token))).body.available, true, 'available to its owner')
    const same = await h.request('PATCH', `/v1/instances/${inst.id}`, { subdomain: 'files', name: 'Same' }, bearer(user.token))
    t.equal(same.status, 200, 'keeping its own subdomain is fine')
    const taken = await h.request('PATCH', `/v1/instances/${inst.id}`, { subdomain: 'occupied' }, bearer(user.token))
    assertError(t, taken, 'SUBDOMAIN_TAKEN')
    t.equal(taken.body.error.details.subdomain, 'occupied')
    t.equal(taken.body.error.details.suggestions.length, 3)
    assertError(t, await h.request('PATCH', `/v1/instances/${inst.id}`, { subdomain: 'www' }, bearer(user.token)), 'VALIDATION_ERROR', 'reserved')
    assertError(t, await h.request('PATCH', `/v1/instances/${inst.id}`, { subdomain: 'bad_label' }, bearer(user.token)), 'VALIDATION_ERROR', 'invalid')
    assertError(t, await h.request('PATCH', `/v1/instances/${inst.id}`, {}, bearer(user.token)), 'VALIDATION_ERROR', 'empty body')
    assertError(t, await h.request('PATCH', `/v1/instances/${inst.id}`, { status: 'connected' }, bearer(user.token)), 'VALIDATION_ERROR', 'unknown field')
    const row = await db('instances').where({ id: inst.id }).first()
    t.equal(row.subdomain, 'files', 'failed changes left it alone')
    t.equal(row.name, 'Same')
  })

  t.test('delete: 204, gone, token and key revoked, address quarantined', async t => {
    const h = await startInstanceApp(t, db)
    const user = await newUser(h)
    const inst = await mustCreate(t, h, user.token, 'doomed')
    const key = newPublicKey()
    t.equal((await h.request('POST', '/v1/tunnel/register', { public_key: key }, bearer(inst.token))).status, 200)
    t.equal((await h.services.tunnel.listPeers()).filter(p => p.instanceId === inst.id).length, 1)
    const res = await h.request('DELETE', `/v1/instances/${inst.id}`, undefined, bearer(user.token))
    t.equal(res.status, 204)
    t.equal(res.raw, '')
    assertError(t, await h.request('GET', `/v1/instances/${inst.id}`, undefined, bearer(user.token)), 'NOT_FOUND')
    assertError(t, await h.request('DELETE', `/v1/instances/${inst.id}`, undefined, bearer(user.token)), 'NOT_FOUND', 'twice')
    assertError(t, await h.request('POST', '/v1/tunnel/heartbeat', { timestamp: '2026-03-01T12:00:00Z' }, bearer(inst.token)), 'UNAUTHORIZED', 'token revoked')
    t.same((await h.services.tunnel.listPeers()).filter(p => p.publicKey === key), [], 'key no longer a peer')
    const lease = await db('tunnel_ips').where({ address: parseIPv4Address(inst.tunnelIp) }).first()
    t.equal(lease.instance_id, null, 'address released')
    t.ok(lease.released_at instanceof Date, 'release time kept for the quarantine')
    const again = await mustCreate(t, h, user.token, 'doomed')
    t.not(again.tunnelIp, inst.tunnelIp, 'the freed address is not handed out at once')
    const other = await mustCreate(t, h, (await newUser(h)).token, 'reuse-key')
    t.equal((await h.request('POST', '/v1/tunnel/register', { public_key: key }, bearer(other.token))).status, 200, 'the deleted instance\'s key is free')
  })

  t.test('regenerate-token: new token works, old one is 401 at once, key dropped', async t => {
    const h = await startInstanceApp(t, db)
    const user = await newUser(h)
    const inst = await mustCreate(t, h, user.token, 'rotate')
    t.equal((await h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(inst.token))).status, 200)
    const versionBefore = await h.services.tunnel.configVersion()
    const res = await h.request('POST', `/v1/instances/${inst.id}/regenerate-token`, undefined, bearer(user.token))
    t.equal(res.status, 200)
    t.same(Object.keys(res.body), ['instance_token'])
    const fresh = res.body.instance_token as string
    t.not(fresh, inst.token)
    assertError(t, await h.request('GET', '/v1/tunnel/status', undefined, bearer(inst.token)), 'UNAUTHORIZED', 'old token')
    const status = await h.request('GET', '/v1/tunnel/status', undefined, bearer(fresh))
    t.equal(status.status, 200)
    t.equal(status.body.tunnel_status, 'pending', 'must register again')
    t.same((await h.services.tunnel.listPeers()).filter(p => p.instanceId === inst.id), [], 'old key removed from the gateway peers')
    t.ok(await h.services.tunnel.configVersion() > versionBefore, 'config version raised')
    const second = await h.request('POST', `/v1/instances/${inst.id}/regenerate-token`, undefined, bearer(user.token))
    assertError(t, await h.request('GET', '/v1/tunnel/status', undefined, bearer(fresh)), 'UNAUTHORIZED', 'previous token')
    t.equal((await h.request('GET', '/v1/tunnel/status', undefined, bearer(second.body.instance_token))).status, 200)
  })

  t.test('user endpoints refuse instance tokens', async t => {
    const h = await startInstanceApp(t, db)
    const user = await newUser(h)
    const inst = await mustCreate(t, h, user.token, 'wrongkind')
    assertError(t, await h.request('GET', '/v1/instances', undefined, bearer(inst.token)), 'UNAUTHORIZED', 'list')
    assertError(t, await h.request('GET', `/v1/instances/${inst.id}`, undefined, bearer(inst.token)), 'UNAUTHORIZED', 'get')
    assertError(t, await h.request('POST', `/v1/instances/${inst.id}/regenerate-token`, undefined, bearer(inst.token)), 'UNAUTHORIZED', 'regenerate')
    assertError(t, await h.request('GET', '/v1/subdomains/check?subdomain=abc', undefined, bearer(inst.token)), 'UNAUTHORIZED', 'check')
  })

  t.test('openapi lists the instance routes with their error codes', async t => {
    const h = await startInstanceApp(t, db)
    const doc = (await h.request('GET', '/v1/openapi.json')).body
    for (const path of ['/v1/instances', '/v1/instances/{instance_id}', '/v1/instances/{instance_id}/regenerate-token', '/v1/subdomains/check', '/v1/tunnel/register', '/v1/tunnel/heartbeat', '/v1/tunnel/disconnect', '/v1/tunnel/status']) {
      t.ok(doc.paths[path], path)
    }
    t.ok(doc.paths['/v1/instances'].post.responses['409'], 'create documents 409')
    t.ok(doc.paths['/v1/instances'].post.responses['403'], 'create documents 403')
    t.ok(doc.paths['/v1/tunnel/register'].post.responses['409'], 'register documents 409')
  })
})
