/**
 * Spec "Custom Domain Endpoints" end to end, with DNS answered by real servers started here
 * (pebble-challtestsrv; TinyDns for NXDOMAIN and timeouts): add with instructions, the refusal
 * table, plan limits, one owner per domain, verify (all failure reasons, CNAME and apex paths),
 * routing to gateways and containers, ssl_status from gateway certificate reports, delete, and
 * the periodic re-check that stops serving a domain whose record is gone past the grace period.
 */
import t from 'tap'
import { recordCertificateReports } from '../../../control/rpc/reports.ts'
import type { Subscription } from '../../../control/services/plans.ts'
import { ChallTestSrv, TinyDns } from '../../helpers/dns-server.ts'
import { assertError, bearer, forEachDatabase, type TestApp } from '../harness.ts'
import { BASE_DOMAIN, Clock, mustCreate, newPublicKey, newUser, startInstanceApp } from './tunnel-fixtures.ts'

type Json = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any

const GATEWAY_V4 = '203.0.113.10'
const GATEWAY_V6 = '2001:db8::10'
const PRO: Subscription = { plan: 'pro', status: 'active' }
const BUSINESS: Subscription = { plan: 'business', status: 'active' }
let counter = 0

/** A domain name nobody else in this run uses. */
function fresh (label = 'share'): string {
  return `${label}.d${process.pid}x${++counter}.example.com`
}

interface DomainApp {
  h: TestApp
  clock: Clock
  plans: Map<string, Subscription>
  /** A verified user on `plan` with one instance (its key registered). */
  owner (plan?: Subscription): Promise<{ user: { id: string, token: string }, instance: { id: string, token: string } }>
  domains (userToken: string, instanceId: string): Promise<Json[]>
}

async function domainApp (t: Parameters<typeof startInstanceApp>[0], db: Parameters<typeof startInstanceApp>[1], resolver: string, env: Record<string, string> = {}): Promise<DomainApp> {
  const clock = new Clock()
  const plans = new Map<string, Subscription>()
  const h = await startInstanceApp(t, db, {
    clock,
    plans,
    // 1.5 s: the local DNS servers answer in milliseconds, but not always on a machine at full load;
    // the timeout cases wait for it (TinyDns never answers them).
    env: { CC_DNS_RESOLVERS: resolver, CC_DNS_GATEWAY_ADDRESSES: `${GATEWAY_V4},${GATEWAY_V6}`, CC_DNS_TIMEOUT_MS: '1500', CC_DNS_TRIES: '1', ...env },
  })
  return {
    h,
    clock,
    plans,
    async owner (plan = PRO) {
      const user = await newUser(h, 'dom')
      plans.set(user.id, plan)
      const inst = await mustCreate(t, h, user.token, `dom${process.pid}x${++counter}`)
      const reg = await h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(inst.token))
      if (reg.status !== 200) t.fail(`register: ${reg.status} ${reg.raw}`)
      return { user, instance: { id: inst.id, token: inst.token } }
    },
    async domains (userToken, instanceId) {
      return (await h.request('GET', `/v1/instances/${instanceId}/domains`, undefined, bearer(userToken))).body.domains
    },
  }
}

async function hostnamesOf (h: TestApp, instanceId: string): Promise<string[]> {
  return (await h.services.tunnel.listPeers()).find(p => p.instanceId === instanceId)?.hostnames ?? []
}

