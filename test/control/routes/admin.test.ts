// The admin role and the operator overview: granted and revoked with the real CLI against an
// embedded database directory, the overview's sections from real rows, 403 for everyone else.
import t from 'tap'
import { embeddedCli } from '../../helpers/cli-process.ts'
import { assertError, bearer, forEachDatabase, PASSWORD, signUp, startApp } from '../harness.ts'
import { deliver, failSubscriptionWrites, newUser, startBillingApp, subscribe } from './billing-fixtures.ts'

t.test('admin grant/revoke via the CLI on the embedded database; overview for admins only', async t => {
  const { run: cli, open } = embeddedCli(t, 'cc-admin-')

  let db = await open()
  let h = await startApp(t, db)
  await signUp(h, 'operator@example.com')
  const plain = await signUp(h, 'plain@example.com')
  assertError(t, await h.request('GET', '/v1/admin/overview', undefined, bearer(plain.access_token)), 'FORBIDDEN', 'before any grant')
  t.equal((await h.request('GET', '/v1/user', undefined, bearer(plain.access_token))).body.role, 'user')
  await h.app.stop()
  await db.destroy()

  const help = cli(['admin', '--help'])
  t.equal(help.status, 0)
  t.match(help.stdout, /Usage: cloud-connect admin <grant\|revoke> EMAIL/)
  const missing = cli(['admin', 'grant', 'nobody@example.com'])
  t.equal(missing.status, 2, 'unknown account: exit 2')
  t.equal(missing.stderr, 'cloud-connect admin: no account with the email "nobody@example.com"\n', 'one line')
  t.equal(cli(['admin', 'promote', 'x@example.com']).status, 2, 'unknown action')
  t.equal(cli(['admin', 'grant']).status, 2, 'no email')
  const granted = cli(['admin', 'grant', ' Operator@Example.com '])
  t.equal(granted.status, 0, granted.stderr)
  t.equal(granted.stdout, 'operator@example.com is now an administrator\n')

  db = await open()
  h = await startApp(t, db)
  const login = async (email: string): Promise<string> => (await h.request('POST', '/v1/auth/login', { email, password: PASSWORD })).body.access_token
  const admin = await login('operator@example.com')
  t.equal((await h.request('GET', '/v1/user', undefined, bearer(admin))).body.role, 'admin', 'GET /v1/user shows the role')
  const res = await h.request('GET', '/v1/admin/overview', undefined, bearer(admin))
  t.equal(res.status, 200, res.raw)
  t.same(Object.keys(res.body).sort(), ['cancellations', 'expiring_certificates', 'gateways', 'instances', 'paying_accounts', 'recent_signups', 'webhook_failures'])
  t.same(res.body.recent_signups.map((s: { email: string }) => s.email), ['plain@example.com', 'operator@example.com'], 'newest first')
  t.same(res.body.recent_signups[0].verified, false)
  assertError(t, await h.request('GET', '/v1/admin/overview', undefined, bearer(await login('plain@example.com'))), 'FORBIDDEN', 'a non-admin')
  assertError(t, await h.request('GET', '/v1/admin/overview'), 'UNAUTHORIZED', 'no token')
  await h.app.stop()
  await db.destroy()

  const revoked = cli(['admin', 'revoke', 'operator@example.com'])
  t.equal(revoked.status, 0, revoked.stderr)
  db = await open()
  t.teardown(async () => { await db.destroy() })
  h = await startApp(t, db)
  assertError(t, await h.request('GET', '/v1/admin/overview', undefined, bearer(await login('operator@example.com'))), 'FORBIDDEN', 'after revoke')
})

await forEachDatabase(t, async (t, db) => {
  t.test('overview: gateways with peer counts, every user\'s instances, billing, webhook failures, expiring certificates', async t => {
    const b = await startBillingApp(t, db)
    const h = b.h
    const now = b.clock.now()
    const owner = await newUser(h, 'overview-owner')
    const operator = await newUser(h, 'overview-admin')
    await db('users').where({ id: operator.id }).update({ role: 'admin' })
    const instance = await h.request('POST', '/v1/instances', { name: 'Owned', subdomain: `owned${process.pid}` }, bearer(owner.token))
    t.equal(instance.status, 201, instance.raw)

    await db('gateways').insert({ id: 'gw-1', public_key: 'k', endpoint: 'connect.example.test:51820', listen_port: 51820, protocol: 1, software: 'test', hello_at: now })
    const { GatewayRegistry } = await import('../../../control/rpc/registry.ts')
    const registry = new GatewayRegistry({ db, ipam: h.services.ipam, fallback: h.services.gateway, configuredEndpoint: 'connect.example.test:51820', now: b.clock.now })
    await registry.noteReport('gw-1', 3)
    const day = 24 * 3600_000
    await db('certificate_states').insert([
      { hostname: 'soon.example.test', gateway_id: 'gw-1', state: 'active', not_after: new Date(now.getTime() + 3 * day), reported_at: now },
      { hostname: 'later.example.test', gateway_id: 'gw-1', state: 'active', not_after: new Date(now.getTime() + 60 * day), reported_at: now },
    ])

    const payer = await newUser(h, 'overview-payer')
    await subscribe(t, b, payer.token, 'pro')
    // A verified webhook whose processing fails: recorded, then resolved by the retry.
    const failing = await newUser(h, 'overview-failing')
    const { events } = await subscribe(t, b, failing.token, 'pro', { deliver: false })
    const drop = await failSubscriptionWrites(t, db, 'cc_test_admin_fail')
    t.ok((await deliver(b, events[0])).status >= 500, 'processing failed')
    t.ok((await deliver(b, events[0])).status >= 500, 'Stripe retried, failed again')

    const overview = async (): Promise<any> => { // eslint-disable-line @typescript-eslint/no-explicit-any
      const res = await h.request('GET', '/v1/admin/overview', undefined, bearer(operator.token))
      t.equal(res.status, 200, res.raw)
      return res.body
    }
    let body = await overview()
    t.match(body.gateways, [{ id: 'gw-1', peer_count: 3, last_report_at: /^\d{4}-/ }])
    t.match(body.instances.find((i: { id: string }) => i.id === instance.body.instance.id), { owner_email: /^overview-owner-/, status: 'pending', last_seen: null })
    t.same(body.expiring_certificates.map((c: { hostname: string }) => c.hostname), ['soon.example.test'], 'within 14 days only')
    t.ok(body.paying_accounts.some((p: { email: string, plan: string }) => p.email.startsWith('overview-payer-') && p.plan === 'pro'), 'the paying account')
    t.match(body.webhook_failures, [{ event_id: events[0].id, attempts: 2, resolved_at: null, last_error: /^P0001: injected failure$/ }])
    t.notMatch(body.webhook_failures[0].last_error, /insert into/, 'no SQL in the summary')

    await drop()
    t.equal((await deliver(b, events[0])).status, 200, 'the retry succeeds')
    await db('billing_subscriptions').where({ user_id: payer.id }).update({ canceled_at: now })
    body = await overview()
    t.match(body.webhook_failures, [{ event_id: events[0].id, resolved_at: /^\d{4}-/ }], 'marked resolved')
    t.ok(body.cancellations.some((c: { email: string }) => c.email.startsWith('overview-payer-')), 'the cancellation within 30 days')
    assertError(t, await h.request('GET', '/v1/admin/overview', undefined, bearer(owner.token)), 'FORBIDDEN', 'a non-admin')
  })
})
