/** Spec "Instance Authenticated Endpoints": /v1/tunnel/*, the instance token, and the gateway peer list. */
import t from 'tap'
import { SignJWT } from 'jose'
import { enforcePlanLimits } from '../../../control/services/plan-enforcement.ts'
import type { Subscription } from '../../../control/services/plans.ts'
import { assertError, bearer, forEachDatabase, type TestApp } from '../harness.ts'
import { BASE_DOMAIN, Clock, GATEWAY_ENDPOINT, GATEWAY_KEY, mustCreate, newPublicKey, newUser, startInstanceApp } from './tunnel-fixtures.ts'

const HEARTBEAT = { timestamp: '2026-03-01T12:00:00Z' }

async function status (h: TestApp, token: string): Promise<string> {
  const res = await h.request('GET', '/v1/tunnel/status', undefined, bearer(token))
  if (res.status !== 200) throw new Error(`status: ${res.status} ${res.raw}`)
  return res.body.tunnel_status
}

/** Every instance endpoint with a body that would be valid. */
function calls (): Array<[string, string, unknown]> {
  return [
    ['POST', '/v1/tunnel/register', { public_key: newPublicKey() }],
    ['POST', '/v1/tunnel/heartbeat', HEARTBEAT],
    ['POST', '/v1/tunnel/disconnect', undefined],
    ['GET', '/v1/tunnel/status', undefined],
  ]
}