t.test('custom domains', async t => {
  const dns = await ChallTestSrv.start(t)
  const tiny = await TinyDns.start(t)

  await forEachDatabase(t, async (t, db) => {
    t.test('add: 201 with CNAME instructions relative to the user\'s zone', async t => {
      const a = await domainApp(t, db, dns.server)
      const { user, instance } = await a.owner()
      const name = fresh()
      const res = await a.h.request('POST', `/v1/instances/${instance.id}/domains`, { domain: `${name.toUpperCase()}.` }, bearer(user.token))
      t.equal(res.status, 201)
      const target = `${instance.id}.tunnel.${BASE_DOMAIN}`
      t.same(res.body, {
        domain: name,
        status: 'pending_verification',
        verification: {
          type: 'CNAME',
          name: name.slice(0, -'.example.com'.length),
          value: target,
          instructions: `Add this CNAME record to your DNS provider: ${name} CNAME ${target}. Then verify the domain.`,
          records: [{ type: 'CNAME', name: name.slice(0, -'.example.com'.length), value: target }],
        },
      }, 'normalised (lower case, no trailing dot); name relative to example.com')
      const list = await a.domains(user.token, instance.id)
      t.same(list.map(d => [d.domain, d.status, d.ssl_status, d.verified_at, d.error]), [[name, 'pending_verification', 'none', null, null]])
      t.same(await hostnamesOf(a.h, instance.id), [(await a.h.request('GET', `/v1/instances/${instance.id}`, undefined, bearer(user.token))).body.full_domain], 'not routed before verification')
    })

    t.test('add an apex domain: TXT ownership + A/AAAA instructions', async t => {
      const a = await domainApp(t, db, dns.server)
      const { user, instance } = await a.owner()
      const apex = `apex${process.pid}x${++counter}.com`
      const res = await a.h.request('POST', `/v1/instances/${instance.id}/domains`, { domain: apex }, bearer(user.token))
      t.equal(res.status, 201)
      const v = res.body.verification
      t.equal(v.type, 'TXT')
      t.equal(v.name, '_erugo-verify')
      t.match(v.value, /^erugo-verify=[0-9A-Za-z]{32}$/)
      t.same(v.records, [{ type: 'TXT', name: '_erugo-verify', value: v.value }, { type: 'A', name: '@', value: GATEWAY_V4 }, { type: 'AAAA', name: '@', value: GATEWAY_V6 }])
      t.match(v.instructions, /apex of your DNS zone, which cannot hold a CNAME record/)
    })

    t.test('malformed domains -> 422 VALIDATION_ERROR naming the field', async t => {
      const a = await domainApp(t, db, dns.server)
      const { user, instance } = await a.owner(BUSINESS)
      const bad = [
        '*.x.com', '1.2.3.4', '[2001:db8::1]', 'a..b', `${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(58)}.com`,
        `${'a'.repeat(64)}.example.com`, 'pаypal.com', BASE_DOMAIN, `myfiles.${BASE_DOMAIN}`, 'co.uk', 'localhost', 'a_b.example.com', 'http://x.example.com/',
        'nas.local', 'files.corp.internal', 'share.example', 'x.home.arpa', 'files.alt', 'other.test', 'x.onion', 'x.invalid', 'app.localhost',
      ]
      for (const domain of bad) {
        const res = await a.h.request('POST', `/v1/instances/${instance.id}/domains`, { domain }, bearer(user.token))
        assertError(t, res, 'VALIDATION_ERROR', domain.slice(0, 30))
        t.ok(Array.isArray(res.body.error.details.fields?.domain), `${domain.slice(0, 30)}: details.fields.domain`)
      }
      for (const body of [{}, { domain: 42 }, { domain: 'x'.repeat(2000) }, { domain: 'ok.example.com', extra: 1 }]) {
        assertError(t, await a.h.request('POST', `/v1/instances/${instance.id}/domains`, body, bearer(user.token)), 'VALIDATION_ERROR', JSON.stringify(body).slice(0, 30))
      }
      t.same(await a.domains(user.token, instance.id), [], 'nothing added')
    })

    t.test('plan limits: Free none (402), Pro 1, Business 5 per instance (403)', async t => {
      const a = await domainApp(t, db, dns.server)
      const free = await a.owner({ plan: 'free', status: 'none' })
      const r = await a.h.request('POST', `/v1/instances/${free.instance.id}/domains`, { domain: fresh() }, bearer(free.user.token))
      assertError(t, r, 'SUBSCRIPTION_REQUIRED', 'Free')

      const pro = await a.owner(PRO)
      t.equal((await a.h.request('POST', `/v1/instances/${pro.instance.id}/domains`, { domain: fresh() }, bearer(pro.user.token))).status, 201)
      const over = await a.h.request('POST', `/v1/instances/${pro.instance.id}/domains`, { domain: fresh() }, bearer(pro.user.token))
      assertError(t, over, 'LIMIT_EXCEEDED', 'Pro second domain')
      t.same(over.body.error.details, { resource: 'custom_domains', limit: 1, plan: 'pro' })

      const biz = await a.owner(BUSINESS)
      for (let i = 0; i < 5; i++) t.equal((await a.h.request('POST', `/v1/instances/${biz.instance.id}/domains`, { domain: fresh() }, bearer(biz.user.token))).status, 201, `business ${i + 1}`)
      assertError(t, await a.h.request('POST', `/v1/instances/${biz.instance.id}/domains`, { domain: fresh() }, bearer(biz.user.token)), 'LIMIT_EXCEEDED', 'Business sixth')
      const racing = await Promise.all(Array.from({ length: 4 }, async () => await a.h.request('POST', `/v1/instances/${pro.instance.id}/domains`, { domain: fresh() }, bearer(pro.user.token))))
      t.ok(racing.every(res => res.status === 403), 'concurrent adds over the limit all refused')
    })

    t.test('a domain belongs to one instance across all users -> 409', async t => {
      const a = await domainApp(t, db, dns.server)
      const first = await a.owner(BUSINESS)
      const second = await a.owner(BUSINESS)
      const name = fresh()
      t.equal((await a.h.request('POST', `/v1/instances/${first.instance.id}/domains`, { domain: name }, bearer(first.user.token))).status, 201)
      const again = await a.h.request('POST', `/v1/instances/${first.instance.id}/domains`, { domain: name }, bearer(first.user.token))
      assertError(t, again, 'DOMAIN_ALREADY_EXISTS', 'its holder again')
      t.same(again.body.error.details, { domain: name })
      for (const domain of [name, `${name.toUpperCase()}.`]) {
        const res = await a.h.request('POST', `/v1/instances/${second.instance.id}/domains`, { domain }, bearer(second.user.token))
        assertError(t, res, 'DOMAIN_ALREADY_EXISTS', domain)
        // Pending elsewhere: the claimant learns how to take it over, with its own instance's record.
        t.same(Object.keys(res.body.error.details).sort(), ['domain', 'verification'])
        t.equal(res.body.error.details.domain, name)
        t.match(res.body.error.details.verification, { type: 'CNAME', value: `${second.instance.id}.tunnel.${BASE_DOMAIN}` })
        for (const secret of [first.user.id, first.instance.id]) t.notMatch(res.raw, secret, 'nothing about the holder')
      }
      const race = fresh()
      const both = await Promise.all([first, second].map(async who => await a.h.request('POST', `/v1/instances/${who.instance.id}/domains`, { domain: race }, bearer(who.user.token))))
      t.same(both.map(r => r.status).sort(), [201, 409], 'concurrent adds of one name: one wins')
    })

    t.test('a pending claim is taken over by the account whose instance the CNAME names', async t => {
      const a = await domainApp(t, db, dns.server)
      const squatter = await a.owner()
      const owner = await a.owner()
      const name = fresh()
      t.equal((await a.h.request('POST', `/v1/instances/${squatter.instance.id}/domains`, { domain: name }, bearer(squatter.user.token))).status, 201, 'claimed first, never verified')

      const refused = await a.h.request('POST', `/v1/instances/${owner.instance.id}/domains`, { domain: name }, bearer(owner.user.token))
      assertError(t, refused, 'DOMAIN_ALREADY_EXISTS', 'before the DNS record')
      t.notMatch(refused.raw, squatter.user.id)
      t.notMatch(refused.raw, squatter.instance.id, 'the 409 does not say whose claim it is')
      const target = `${owner.instance.id}.tunnel.${BASE_DOMAIN}`
      t.equal(refused.body.error.details.verification.value, target)

      await dns.setCname(name, `${squatter.instance.id}.tunnel.${BASE_DOMAIN}`)
      assertError(t, await a.h.request('POST', `/v1/instances/${owner.instance.id}/domains`, { domain: name }, bearer(owner.user.token)), 'DOMAIN_ALREADY_EXISTS', 'the DNS names the holder')

      await dns.setCname(name, target)
      const taken = await a.h.request('POST', `/v1/instances/${owner.instance.id}/domains`, { domain: name }, bearer(owner.user.token))
      t.equal(taken.status, 201, 'the DNS names the claimant\'s instance: taken over')
      t.same(await a.domains(squatter.user.token, squatter.instance.id), [], 'gone from the squatter\'s instance')
      const verified = await a.h.request('POST', `/v1/instances/${owner.instance.id}/domains/${name}/verify`, undefined, bearer(owner.user.token))
      t.same(verified.body, { domain: name, status: 'verified', ssl_status: 'provisioning' })
      t.ok((await hostnamesOf(a.h, owner.instance.id)).includes(name), 'routed to the owner')

      // A verified domain is not taken over by a second claim, whatever it says.
      const third = await a.owner()
      const late = await a.h.request('POST', `/v1/instances/${third.instance.id}/domains`, { domain: name }, bearer(third.user.token))
      assertError(t, late, 'DOMAIN_ALREADY_EXISTS', 'verified')
      t.same(late.body.error.details, { domain: name })
      await dns.clearCname(name)
    })

    t.test('an apex pending claim is taken over with the claimant\'s TXT takeover token', async t => {
      const a = await domainApp(t, db, dns.server)
      const squatter = await a.owner()
      const owner = await a.owner()
      const apex = `apext${process.pid}x${++counter}.com`
      t.equal((await a.h.request('POST', `/v1/instances/${squatter.instance.id}/domains`, { domain: apex }, bearer(squatter.user.token))).status, 201)
      const refused = await a.h.request('POST', `/v1/instances/${owner.instance.id}/domains`, { domain: apex }, bearer(owner.user.token))
      assertError(t, refused, 'DOMAIN_ALREADY_EXISTS')
      const record = refused.body.error.details.verification
      t.match(record, { type: 'TXT', name: '_erugo-verify', value: /^erugo-verify=[0-9A-Za-z]{32}$/ })
      const asked = await a.h.request('POST', `/v1/instances/${owner.instance.id}/domains`, { domain: apex }, bearer(owner.user.token))
      t.equal(asked.body.error.details.verification.value, record.value, 'the same token each time')
      const otherClaimant = await a.owner()
      const theirs = await a.h.request('POST', `/v1/instances/${otherClaimant.instance.id}/domains`, { domain: apex }, bearer(otherClaimant.user.token))
      t.not(theirs.body.error.details.verification.value, record.value, 'each instance its own token')

      await dns.setTxt(`_erugo-verify.${apex}`, record.value)
      await dns.addA(apex, [GATEWAY_V4])
      assertError(t, await a.h.request('POST', `/v1/instances/${otherClaimant.instance.id}/domains`, { domain: apex }, bearer(otherClaimant.user.token)), 'DOMAIN_ALREADY_EXISTS', 'another token does not count')
      const taken = await a.h.request('POST', `/v1/instances/${owner.instance.id}/domains`, { domain: apex }, bearer(owner.user.token))
      t.equal(taken.status, 201, 'taken over')
      t.equal(taken.body.verification.value, record.value, 'the record already in place is the one to keep')
      t.same(await a.domains(squatter.user.token, squatter.instance.id), [])
      const verified = await a.h.request('POST', `/v1/instances/${owner.instance.id}/domains/${apex}/verify`, undefined, bearer(owner.user.token))
      t.equal(verified.body.status, 'verified')
      await dns.clearA(apex)
    })

    t.test('a pending domain expires after CC_DOMAIN_PENDING_TTL: free for anyone, dropped by the job', async t => {
      const a = await domainApp(t, db, dns.server, { CC_DOMAIN_PENDING_TTL: '3600', CC_ACCESS_TOKEN_TTL: '86400' })
      const squatter = await a.owner(BUSINESS)
      const other = await a.owner()
      const name = fresh()
      const idle = fresh()
      for (const domain of [name, idle]) t.equal((await a.h.request('POST', `/v1/instances/${squatter.instance.id}/domains`, { domain }, bearer(squatter.user.token))).status, 201)
      a.clock.advance(3599)
      assertError(t, await a.h.request('POST', `/v1/instances/${other.instance.id}/domains`, { domain: name }, bearer(other.user.token)), 'DOMAIN_ALREADY_EXISTS', 'before the end')
      await a.h.services.domains.expirePending()
      t.same((await a.domains(squatter.user.token, squatter.instance.id)).map(d => d.domain).sort(), [name, idle].sort(), 'the job leaves claims younger than the TTL')
      a.clock.advance(1)
      t.equal((await a.h.request('POST', `/v1/instances/${other.instance.id}/domains`, { domain: name }, bearer(other.user.token))).status, 201, 'expired: anyone may add it')
      t.ok(await a.h.services.domains.expirePending() >= 1, 'the job drops the other expired claim (the database is shared with other tests)')
      t.same(await a.domains(squatter.user.token, squatter.instance.id), [], 'both gone from the squatter')
    })

    t.test('another user\'s instance or domain: 404 everywhere', async t => {
      const a = await domainApp(t, db, dns.server)
      const owner = await a.owner()
      const stranger = await a.owner()
      const name = fresh()
      await a.h.request('POST', `/v1/instances/${owner.instance.id}/domains`, { domain: name }, bearer(owner.user.token))
      const base = `/v1/instances/${owner.instance.id}/domains`
      for (const [method, url, body] of [['GET', base], ['POST', base, { domain: fresh() }], ['POST', `${base}/${name}/verify`], ['DELETE', `${base}/${name}`]] as const) {
        assertError(t, await a.h.request(method, url, body, bearer(stranger.user.token)), 'NOT_FOUND', `${method} ${url.replace(owner.instance.id, 'ID')}`)
      }
      const own = `/v1/instances/${owner.instance.id}/domains`
      assertError(t, await a.h.request('POST', `${own}/unknown.example.com/verify`, undefined, bearer(owner.user.token)), 'NOT_FOUND', 'unknown domain')
      assertError(t, await a.h.request('DELETE', `${own}/*.example.com`, undefined, bearer(owner.user.token)), 'NOT_FOUND', 'a name that cannot exist')
      assertError(t, await a.h.request('GET', '/v1/instances/inst_nope/domains', undefined, bearer(owner.user.token)), 'NOT_FOUND', 'bad instance id')
    })

    t.test('verify: pending with the reason, then verified -> routed, ssl provisioning -> active', async t => {
      const a = await domainApp(t, db, dns.server)
      const { user, instance } = await a.owner()
      const name = fresh()
      const target = `${instance.id}.tunnel.${BASE_DOMAIN}`
      await a.h.request('POST', `/v1/instances/${instance.id}/domains`, { domain: name }, bearer(user.token))
      const verify = async (): Promise<Json> => (await a.h.request('POST', `/v1/instances/${instance.id}/domains/${name}/verify`, undefined, bearer(user.token))).body

      t.same(await verify(), { domain: name, status: 'pending_verification', error: 'CNAME record not found' })
      await dns.setCname(name, `inst_someoneelse.tunnel.${BASE_DOMAIN}`)
      t.same(await verify(), { domain: name, status: 'pending_verification', error: `CNAME record points to inst_someoneelse.tunnel.${BASE_DOMAIN}, expected ${target}` })
      t.match((await a.domains(user.token, instance.id))[0], { status: 'pending_verification', error: /points to inst_someoneelse/ })

      const version = await a.h.services.tunnel.configVersion()
      await dns.setCname(name, target)
      t.same(await verify(), { domain: name, status: 'verified', ssl_status: 'provisioning' })
      t.ok(await a.h.services.tunnel.configVersion() > version, 'gateways told')
      t.ok((await hostnamesOf(a.h, instance.id)).includes(name), 'in the peer\'s hostnames')
      const listed = (await a.domains(user.token, instance.id))[0]
      t.match(listed, { domain: name, status: 'verified', ssl_status: 'provisioning', error: null })
      t.match(listed.verified_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
      const summary = (await a.h.request('GET', `/v1/instances/${instance.id}`, undefined, bearer(user.token))).body
      t.equal(summary.custom_domain, name, 'instance shows its custom domain')
      const reg = await a.h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(instance.token))
      t.same(reg.body.domains.custom_domains, [name], 'tunnel/register lists it')
      const status = await a.h.request('GET', '/v1/tunnel/status', undefined, bearer(instance.token))
      t.same(status.body.domains.custom_domains, [{ domain: name, status: 'active', ssl_status: 'provisioning' }])

      await recordCertificateReports(db, 'gw-test', [{ hostname: name, state: 'pending' }], a.clock.now())
      t.equal((await a.domains(user.token, instance.id))[0].ssl_status, 'provisioning', 'issuance pending')
      await recordCertificateReports(db, 'gw-test', [{ hostname: name, state: 'active', notAfter: new Date(a.clock.time + 90 * 86400_000).toISOString() }], a.clock.now())
      t.equal((await a.domains(user.token, instance.id))[0].ssl_status, 'active', 'gateway reported a certificate')
      t.same((await a.h.request('GET', '/v1/tunnel/status', undefined, bearer(instance.token))).body.domains.custom_domains, [{ domain: name, status: 'active', ssl_status: 'active' }])
      t.same(await verify(), { domain: name, status: 'verified', ssl_status: 'active' }, 'verify again: no change')
      await recordCertificateReports(db, 'gw-test', [{ hostname: name, state: 'failing', lastError: 'rate limited' }], a.clock.now())
      t.equal((await a.domains(user.token, instance.id))[0].ssl_status, 'failed')
    })

    t.test('verify an apex domain through TXT + A/AAAA', async t => {
      const a = await domainApp(t, db, dns.server)
      const { user, instance } = await a.owner()
      const apex = `apexv${process.pid}x${++counter}.com`
      const added = await a.h.request('POST', `/v1/instances/${instance.id}/domains`, { domain: apex }, bearer(user.token))
      const verify = async (): Promise<Json> => (await a.h.request('POST', `/v1/instances/${instance.id}/domains/${apex}/verify`, undefined, bearer(user.token))).body
      t.same(await verify(), { domain: apex, status: 'pending_verification', error: `TXT record _erugo-verify.${apex} not found` })
      await dns.setTxt(`_erugo-verify.${apex}`, added.body.verification.value)
      t.same(await verify(), { domain: apex, status: 'pending_verification', error: `No A or AAAA record found for ${apex}` })
      await dns.addA(apex, ['198.51.100.1'])
      t.match(await verify(), { status: 'pending_verification', error: /198\.51\.100\.1 is not a gateway address/ })
      await dns.clearA(apex)
      await dns.addA(apex, [GATEWAY_V4])
      await dns.addAaaa(apex, [GATEWAY_V6])
      t.same(await verify(), { domain: apex, status: 'verified', ssl_status: 'provisioning' })
      t.ok((await hostnamesOf(a.h, instance.id)).includes(apex))
    })

    t.test('verify: NXDOMAIN and DNS timeout answered in the pending shape', async t => {
      const a = await domainApp(t, db, tiny.server)
      const { user, instance } = await a.owner()
      const name = fresh()
      await a.h.request('POST', `/v1/instances/${instance.id}/domains`, { domain: name }, bearer(user.token))
      const verify = async (): Promise<Json> => (await a.h.request('POST', `/v1/instances/${instance.id}/domains/${name}/verify`, undefined, bearer(user.token))).body
      tiny.mode = 'answer'
      t.same(await verify(), { domain: name, status: 'pending_verification', error: `${name} does not exist (NXDOMAIN)` })
      tiny.mode = 'silent'
      t.same(await verify(), { domain: name, status: 'pending_verification', error: `DNS lookup of ${name} timed out` })
      tiny.mode = 'answer'
      tiny.set(name, { CNAME: `${instance.id}.tunnel.${BASE_DOMAIN}` })
      t.same(await verify(), { domain: name, status: 'verified', ssl_status: 'provisioning' })
    })

    t.test('delete: 204, no longer routed, the name is free again', async t => {
      const a = await domainApp(t, db, dns.server)
      const first = await a.owner()
      const second = await a.owner()
      const name = fresh()
      await a.h.request('POST', `/v1/instances/${first.instance.id}/domains`, { domain: name }, bearer(first.user.token))
      await dns.setCname(name, `${first.instance.id}.tunnel.${BASE_DOMAIN}`)
      await a.h.request('POST', `/v1/instances/${first.instance.id}/domains/${name}/verify`, undefined, bearer(first.user.token))
      t.ok((await hostnamesOf(a.h, first.instance.id)).includes(name))
      const version = await a.h.services.tunnel.configVersion()
      const del = await a.h.request('DELETE', `/v1/instances/${first.instance.id}/domains/${name.toUpperCase()}`, undefined, bearer(first.user.token))
      t.equal(del.status, 204)
      t.equal(del.raw, '')
      t.notOk((await hostnamesOf(a.h, first.instance.id)).includes(name), 'gone from the peer list')
      t.ok(await a.h.services.tunnel.configVersion() > version)
      t.same(await a.domains(first.user.token, first.instance.id), [])
      t.equal((await a.h.request('POST', `/v1/instances/${second.instance.id}/domains`, { domain: name }, bearer(second.user.token))).status, 201, 'another user may add it now')
      assertError(t, await a.h.request('DELETE', `/v1/instances/${first.instance.id}/domains/${name}`, undefined, bearer(first.user.token)), 'NOT_FOUND', 'twice')
    })

    t.test('re-check: a record that disappears stops being served after the grace period; the owner is mailed', async t => {
      const a = await domainApp(t, db, dns.server, { CC_DOMAIN_RECHECK_INTERVAL: '3600', CC_DOMAIN_LAPSE_GRACE: String(48 * 3600) })
      const { user, instance } = await a.owner()
      const name = fresh()
      const target = `${instance.id}.tunnel.${BASE_DOMAIN}`
      await a.h.request('POST', `/v1/instances/${instance.id}/domains`, { domain: name }, bearer(user.token))
      await dns.setCname(name, target)
      await a.h.request('POST', `/v1/instances/${instance.id}/domains/${name}/verify`, undefined, bearer(user.token))
      const email = (await db('users').where({ id: user.id }).first('email') as { email: string }).email
      const mails = async (): Promise<string[]> => { await a.h.services.mailer.drain(); return a.h.mail.to(email).map(m => m.subject) }
      const recheck = async (): Promise<void> => { await a.h.services.domains.recheckDue() }

      await recheck()
      t.ok((await hostnamesOf(a.h, instance.id)).includes(name), 'checked too recently: nothing happens')
      a.clock.advance(3601)
      await recheck()
      t.same((await db('custom_domains').where({ domain: name }).first('failing_since') as Json).failing_since, null, 'record present: fine')

      await dns.clearCname(name)
      a.clock.advance(3601)
      await recheck()
      t.ok((await hostnamesOf(a.h, instance.id)).includes(name), 'first failure: still served (grace)')
      t.same((await mails()).filter(s => s.includes(name)), [`Check the DNS record of ${name}`], 'owner warned once')
      a.clock.advance(24 * 3600)
      await recheck()
      t.ok((await hostnamesOf(a.h, instance.id)).includes(name), 'within grace: still served')
      t.equal((await mails()).filter(s => s.includes(name)).length, 1, 'no second warning')

      const version = await a.h.services.tunnel.configVersion()
      a.clock.advance(24 * 3600 + 1)
      await recheck()
      t.notOk((await hostnamesOf(a.h, instance.id)).includes(name), 'grace over: no longer routed')
      t.ok(await a.h.services.tunnel.configVersion() > version, 'gateways told')
      const token = (await a.h.request('POST', '/v1/auth/login', { email, password: 'correct horse battery' })).body.access_token
      t.match((await a.domains(token, instance.id))[0], { domain: name, status: 'pending_verification', ssl_status: 'none', error: 'CNAME record not found' })
      t.same((await mails()).filter(s => s.includes(name)), [`Check the DNS record of ${name}`, `${name} is no longer served`], 'owner mailed when it stopped')
      t.ok(a.h.mail.to(email).filter(m => m.subject.includes(name)).every(m => m.text.startsWith('Hello,\n')), 'no user-chosen display name in domain mails')

      await dns.setCname(name, target)
      t.same((await a.h.request('POST', `/v1/instances/${instance.id}/domains/${name}/verify`, undefined, bearer(token))).body, { domain: name, status: 'verified', ssl_status: 'provisioning' }, 'verify again brings it back')
      t.ok((await hostnamesOf(a.h, instance.id)).includes(name))
    })

    t.test('re-check: timeouts never take a domain down', async t => {
      const a = await domainApp(t, db, tiny.server, { CC_DOMAIN_RECHECK_INTERVAL: '60', CC_DOMAIN_LAPSE_GRACE: '3600' })
      const { user, instance } = await a.owner()
      const name = fresh()
      await a.h.request('POST', `/v1/instances/${instance.id}/domains`, { domain: name }, bearer(user.token))
      tiny.mode = 'answer'
      tiny.set(name, { CNAME: `${instance.id}.tunnel.${BASE_DOMAIN}` })
      t.match((await a.h.request('POST', `/v1/instances/${instance.id}/domains/${name}/verify`, undefined, bearer(user.token))).body, { status: 'verified' })
      tiny.mode = 'silent'
      for (let i = 0; i < 3; i++) {
        a.clock.advance(3600)
        await a.h.services.domains.recheckDue()
      }
      tiny.mode = 'answer'
      t.ok((await hostnamesOf(a.h, instance.id)).includes(name), 'still served after hours of DNS timeouts')
      t.match(await db('custom_domains').where({ domain: name }).first('status', 'failing_since', 'last_error'), { status: 'verified', failing_since: null, last_error: /timed out/ })
    })
  })
})
