/**
 * Spec "Billing Endpoints": checkout, subscription, portal, the webhook's
 * signature checks, with the real Stripe SDK talking to a local fake (the redirect pages: web.test.ts).
 */
import t from 'tap'
import { assertError, bearer, forEachDatabase, signUp, startApp } from '../harness.ts'
import { TinyDns } from '../../helpers/dns-server.ts'
import { deliver, newUser, startBillingApp, subscribe, subscriptionOf } from './billing-fixtures.ts'
import { createInstance } from './tunnel-fixtures.ts'

const PUBLIC_URL = 'https://api.example.test' // testConfig's CC_PUBLIC_URL

await forEachDatabase(t, async (t, db) => {
  t.test('without Stripe configured: free plan, billing endpoints say so', async t => {
    const h = await startApp(t, db)
    const login = await signUp(h, `nobill-${process.pid}@example.com`, { verify: true })
    const auth = bearer(login.access_token)
    for (const [method, url, body] of [['POST', '/v1/billing/checkout', { plan: 'pro' }], ['POST', '/v1/billing/portal', {}]] as const) {
      const res = await h.request(method, url, body, auth)
      assertError(t, res, 'BILLING_NOT_CONFIGURED', url)
      t.match(res.body.error.message, /not configured/)
    }
    const hook = await h.request('POST', '/v1/billing/webhook', '{"id":"evt_1"}', { 'stripe-signature': 't=1,v1=00' })
    assertError(t, hook, 'BILLING_NOT_CONFIGURED', 'webhook')
    const sub = await h.request('GET', '/v1/billing/subscription', undefined, auth)
    t.equal(sub.status, 200)
    t.same(sub.body, {
      status: 'none',
      plan: 'free',
      current_period_start: null,
      current_period_end: null,
      cancel_at_period_end: false,
      payment_method: null,
      limits: { instances: 1, custom_domains_per_instance: 0 },
      usage: { instances: 0, custom_domains: 0, custom_domains_max_per_instance: 0 },
    })
    t.match(login.user, { subscription_status: 'none', subscription_plan: 'free' }, 'login reports Free')
  })

  t.test('checkout: Stripe session with our own redirect pages, one customer per user', async t => {
    const b = await startBillingApp(t, db)
    const user = await newUser(b.h, 'checkout')
    const res = await b.h.request('POST', '/v1/billing/checkout', { plan: 'pro' }, bearer(user.token))
    t.equal(res.status, 200)
    t.same(Object.keys(res.body).sort(), ['checkout_url', 'poll_interval', 'session_id'])
    t.equal(res.body.poll_interval, 3000)
    const session = b.fake.sessions.get(res.body.session_id)
    t.ok(session, 'session created at Stripe')
    t.equal(res.body.checkout_url, session!.url)
    t.equal(session!.success_url, `${PUBLIC_URL}/billing/success?session_id={CHECKOUT_SESSION_ID}`, 'success URL is ours, not the client\'s')
    t.equal(session!.cancel_url, `${PUBLIC_URL}/billing/cancel`)
    t.same(session!.line_items, [{ price: b.fake.prices.pro, quantity: '1' }], 'pro -> configured pro price')
    t.equal(session!.client_reference_id, user.id)
    t.equal(session!.subscription_data.metadata.user_id, user.id)

    const again = await b.h.request('POST', '/v1/billing/checkout', { plan: 'business' }, bearer(user.token))
    t.equal(again.status, 200, 'a second checkout before paying is allowed')
    t.same(b.fake.sessions.get(again.body.session_id)!.line_items, [{ price: b.fake.prices.business, quantity: '1' }], 'business -> business price')
    t.equal(b.fake.customers.size, 1, 'one Stripe customer')
    t.equal(b.fake.requestsTo('POST', '/v1/customers').length, 1, 'created once')
    t.equal(b.fake.sessions.get(again.body.session_id)!.customer, session!.customer, 'same customer on both sessions')
    t.equal(b.fake.customers.get(session!.customer)!.email, b.fake.requestsTo('POST', '/v1/customers')[0].body.email)
    t.equal(b.fake.customers.get(session!.customer)!.metadata.user_id, user.id)
    t.equal(b.fake.requestsTo('POST', '/v1/customers')[0].headers['idempotency-key'], `cc-customer-${user.id}`, 'idempotency key per user')
  })

  t.test('checkout: unknown plans, unverified accounts', async t => {
    const b = await startBillingApp(t, db)
    const user = await newUser(b.h, 'badplan')
    for (const body of [{ plan: 'enterprise' }, { plan: 'free' }, { plan: 'PRO ' }, {}, { plan: 'pro', price: 'price_x' }]) {
      const res = await b.h.request('POST', '/v1/billing/checkout', body, bearer(user.token))
      assertError(t, res, 'VALIDATION_ERROR', JSON.stringify(body))
    }
    const unverified = await signUp(b.h, `unverified-${process.pid}@example.com`)
    assertError(t, await b.h.request('POST', '/v1/billing/checkout', { plan: 'pro' }, bearer(unverified.access_token)), 'FORBIDDEN', 'unverified email')
    t.equal(b.fake.sessions.size, 0, 'no session created for any of them')
  })

  t.test('checkout: the plan you already have, or another while one runs -> 409 ALREADY_SUBSCRIBED', async t => {
    const b = await startBillingApp(t, db)
    const user = await newUser(b.h, 'twice')
    await subscribe(t, b, user.token, 'pro')
    t.match(await subscriptionOf(b, user.token), { status: 'active', plan: 'pro' })
    const same = await b.h.request('POST', '/v1/billing/checkout', { plan: 'pro' }, bearer(user.token))
    assertError(t, same, 'ALREADY_SUBSCRIBED', 'same plan')
    t.match(same.body.error.message, /already on the pro plan/)
    const other = await b.h.request('POST', '/v1/billing/checkout', { plan: 'business' }, bearer(user.token))
    assertError(t, other, 'ALREADY_SUBSCRIBED', 'other plan')
    t.match(other.body.error.message, /billing portal/)
    t.same(other.body.error.details, { current_plan: 'pro', requested_plan: 'business', status: 'active' })
  })

  t.test('Stripe down -> 502 BILLING_PROVIDER_ERROR, nothing half-done', async t => {
    const b = await startBillingApp(t, db)
    const user = await newUser(b.h, 'down')
    b.fake.failNext(100)
    const res = await b.h.request('POST', '/v1/billing/checkout', { plan: 'pro' }, bearer(user.token))
    assertError(t, res, 'BILLING_PROVIDER_ERROR')
    t.notMatch(res.raw, b.fake.secretKey, 'no key in the answer')
    t.equal(await db('billing_customers').where({ user_id: user.id }).first() as unknown, undefined, 'no customer row for a failed create')
    b.fake.failNext(0)
    const ok = await b.h.request('POST', '/v1/billing/checkout', { plan: 'pro' }, bearer(user.token))
    t.equal(ok.status, 200, 'works once Stripe is back')
  })

  t.test('subscription: status, plan, period, cancel flag, card', async t => {
    const b = await startBillingApp(t, db)
    const user = await newUser(b.h, 'sub')
    t.match(await subscriptionOf(b, user.token), { status: 'none', plan: 'free', payment_method: null })
    const { subscription } = await subscribe(t, b, user.token, 'business')
    const start = subscription.items.data[0].current_period_start as number
    t.same(await subscriptionOf(b, user.token), {
      status: 'active',
      plan: 'business',
      current_period_start: new Date(start * 1000).toISOString().replace('.000', ''),
      current_period_end: new Date((start + 30 * 86400) * 1000).toISOString().replace('.000', ''),
      cancel_at_period_end: false,
      payment_method: { brand: 'visa', last4: '4242' },
      limits: { instances: 10, custom_domains_per_instance: 5 },
      usage: { instances: 0, custom_domains: 0, custom_domains_max_per_instance: 0 },
    })
    const profile = await b.h.request('GET', '/v1/user', undefined, bearer(user.token))
    t.match(profile.body, { subscription_status: 'active', subscription_plan: 'business' }, 'GET /user reports the real subscription')
  })

  t.test('plans: the spec\'s table, as the server enforces it', async t => {
    const b = await startBillingApp(t, db)
    assertError(t, await b.h.request('GET', '/v1/billing/plans'), 'UNAUTHORIZED', 'without a token')
    const user = await newUser(b.h, 'plans')
    const res = await b.h.request('GET', '/v1/billing/plans', undefined, bearer(user.token))
    t.equal(res.status, 200)
    t.same(res.body, {
      plans: [
        { plan: 'free', instances: 1, custom_domains_per_instance: 0 },
        { plan: 'pro', instances: 3, custom_domains_per_instance: 1 },
        { plan: 'business', instances: 10, custom_domains_per_instance: 5 },
      ],
    })
  })

  t.test('subscription: limits and usage count what instance and domain creation count', async t => {
    const dns = await TinyDns.start(t)
    const b = await startBillingApp(t, db, { env: { CC_DNS_RESOLVERS: dns.server, CC_DNS_TIMEOUT_MS: '300', CC_DNS_TRIES: '1' } })
    const user = await newUser(b.h, 'usage')
    const other = await newUser(b.h, 'usage-other')
    const plans = (await b.h.request('GET', '/v1/billing/plans', undefined, bearer(user.token))).body.plans as Array<{ plan: string, instances: number, custom_domains_per_instance: number }>
    const published = (plan: string): { instances: number, custom_domains_per_instance: number } => {
      const { instances, custom_domains_per_instance: perInstance } = plans.find(p => p.plan === plan)!
      return { instances, custom_domains_per_instance: perInstance }
    }
    const tag = `u${process.pid}x${Date.now() % 100000}`
    let made = 0
    const create = async (token: string) => await createInstance(b.h, token, `${tag}-${++made}`)

    let sub = await subscriptionOf(b, user.token)
    t.same(sub.limits, published('free'), 'Free: the published limits')
    t.same(sub.usage, { instances: 0, custom_domains: 0, custom_domains_max_per_instance: 0 })
    const first = await create(user.token)
    t.equal(first.status, 201)
    t.equal((await create(other.token)).status, 201, 'another account\'s instance')
    sub = await subscriptionOf(b, user.token)
    t.same(sub.usage, { instances: 1, custom_domains: 0, custom_domains_max_per_instance: 0 }, 'one instance; the other account\'s is not counted')
    const refused = await create(user.token)
    assertError(t, refused, 'LIMIT_EXCEEDED', `instance ${sub.usage.instances + 1} on Free`)
    t.equal(refused.body.error.details.limit, sub.limits.instances, 'refused exactly at limits.instances')

    await subscribe(t, b, user.token, 'business')
    sub = await subscriptionOf(b, user.token)
    t.same(sub.limits, published('business'), 'Business: the published limits')
    const ids = [first.body.instance.id as string]
    while (sub.usage.instances < sub.limits.instances && made < 20) {
      const res = await create(user.token)
      t.equal(res.status, 201, `instance ${sub.usage.instances + 1} of ${sub.limits.instances}`)
      ids.push(res.body.instance.id)
      sub = await subscriptionOf(b, user.token)
    }
    t.equal(sub.usage.instances, 10, 'usage counts every instance')
    assertError(t, await create(user.token), 'LIMIT_EXCEEDED', 'one past limits.instances')

    const addDomain = async (instanceId: string, n: number) => await b.h.request('POST', `/v1/instances/${instanceId}/domains`, { domain: `d${n}.${tag}.example.com` }, bearer(user.token))
    let domains = 0
    while (sub.usage.custom_domains_max_per_instance < sub.limits.custom_domains_per_instance && domains < 10) {
      t.equal((await addDomain(ids[0], ++domains)).status, 201, `domain ${domains} on the first instance`)
      sub = await subscriptionOf(b, user.token)
    }
    t.equal(sub.usage.custom_domains_max_per_instance, 5)
    assertError(t, await addDomain(ids[0], ++domains), 'LIMIT_EXCEEDED', 'one past limits.custom_domains_per_instance')
    t.equal((await addDomain(ids[1], ++domains)).status, 201, 'a domain on the second instance')
    sub = await subscriptionOf(b, user.token)
    t.same(sub.usage, { instances: 10, custom_domains: 6, custom_domains_max_per_instance: 5 }, 'domains counted across instances and per instance')
    t.same((await subscriptionOf(b, other.token)).usage, { instances: 1, custom_domains: 0, custom_domains_max_per_instance: 0 }, 'the other account\'s usage is its own')
  })

  t.test('portal: return_url only from the allow-list', async t => {
    const b = await startBillingApp(t, db, { env: { CC_BILLING_PORTAL_RETURN_URLS: 'https://dashboard.example.test/settings, https://admin.example.test/' } })
    const user = await newUser(b.h, 'portal')
    const def = await b.h.request('POST', '/v1/billing/portal', {}, bearer(user.token))
    t.equal(def.status, 200)
    t.match(def.body.portal_url, /^https:\/\/billing\.stripe\.test\/p\/session\//)
    const created = [...b.fake.portalSessions.values()]
    t.equal(created[0].return_url, 'https://dashboard.example.test/settings', 'default: the first allowed URL')
    const noBody = await b.h.request('POST', '/v1/billing/portal', undefined, bearer(user.token))
    t.equal(noBody.status, 200, 'no body at all is fine')
    for (const ok of ['https://dashboard.example.test/settings', 'https://dashboard.example.test/settings/billing?tab=1', 'https://admin.example.test/x/y']) {
      const res = await b.h.request('POST', '/v1/billing/portal', { return_url: ok }, bearer(user.token))
      t.equal(res.status, 200, `allowed: ${ok}`)
    }
    for (const bad of [
      'https://evil.example/settings',
      'https://dashboard.example.test.evil.example/settings',
      'https://dashboard.example.test@evil.example/settings',
      'http://dashboard.example.test/settings',
      'https://dashboard.example.test/settingsx',
      'https://dashboard.example.test/',
      'https://dashboard.example.test:8443/settings',
      'javascript:alert(1)',
      'not a url',
    ]) {
      const res = await b.h.request('POST', '/v1/billing/portal', { return_url: bad }, bearer(user.token))
      assertError(t, res, 'VALIDATION_ERROR', bad)
      t.ok(res.body.error.details.fields?.return_url, `${bad}: return_url named`)
    }
    t.equal(b.fake.portalSessions.size, 5, 'only the allowed ones reached Stripe')
    t.equal(b.fake.customers.size, 1, 'one customer')
  })

  t.test('webhook signature: raw body, SDK verification, 300 s either way, right secret only', async t => {
    const b = await startBillingApp(t, db)
    const user = await newUser(b.h, 'sig')
    const { events } = await subscribe(t, b, user.token, 'pro', { deliver: false })
    const event = events[0]
    const now = b.seconds()
    const refused: Array<[string, Parameters<typeof deliver>[2]]> = [
      ['stale (301 s old)', { timestamp: now - 301 }],
      ['future-dated (301 s ahead)', { timestamp: now + 301 }],
      ['far future', { timestamp: now + 86400 }],
      ['wrong secret', { secret: 'whsec_someoneelsessecret0000000000' }],
      ['tampered body', { body: JSON.stringify({ ...event, data: { object: { ...event.data.object, status: 'active', id: 'sub_attacker' } } }, null, 2) }],
      ['one byte changed', { body: JSON.stringify(event, null, 2).replace('"active"', '"activf"') }],
      ['re-serialised body (same JSON, other bytes)', { body: JSON.stringify(event) }],
      ['no header', { header: null }],
      ['empty header', { header: '' }],
      ['garbage header', { header: 'nonsense' }],
      ['no v1 signature', { header: `t=${now}` }],
      ['v0 only', { header: `t=${now},v0=${'0'.repeat(64)}` }],
    ]
    for (const [label, options] of refused) {
      const res = await deliver(b, event, options)
      assertError(t, res, 'WEBHOOK_SIGNATURE_INVALID', label)
    }
    t.equal(await db('stripe_events').where({ id: event.id }).first() as unknown, undefined, 'no refused event was recorded')
    t.match(await subscriptionOf(b, user.token), { status: 'none', plan: 'free' }, 'and nothing changed')

    for (const [label, timestamp] of [['299 s old', now - 299], ['299 s ahead', now + 299]] as const) {
      const res = await deliver(b, b.fake.event('customer.subscription.updated', event.data.object, now), { timestamp })
      t.equal(res.status, 200, `${label}: accepted`)
    }
    const ok = await deliver(b, event)
    t.equal(ok.status, 200)
    t.same(ok.body, { received: true, duplicate: false })
    t.match(await subscriptionOf(b, user.token), { status: 'active', plan: 'pro' })
  })

  t.test('webhook: signed but not an event -> 400; unknown types acknowledged', async t => {
    const b = await startBillingApp(t, db)
    const notEvent = JSON.stringify({ hello: 'world' })
    const res = await b.h.request('POST', '/v1/billing/webhook', notEvent, { 'content-type': 'application/json', 'stripe-signature': b.fake.sign(notEvent, { timestamp: b.seconds() }) })
    assertError(t, res, 'BAD_REQUEST')
    const other = b.fake.event('customer.created', { id: 'cus_x', object: 'customer' }, b.seconds())
    const ack = await deliver(b, other)
    t.same(ack.body, { received: true, duplicate: false }, 'other event types: 200 so Stripe stops sending')
    t.same((await deliver(b, other)).body, { received: true, duplicate: true })
  })
})