await forEachDatabase(t, async (t, db) => {
  t.test('register: 200 with the spec body', async t => {
    const h = await startInstanceApp(t, db)
    const user = await newUser(h)
    const inst = await mustCreate(t, h, user.token, 'myfiles')
    const key = newPublicKey()
    const res = await h.request('POST', '/v1/tunnel/register', { public_key: key }, bearer(inst.token))
    t.equal(res.status, 200)
    t.same(res.body, {
      status: 'registered',
      tunnel_config: {
        interface: { address: `${inst.tunnelIp}/32` },
        peer: { public_key: GATEWAY_KEY, endpoint: GATEWAY_ENDPOINT, allowed_ips: '10.100.0.1/32', persistent_keepalive: 25 },
      },
      domains: { subdomain: `myfiles.${BASE_DOMAIN}`, custom_domains: [] },
    })
    t.equal((await db('instances').where({ id: inst.id }).first()).public_key, key)
    t.equal(await status(h, inst.token), 'pending', 'registered: connected only once a gateway reports a handshake (test/control/rpc)')
    const again = await h.request('POST', '/v1/tunnel/register', { public_key: key }, bearer(inst.token))
    t.equal(again.status, 200, 'registering the same key again is fine')
  })

  t.test('register: bad keys -> 422 naming public_key', async t => {
    const h = await startInstanceApp(t, db)
    const inst = await mustCreate(t, h, (await newUser(h)).token, 'badkeys')
    const valid = newPublicKey()
    const nonCanonical = valid.slice(0, 42) + String.fromCharCode(valid.charCodeAt(42) + 1) + '=' // stray low bits
    const cases: Array<[string, unknown]> = [
      ['too short', valid.slice(0, 40) + '='],
      ['no padding', valid.slice(0, 43)],
      ['url-safe alphabet', valid.replace(/\+/g, '-').replace(/\//g, '_').replace(/^./, '-')],
      ['31 bytes', Buffer.alloc(31, 7).toString('base64')],
      ['33 bytes', Buffer.alloc(33, 7).toString('base64')],
      ['hex', 'ab'.repeat(32)],
      ['non-canonical last character', nonCanonical],
      ['all zero (low order)', Buffer.alloc(32).toString('base64')],
      // RFC 7748 / Bernstein's list of Curve25519 points of small order: 1 (order 1) is the simplest.
      ['point of order 1', Buffer.from([1, ...new Array(31).fill(0)]).toString('base64')],
      ['gateway key', GATEWAY_KEY],
      ['number', 42],
      ['empty', ''],
      ['whitespace', ` ${valid}`],
    ]
    for (const [label, key] of cases) {
      const res = await h.request('POST', '/v1/tunnel/register', { public_key: key }, bearer(inst.token))
      assertError(t, res, 'VALIDATION_ERROR', label)
      t.ok(Array.isArray(res.body.error.details.fields?.public_key), `${label}: details.fields.public_key`)
    }
    assertError(t, await h.request('POST', '/v1/tunnel/register', {}, bearer(inst.token)), 'VALIDATION_ERROR', 'missing')
    assertError(t, await h.request('POST', '/v1/tunnel/register', { public_key: valid, extra: 1 }, bearer(inst.token)), 'VALIDATION_ERROR', 'unknown field')
    t.equal((await db('instances').where({ id: inst.id }).first()).public_key, null, 'nothing registered')
  })

  t.test('register: a key belongs to one instance -> 409 KEY_IN_USE; re-register replaces', async t => {
    const h = await startInstanceApp(t, db)
    const a = await mustCreate(t, h, (await newUser(h)).token, 'key-a')
    const b = await mustCreate(t, h, (await newUser(h)).token, 'key-b')
    const key = newPublicKey()
    t.equal((await h.request('POST', '/v1/tunnel/register', { public_key: key }, bearer(a.token))).status, 200)
    const clash = await h.request('POST', '/v1/tunnel/register', { public_key: key }, bearer(b.token))
    assertError(t, clash, 'KEY_IN_USE')
    t.equal(clash.status, 409)
    t.equal((await db('instances').where({ id: b.id }).first()).public_key, null)

    const replacement = newPublicKey()
    const versionBefore = await h.services.tunnel.configVersion()
    t.equal((await h.request('POST', '/v1/tunnel/register', { public_key: replacement }, bearer(a.token))).status, 200)
    t.ok(await h.services.tunnel.configVersion() > versionBefore, 'a new key raises the config version')
    const peers = await h.services.tunnel.listPeers()
    t.same(peers.filter(p => p.instanceId === a.id).map(p => p.publicKey), [replacement], 'the old key is gone')
    t.equal((await h.request('POST', '/v1/tunnel/register', { public_key: key }, bearer(b.token))).status, 200, 'the replaced key is free again')
  })

  t.test('register: parallel claims of one key -> exactly one instance gets it', async t => {
    const h = await startInstanceApp(t, db)
    const instances = []
    for (let i = 0; i < 8; i++) instances.push(await mustCreate(t, h, (await newUser(h)).token, `race-key-${i}`))
    const key = newPublicKey()
    const results = await Promise.all(instances.map(async i => await h.request('POST', '/v1/tunnel/register', { public_key: key }, bearer(i.token))))
    t.equal(results.filter(r => r.status === 200).length, 1, 'one winner')
    for (const r of results.filter(r => r.status !== 200)) assertError(t, r, 'KEY_IN_USE')
    t.equal(Number((await db('instances').where({ public_key: key }).count('* as n').first())!.n), 1)
  })

  t.test('heartbeat, disconnect, status: shapes and status derivation', async t => {
    const clock = new Clock()
    const h = await startInstanceApp(t, db, { clock })
    const user = await newUser(h)
    const inst = await mustCreate(t, h, user.token, 'beats')
    const st = await h.request('GET', '/v1/tunnel/status', undefined, bearer(inst.token))
    t.same(st.body, {
      tunnel_status: 'pending',
      suspended_reason: null,
      domains: { subdomain: { domain: `beats.${BASE_DOMAIN}`, status: 'pending' }, custom_domains: [] },
    }, 'no key registered: no gateway routes the subdomain yet')
    const early = await h.request('POST', '/v1/tunnel/heartbeat', HEARTBEAT, bearer(inst.token))
    t.same(early.body, { status: 'ok', next_heartbeat_in: 60 })
    t.equal(await status(h, inst.token), 'pending', 'pending until a key is registered')

    await h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(inst.token))
    t.equal(await status(h, inst.token), 'pending', 'registered, no handshake seen yet')
    await h.request('POST', '/v1/tunnel/heartbeat', HEARTBEAT, bearer(inst.token))
    t.equal(await status(h, inst.token), 'pending', 'heartbeats alone do not make a tunnel connected')
    // What a gateway's handshake report records (the report path itself: test/control/rpc).
    const handshake = async (): Promise<void> => { await db('instances').where({ id: inst.id }).update({ last_handshake_at: new Date(clock.time) }) }
    await handshake()
    t.equal(await status(h, inst.token), 'connected', 'a fresh handshake connects')
    clock.advance(180)
    t.equal(await status(h, inst.token), 'connected', 'a handshake 180 s old still counts')
    clock.advance(1)
    t.equal(await status(h, inst.token), 'disconnected', 'older than 180 s: disconnected')
    const listed = (await h.request('GET', '/v1/instances', undefined, bearer(user.token))).body.instances[0]
    t.equal(listed.status, 'disconnected', 'the dashboard sees the same status')

    const beat = await h.request('POST', '/v1/tunnel/heartbeat', { timestamp: '1999-01-01T00:00:00Z' }, bearer(inst.token))
    t.equal(beat.status, 200, 'the container clock is not trusted, not refused')
    t.equal(await status(h, inst.token), 'disconnected', 'a heartbeat does not revive a silent tunnel')
    const detail = (await h.request('GET', `/v1/instances/${inst.id}`, undefined, bearer(user.token))).body
    t.equal(detail.last_seen, null, 'last_seen comes from the tunnel, not from heartbeats')
    await handshake()
    t.equal(await status(h, inst.token), 'connected')

    const bye = await h.request('POST', '/v1/tunnel/disconnect', undefined, bearer(inst.token))
    t.equal(bye.status, 200)
    t.same(bye.body, { status: 'disconnected' })
    t.equal(await status(h, inst.token), 'disconnected', 'a goodbye outweighs an older handshake')
    const byeWithBody = await h.request('POST', '/v1/tunnel/disconnect', {}, bearer(inst.token))
    t.equal(byeWithBody.status, 200, 'an empty JSON body is fine too')
    await h.request('POST', '/v1/tunnel/heartbeat', HEARTBEAT, bearer(inst.token))
    t.equal(await status(h, inst.token), 'disconnected', 'a heartbeat after a disconnect does not reconnect')
    clock.advance(1)
    await handshake()
    t.equal(await status(h, inst.token), 'connected', 'a handshake after the goodbye reconnects')

    for (const [label, body] of [['missing timestamp', {}], ['not a date', { timestamp: 'yesterday' }], ['unknown field', { ...HEARTBEAT, cpu: 3 }]] as const) {
      assertError(t, await h.request('POST', '/v1/tunnel/heartbeat', body, bearer(inst.token)), 'VALIDATION_ERROR', label)
    }
  })

  t.test('token attacks on every instance endpoint -> 401 in the spec shape', async t => {
    const h = await startInstanceApp(t, db)
    const user = await newUser(h)
    const victim = await mustCreate(t, h, user.token, 'attacked')
    const other = await mustCreate(t, h, (await newUser(h)).token, 'other')
    const deletedOwner = await newUser(h)
    const deleted = await mustCreate(t, h, deletedOwner.token, 'deleted')
    t.equal((await h.request('DELETE', `/v1/instances/${deleted.id}`, undefined, bearer(deletedOwner.token))).status, 204)

    const [head, payload, signature] = victim.token.split('.')
    const claims = JSON.parse(Buffer.from(payload, 'base64url').toString())
    const forgedPayload = Buffer.from(JSON.stringify({ ...claims, instance_id: other.id, sub: other.id })).toString('base64url')
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'it+jwt' })).toString('base64url')}.${payload}.`
    const wrongKey = await new SignJWT({ instance_id: victim.id, user_id: user.id })
      .setProtectedHeader({ alg: 'HS256', typ: 'it+jwt' }).setIssuer(h.config.tokens.issuer).setAudience('erugo-cloud:instance')
      .setSubject(victim.id).setJti(claims.jti).setIssuedAt().sign(new Uint8Array(32).fill(9))

    const headers: Array<[string, Record<string, string>]> = [
      ['no header', {}],
      ['empty header', { authorization: '' }],
      ['Basic scheme', { authorization: 'Basic dXNlcjpwYXNz' }],
      ['bearer without token', { authorization: 'Bearer ' }],
      ['garbage token', bearer('not.a.jwt')],
      ['binary garbage', { authorization: 'Bearer \u0001\u0002' }],
      ['huge token', bearer('a'.repeat(10_000))],
      ['access token as instance token', bearer(user.token)],
      ['instance claims signed with another key', bearer(wrongKey)],
      ['alg none', bearer(none)],
      ['payload swapped to another instance', bearer(`${head}.${forgedPayload}.${signature}`)],
      ['truncated signature', bearer(victim.token.slice(0, -4))],
      ['token of a deleted instance', bearer(deleted.token)],
    ]
    for (const [label, header] of headers) {
      for (const [method, url, body] of calls()) {
        const res = await h.request(method, url, body, header)
        assertError(t, res, 'UNAUTHORIZED', `${label}: ${method} ${url}`)
      }
    }
    t.equal(await status(h, victim.token), 'pending', 'the genuine token still works')
  })

  t.test('regenerate: the subdomain reads pending until the container registers a key again', async t => {
    const clock = new Clock()
    const h = await startInstanceApp(t, db, { clock })
    const user = await newUser(h)
    const inst = await mustCreate(t, h, user.token, 'regenstate')
    await h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(inst.token))
    await db('instances').where({ id: inst.id }).update({ last_handshake_at: new Date(clock.time) })
    const before = await h.request('GET', '/v1/tunnel/status', undefined, bearer(inst.token))
    t.same([before.body.tunnel_status, before.body.domains.subdomain.status], ['connected', 'active'], 'registered and seen: active')

    const regen = await h.request('POST', `/v1/instances/${inst.id}/regenerate-token`, undefined, bearer(user.token))
    t.equal(regen.status, 200)
    const fresh = regen.body.instance_token as string
    t.notOk((await h.services.tunnel.listPeers()).some(p => p.instanceId === inst.id), 'the old key is no longer a gateway peer')
    const after = await h.request('GET', '/v1/tunnel/status', undefined, bearer(fresh))
    t.same(after.body, {
      tunnel_status: 'pending',
      suspended_reason: null,
      domains: { subdomain: { domain: `regenstate.${BASE_DOMAIN}`, status: 'pending' }, custom_domains: [] },
    }, 'after the regeneration nothing routes the subdomain: pending, not active')
    const listed = (await h.request('GET', '/v1/instances', undefined, bearer(user.token))).body.instances[0]
    t.same([listed.status, listed.suspended_reason], ['pending', null], 'the dashboard agrees')

    await h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(fresh))
    const again = await h.request('GET', '/v1/tunnel/status', undefined, bearer(fresh))
    t.equal(again.body.domains.subdomain.status, 'active', 'a new registration routes it again')
  })

  t.test('suspended over the plan limit: list, get and tunnel/status say so, with the reason', async t => {
    const clock = new Clock()
    const plans = new Map<string, Subscription>()
    const h = await startInstanceApp(t, db, { clock, plans })
    const user = await newUser(h)
    plans.set(user.id, { plan: 'pro', status: 'active' })
    const kept = await mustCreate(t, h, user.token, 'keptinst')
    clock.advance(1) // created later: the newer one is the one over the limit (not a tie broken by id)
    const over = await mustCreate(t, h, user.token, 'overinst')
    for (const inst of [kept, over]) {
      await h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(inst.token))
      await db('instances').where({ id: inst.id }).update({ last_handshake_at: new Date(clock.time) })
    }
    // The plan ends: Free allows one instance, the newer one is suspended (services/plan-enforcement.ts).
    plans.set(user.id, { plan: 'free', status: 'canceled' })
    const result = await h.services.db.transaction(async trx => await enforcePlanLimits(trx, user.id, h.services.plans, clock.now()))
    t.same(result.suspendedInstances, [over.id])
    t.notOk((await h.services.tunnel.listPeers()).some(p => p.instanceId === over.id), 'not routed')

    const list = (await h.request('GET', '/v1/instances', undefined, bearer(user.token))).body.instances as Array<Record<string, unknown>>
    t.same(list.map(i => [i.subdomain, i.status, i.suspended_reason]), [['keptinst', 'connected', null], ['overinst', 'suspended', 'plan_limit']], 'GET /instances: suspended, not pending')
    const one = await h.request('GET', `/v1/instances/${over.id}`, undefined, bearer(user.token))
    t.same([one.body.status, one.body.suspended_reason], ['suspended', 'plan_limit'], 'GET /instances/{id}')
    const tunnelStatus = await h.request('GET', '/v1/tunnel/status', undefined, bearer(over.token))
    t.same(tunnelStatus.body, {
      tunnel_status: 'suspended',
      suspended_reason: 'plan_limit',
      domains: { subdomain: { domain: `overinst.${BASE_DOMAIN}`, status: 'suspended' }, custom_domains: [] },
    }, 'GET /tunnel/status: suspended, the subdomain not active')
    const keptStatus = await h.request('GET', '/v1/tunnel/status', undefined, bearer(kept.token))
    t.same([keptStatus.body.tunnel_status, keptStatus.body.suspended_reason, keptStatus.body.domains.subdomain.status], ['connected', null, 'active'], 'the instance within the limit is unaffected')

    plans.set(user.id, { plan: 'pro', status: 'active' })
    await h.services.db.transaction(async trx => await enforcePlanLimits(trx, user.id, h.services.plans, clock.now()))
    const restored = await h.request('GET', '/v1/tunnel/status', undefined, bearer(over.token))
    t.same([restored.body.tunnel_status, restored.body.suspended_reason, restored.body.domains.subdomain.status], ['connected', null, 'active'], 'restored: what the tunnel shows again')
  })

  t.test('regenerate: the old token fails on every endpoint the moment the call returns', async t => {
    const h = await startInstanceApp(t, db)
    const user = await newUser(h)
    const inst = await mustCreate(t, h, user.token, 'regen')
    const res = await h.request('POST', `/v1/instances/${inst.id}/regenerate-token`, undefined, bearer(user.token))
    t.equal(res.status, 200)
    for (const [method, url, body] of calls()) {
      assertError(t, await h.request(method, url, body, bearer(inst.token)), 'UNAUTHORIZED', `old token: ${method} ${url}`)
    }
    for (const [method, url, body] of calls()) {
      const ok = await h.request(method, url, body, bearer(res.body.instance_token))
      t.equal(ok.status, 200, `new token: ${method} ${url}`)
    }
  })

  t.test('a registration racing a regeneration never leaves the old token\'s key behind', async t => {
    const h = await startInstanceApp(t, db)
    const user = await newUser(h)
    for (let round = 0; round < 5; round++) {
      const inst = await mustCreate(t, h, user.token, `regen-race-${round}`)
      const key = newPublicKey()
      const [reg, regen] = await Promise.all([
        h.request('POST', '/v1/tunnel/register', { public_key: key }, bearer(inst.token)),
        h.request('POST', `/v1/instances/${inst.id}/regenerate-token`, undefined, bearer(user.token)),
      ])
      t.equal(regen.status, 200)
      t.ok(reg.status === 200 || reg.status === 401, `register answered ${reg.status}`)
      const row = await db('instances').where({ id: inst.id }).first()
      t.equal(row.public_key, null, 'no key registered with the old token survives the regeneration')
      await h.request('DELETE', `/v1/instances/${inst.id}`, undefined, bearer(user.token))
    }
  })

  t.test('parallel heartbeats (batched into shared statements) are each answered for their own token', async t => {
    const h = await startInstanceApp(t, db)
    const current: string[] = []
    const revoked: string[] = []
    for (let i = 0; i < 12; i++) {
      const user = await newUser(h)
      const inst = await mustCreate(t, h, user.token, `batch-${i}`)
      if (i % 3 === 0) {
        const fresh = await h.request('POST', `/v1/instances/${inst.id}/regenerate-token`, undefined, bearer(user.token))
        revoked.push(inst.token)
        current.push(fresh.body.instance_token)
      } else {
        current.push(inst.token)
      }
    }
    const calls = [...current, ...current, ...revoked, ...revoked].map(token => ({ token, ok: current.includes(token) }))
    const results = await Promise.all(calls.map(async c => ({ ...c, res: await h.request('POST', '/v1/tunnel/heartbeat', HEARTBEAT, bearer(c.token)) })))
    for (const r of results) {
      if (r.ok) t.equal(r.res.status, 200, 'current token: 200')
      else assertError(t, r.res, 'UNAUTHORIZED', 'revoked token')
    }
    t.equal(results.filter(r => r.res.status === 200).length, current.length * 2)
  })

  t.test('rate limit per instance token -> 429 RATE_LIMITED with Retry-After', async t => {
    const h = await startInstanceApp(t, db, { env: { CC_RATE_PER_TOKEN: '3/1' } })
    const a = await mustCreate(t, h, (await newUser(h)).token, 'limited-a')
    const b = await mustCreate(t, h, (await newUser(h)).token, 'limited-b')
    for (let i = 0; i < 3; i++) t.equal((await h.request('POST', '/v1/tunnel/heartbeat', HEARTBEAT, bearer(a.token))).status, 200)
    const limited = await h.request('POST', '/v1/tunnel/heartbeat', HEARTBEAT, bearer(a.token))
    assertError(t, limited, 'RATE_LIMITED')
    t.ok(Number(limited.headers['retry-after']) >= 1, 'Retry-After')
    t.equal((await h.request('POST', '/v1/tunnel/heartbeat', HEARTBEAT, bearer(b.token))).status, 200, 'another instance has its own bucket')
  })

  t.test('gateway peer list and config version', async t => {
    const h = await startInstanceApp(t, db, { plans: { plan: 'pro', status: 'active' } })
    const { tunnel } = h.services
    const user = await newUser(h)
    let version = await tunnel.configVersion()
    const expectBump = async (label: string): Promise<void> => {
      const next = await tunnel.configVersion()
      t.ok(next > version, `${label} raises the version (${version} -> ${next})`)
      version = next
    }
    const inst = await mustCreate(t, h, user.token, 'peer-one')
    await expectBump('create')
    t.same((await tunnel.listPeers()).filter(p => p.instanceId === inst.id), [], 'no key, no peer')
    const key = newPublicKey()
    await h.request('POST', '/v1/tunnel/register', { public_key: key }, bearer(inst.token))
    await expectBump('register')
    const peer = (await tunnel.listPeers()).find(p => p.instanceId === inst.id)
    t.same(peer, { instanceId: inst.id, publicKey: key, tunnelIp: inst.tunnelIp, hostnames: [`peer-one.${BASE_DOMAIN}`], port: 80 })
    await h.request('POST', '/v1/tunnel/heartbeat', HEARTBEAT, bearer(inst.token))
    t.equal(await tunnel.configVersion(), version, 'heartbeats do not change the peer set')
    await h.request('PATCH', `/v1/instances/${inst.id}`, { name: 'renamed' }, bearer(user.token))
    t.equal(await tunnel.configVersion(), version, 'a rename does not either')
    await h.request('PATCH', `/v1/instances/${inst.id}`, { subdomain: 'peer-moved' }, bearer(user.token))
    await expectBump('subdomain change')
    t.same((await tunnel.listPeers()).find(p => p.instanceId === inst.id)?.hostnames, [`peer-moved.${BASE_DOMAIN}`])
    const snapshot = await tunnel.configSnapshot()
    t.equal(snapshot.version, version)
    t.ok(snapshot.peers.some(p => p.instanceId === inst.id))
    const regen = await h.request('POST', `/v1/instances/${inst.id}/regenerate-token`, undefined, bearer(user.token))
    await expectBump('regenerate-token')
    await h.request('POST', '/v1/tunnel/register', { public_key: key }, bearer(regen.body.instance_token))
    await expectBump('register again')
    await h.request('DELETE', `/v1/instances/${inst.id}`, undefined, bearer(user.token))
    await expectBump('delete')
    t.same((await tunnel.listPeers()).filter(p => p.instanceId === inst.id), [])
  })
})
