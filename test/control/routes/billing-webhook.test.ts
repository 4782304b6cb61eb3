/**
 * Stripe webhook processing end to end (SDK against the fake, SDK-signed deliveries): activation
 * raises limits, exactly-once processing, order independence, failed payments and the past_due
 * grace, downgrade suspension and upgrade restore, and a database failure mid-webhook.
 */
import t from 'tap'
import { assertError, bearer, forEachDatabase, PASSWORD } from '../harness.ts'
import { deliver, failSubscriptionWrites, mustDeliver, newUser, relogin, startBillingApp, subscribe, subscriptionOf, type BillingHarness } from './billing-fixtures.ts'
import { createInstance, mustCreate, newPublicKey } from './tunnel-fixtures.ts'

type Json = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any
const DAY = 86400

/** Seeded permutation (mulberry32), so a failing order can be replayed. */
function shuffled<T> (items: T[], seed: number): T[] {
  let a = seed >>> 0
  const random = (): number => {
    a = (a + 0x6D2B79F5) >>> 0
    let x = Math.imul(a ^ (a >>> 15), 1 | a)
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296
  }
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[out[i], out[j]] = [out[j], out[i]]
  }
  return out
}

async function peerIds (b: BillingHarness): Promise<string[]> {
  return (await b.h.services.tunnel.listPeers()).map(p => p.instanceId)
}

/** Creates `n` instances with registered keys (so they would be gateway peers). */
async function instancesWithKeys (t: Parameters<typeof mustCreate>[0], b: BillingHarness, token: string, prefix: string, n: number): Promise<Array<{ id: string, token: string }>> {
  const out = []
  for (let i = 0; i < n; i++) {
    const inst = await mustCreate(t, b.h, token, `${prefix}${i}`)
    const reg = await b.h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(inst.token))
    if (reg.status !== 200) t.fail(`register ${prefix}${i}: ${reg.status} ${reg.raw}`)
    out.push({ id: inst.id, token: inst.token })
    b.clock.advance(1) // distinct created_at: "oldest first" is well defined
  }
  return out
}

await forEachDatabase(t, async (t, db) => {
  t.test('checkout -> webhook -> active -> limits raised; /user and login report it', async t => {
    const b = await startBillingApp(t, db)
    const user = await newUser(b.h, 'flow')
    await mustCreate(t, b.h, user.token, `flow${process.pid}a`)
    assertError(t, await createInstance(b.h, user.token, `flow${process.pid}b`), 'LIMIT_EXCEEDED', 'Free: 1 instance')

    const res = await b.h.request('POST', '/v1/billing/checkout', { plan: 'pro' }, bearer(user.token))
    t.match(await subscriptionOf(b, user.token), { status: 'none', plan: 'free' }, 'nothing changes before payment')
    const at = b.seconds()
    const { session, subscription } = b.fake.completeCheckout(res.body.session_id, { at })
    // Stripe sends checkout.session.completed alone first here: it is enough to activate.
    const completed = await mustDeliver(t, b, b.fake.event('checkout.session.completed', session, at))
    t.same(completed.body, { received: true, duplicate: false })
    t.match(await subscriptionOf(b, user.token), { status: 'active', plan: 'pro', payment_method: { brand: 'visa', last4: '4242' } })
    t.equal(b.fake.requestsTo('GET', `/v1/subscriptions/${subscription.id as string}`).length, 1, 'subscription read from Stripe once')
    await mustDeliver(t, b, b.fake.event('customer.subscription.created', subscription, at))
    t.match(await subscriptionOf(b, user.token), { status: 'active', plan: 'pro' })

    await mustCreate(t, b.h, user.token, `flow${process.pid}b`)
    await mustCreate(t, b.h, user.token, `flow${process.pid}c`)
    assertError(t, await createInstance(b.h, user.token, `flow${process.pid}d`), 'LIMIT_EXCEEDED', 'Pro: 3 instances')
    const profile = await b.h.request('GET', '/v1/user', undefined, bearer(user.token))
    t.match(profile.body, { subscription_status: 'active', subscription_plan: 'pro' })
    const email = (await db('users').where({ id: user.id }).first('email') as { email: string }).email
    const login = await b.h.request('POST', '/v1/auth/login', { email, password: PASSWORD })
    t.match(login.body.user, { subscription_status: 'active', subscription_plan: 'pro' }, 'login reports the subscription')
  })

  t.test('each event processed once: duplicates, concurrent duplicates', async t => {
    const b = await startBillingApp(t, db)
    const user = await newUser(b.h, 'dup')
    const { subscription } = await subscribe(t, b, user.token, 'pro')
    const invoice = b.fake.failedInvoice(subscription.id, { at: b.seconds() })
    const failed = b.fake.event('invoice.payment_failed', invoice, b.seconds())
    const first = await deliver(b, failed)
    t.same(first.body, { received: true, duplicate: false })
    for (let i = 0; i < 3; i++) t.same((await deliver(b, failed)).body, { received: true, duplicate: true }, `redelivery ${i + 1}`)
    const burst = await Promise.all(Array.from({ length: 5 }, async () => await deliver(b, b.fake.event('invoice.payment_failed', invoice, b.seconds()))))
    t.ok(burst.every(r => r.status === 200), 'distinct events for one invoice all accepted')
    const same = b.fake.event('customer.subscription.updated', subscription, b.seconds())
    const racing = await Promise.all(Array.from({ length: 4 }, async () => await deliver(b, same)))
    t.same(racing.map(r => r.status), [200, 200, 200, 200])
    t.equal(racing.filter(r => r.body.duplicate === false).length, 1, 'concurrent copies: exactly one processed')
    t.equal(Number((await db('stripe_events').where({ id: failed.id }).count('* as n').first() as { n: string }).n), 1)
    await b.h.services.mailer.drain()
    const mails = b.h.mail.messages.filter(m => m.subject.includes('payment failed') && m.to.startsWith('dup-'))
    t.equal(mails.length, 6, 'one mail per processed failure event, none for redeliveries')
    t.equal(Number((await db('billing_payment_failures').where({ invoice_id: invoice.id }).count('* as n').first() as { n: string }).n), 1, 'one row per invoice')
  })

  t.test('shuffled, duplicated deliveries end in the same state', async t => {
    const b = await startBillingApp(t, db)
    const t0 = b.seconds()
    const scenarios: Array<{ name: string, build: (userToken: string) => Promise<Json[]>, expect: Json }> = [
      {
        name: 'renewal fails, is paid, then cancelled at period end and ended',
        build: async token => {
          const { subscription, events } = await subscribe(t, b, token, 'pro', { deliver: false })
          const id = subscription.id as string
          const e = [...events]
          e.push(b.fake.event('customer.subscription.updated', b.fake.updateSubscription(id, { status: 'active' }), t0 + 1))
          e.push(b.fake.event('invoice.payment_failed', b.fake.failedInvoice(id, { at: t0 + 30 * DAY }), t0 + 30 * DAY))
          e.push(b.fake.event('customer.subscription.updated', b.fake.updateSubscription(id, { status: 'past_due', periodStart: t0 + 30 * DAY }), t0 + 30 * DAY))
          e.push(b.fake.event('customer.subscription.updated', b.fake.updateSubscription(id, { status: 'active' }), t0 + 31 * DAY))
          e.push(b.fake.event('customer.subscription.updated', b.fake.updateSubscription(id, { cancelAtPeriodEnd: true }), t0 + 40 * DAY))
          e.push(b.fake.event('customer.subscription.deleted', b.fake.updateSubscription(id, { status: 'canceled', canceledAt: t0 + 60 * DAY, endedAt: t0 + 60 * DAY }), t0 + 60 * DAY))
          return e
        },
        expect: { status: 'canceled', plan: 'free', cancel_at_period_end: true },
      },
      {
        name: 'upgraded to business in the portal, card replaced, cancellation requested',
        build: async token => {
          const { subscription, events } = await subscribe(t, b, token, 'pro', { deliver: false })
          const id = subscription.id as string
          const e = [...events]
          e.push(b.fake.event('customer.subscription.updated', b.fake.updateSubscription(id, { price: b.fake.prices.business }), t0 + 5))
          const card = b.fake.addCard('mastercard', '4444')
          e.push(b.fake.event('customer.subscription.updated', b.fake.updateSubscription(id, { paymentMethod: card.id }), t0 + 6))
          e.push(b.fake.event('customer.subscription.updated', b.fake.updateSubscription(id, { cancelAtPeriodEnd: true }), t0 + 7))
          return e
        },
        expect: { status: 'active', plan: 'business', cancel_at_period_end: true, payment_method: { brand: 'mastercard', last4: '4444' } },
      },
    ]
    for (const scenario of scenarios) {
      const finals: Json[] = []
      for (let seed = 1; seed <= 5; seed++) {
        const user = await newUser(b.h, `shuffle${seed}`)
        const events = await scenario.build(user.token)
        // Every event at least once, some twice, in a seeded random order.
        const deliveries = shuffled([...events, ...events.filter((_, i) => (i + seed) % 2 === 0)], seed * 7919)
        for (const event of deliveries) await mustDeliver(t, b, event)
        const final = await subscriptionOf(b, user.token)
        t.match(final, scenario.expect, `${scenario.name}, order ${seed}: ${deliveries.map(e => `${String(e.type).split('.').pop()}@${Number(e.created) - t0}`).join(' ')}`)
        finals.push({ ...final, current_period_start: final.current_period_start?.slice(11), current_period_end: final.current_period_end?.slice(11) })
      }
      t.ok(finals.every(f => JSON.stringify(f) === JSON.stringify(finals[0])), `${scenario.name}: the same final state in every order`)
    }
  })

  t.test('invoice.payment_failed: owner mailed; past_due keeps the plan for the grace period, then Free', async t => {
    const b = await startBillingApp(t, db, { env: { CC_BILLING_PAST_DUE_GRACE: String(3 * DAY) } })
    const user = await newUser(b.h, 'pastdue')
    const { subscription } = await subscribe(t, b, user.token, 'pro')
    const instances = await instancesWithKeys(t, b, user.token, `pd${process.pid}x`, 3)
    const renewal = b.seconds() + 30 * DAY
    b.clock.advance(30 * DAY + 3600)
    let token = await relogin(b, user.id)
    const invoice = b.fake.failedInvoice(subscription.id, { at: renewal, nextAttempt: renewal + 3 * DAY })
    await mustDeliver(t, b, b.fake.event('invoice.payment_failed', invoice, renewal))
    await b.h.services.mailer.drain()
    const mail = b.h.mail.messages.find(m => m.to.startsWith('pastdue-') && m.subject.includes('payment failed'))
    t.ok(mail, 'owner mailed about the failed payment')
    t.match(mail?.text, /pro plan/)
    t.match(await subscriptionOf(b, token), { status: 'active' }, 'the invoice alone does not change the subscription')

    await mustDeliver(t, b, b.fake.event('customer.subscription.updated', b.fake.updateSubscription(subscription.id, { status: 'past_due', periodStart: renewal }), renewal))
    t.match(await subscriptionOf(b, token), { status: 'past_due', plan: 'pro' }, 'past_due keeps pro during the grace period')
    t.same((await peerIds(b)).filter(id => instances.some(i => i.id === id)).length, 3, 'all three routed')
    const version = await b.h.services.tunnel.configVersion()

    b.clock.advance(2 * DAY)
    t.equal(await b.h.services.billing.enforceDue(), 0, 'still within grace: nothing to do')
    b.clock.advance(DAY)
    token = await relogin(b, user.id)
    t.match(await subscriptionOf(b, token), { status: 'past_due', plan: 'free' }, 'grace over: Free')
    t.match((await b.h.request('GET', '/v1/user', undefined, bearer(token))).body, { subscription_status: 'past_due', subscription_plan: 'free' })
    t.equal(await b.h.services.billing.enforceDue(), 1, 'the periodic pass applies the downgrade')
    const routed = await peerIds(b)
    t.ok(routed.includes(instances[0].id), 'the oldest instance stays')
    t.notOk(routed.includes(instances[1].id) || routed.includes(instances[2].id), 'the others are no longer routed')
    t.ok(await b.h.services.tunnel.configVersion() > version, 'gateways are told')
    t.equal(Number((await db('instances').whereIn('id', instances.map(i => i.id)).count('* as n').first() as { n: string }).n), 3, 'nothing deleted')

    // Paid after all: active again, everything back.
    await mustDeliver(t, b, b.fake.event('customer.subscription.updated', b.fake.updateSubscription(subscription.id, { status: 'active' }), b.seconds()))
    t.same((await peerIds(b)).filter(id => instances.some(i => i.id === id)).sort(), instances.map(i => i.id).sort(), 'restored on payment')
  })

  t.test('cancellation suspends what is over Free; upgrade restores it', async t => {
    const b = await startBillingApp(t, db)
    const user = await newUser(b.h, 'downgrade')
    const { subscription } = await subscribe(t, b, user.token, 'business')
    const instances = await instancesWithKeys(t, b, user.token, `dg${process.pid}x`, 4)
    const domains = ['a', 'b', 'c'].map(x => `${x}.dg${process.pid}.example.com`)
    for (const domain of domains) {
      const res = await b.h.request('POST', `/v1/instances/${instances[0].id}/domains`, { domain }, bearer(user.token))
      t.equal(res.status, 201, `add ${domain}`)
      b.clock.advance(1)
    }
    await db('custom_domains').whereIn('domain', domains).update({ status: 'verified', verified_at: b.clock.now() })
    const before = await b.h.services.tunnel.listPeers()
    t.same(before.find(p => p.instanceId === instances[0].id)?.hostnames.slice(1).sort(), [...domains].sort(), 'verified domains are routed')

    const end = b.seconds()
    await mustDeliver(t, b, b.fake.event('customer.subscription.deleted', b.fake.updateSubscription(subscription.id, { status: 'canceled', canceledAt: end, endedAt: end }), end))
    t.match(await subscriptionOf(b, user.token), { status: 'canceled', plan: 'free' })
    const routed = await peerIds(b)
    t.ok(routed.includes(instances[0].id), 'oldest instance kept')
    for (const i of instances.slice(1)) t.notOk(routed.includes(i.id), `${i.id} suspended`)
    t.same((await b.h.services.tunnel.listPeers()).find(p => p.instanceId === instances[0].id)?.hostnames.length, 1, 'Free: no custom domain served')
    const list = await b.h.request('GET', `/v1/instances/${instances[0].id}/domains`, undefined, bearer(user.token))
    t.same(list.body.domains.map((d: Json) => [d.status, d.ssl_status]), [['suspended', 'none'], ['suspended', 'none'], ['suspended', 'none']])
    const reg = await b.h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(instances[3].token))
    assertError(t, reg, 'SUBSCRIPTION_REQUIRED', 'a suspended instance cannot register')
    t.equal((await b.h.request('GET', '/v1/instances', undefined, bearer(user.token))).body.instances.length, 4, 'nothing deleted')

    // Pro: three instances, one domain per instance.
    const { subscription: proSubscription } = await subscribe(t, b, user.token, 'pro')
    const pro = await peerIds(b)
    t.same(instances.map(i => pro.includes(i.id)), [true, true, true, false], 'Pro: the three oldest instances back')
    t.same((await b.h.services.tunnel.listPeers()).find(p => p.instanceId === instances[0].id)?.hostnames.slice(1), [domains[0]], 'Pro: the oldest domain back')
    t.equal(((await b.h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(instances[1].token))).status), 200, 'a restored instance registers again')

    // Business through the portal (price change): everything back.
    await mustDeliver(t, b, b.fake.event('customer.subscription.updated', b.fake.updateSubscription(proSubscription.id, { price: b.fake.prices.business }), b.seconds() + 1))
    t.match(await subscriptionOf(b, user.token), { status: 'active', plan: 'business' })
    const all = await peerIds(b)
    t.ok(instances.every(i => all.includes(i.id)), 'Business: all four instances')
    t.same((await b.h.services.tunnel.listPeers()).find(p => p.instanceId === instances[0].id)?.hostnames.slice(1).sort(), [...domains].sort(), 'Business: all three domains')
  })

  t.test('a database failure mid-webhook answers 5xx and records nothing; the retry succeeds', async t => {
    const b = await startBillingApp(t, db)
    const user = await newUser(b.h, 'dbfail')
    const { events } = await subscribe(t, b, user.token, 'pro', { deliver: false })
    // Fails inside the transaction, after the event id was inserted.
    const drop = await failSubscriptionWrites(t, db, 'cc_test_fail')
    const failed = await deliver(b, events[0])
    t.ok(failed.status >= 500, `5xx so Stripe retries (got ${failed.status})`)
    t.equal(failed.body?.error?.code !== undefined, true, 'in the contract\'s shape')
    t.equal(await db('stripe_events').where({ id: events[0].id }).first() as unknown, undefined, 'event id rolled back with the effect')
    t.match(await subscriptionOf(b, user.token), { status: 'none', plan: 'free' })
    await drop()
    const retry = await deliver(b, events[0])
    t.same(retry.body, { received: true, duplicate: false }, 'the retry is processed')
    t.match(await subscriptionOf(b, user.token), { status: 'active', plan: 'pro' })
    t.same((await deliver(b, events[0])).body, { received: true, duplicate: true })

    b.clock.advance(29 * DAY)
    await b.h.services.billing.pruneEvents()
    t.ok(await db('stripe_events').where({ id: events[0].id }).first(), 'event ids kept well past Stripe\'s three days of retries')
    b.clock.advance(2 * DAY)
    t.ok(await b.h.services.billing.pruneEvents() >= 1, 'then forgotten')
    t.equal(await db('stripe_events').where({ id: events[0].id }).first() as unknown, undefined)
    const replay = await deliver(b, events[0], { timestamp: Number(events[0].created) })
    assertError(t, replay, 'WEBHOOK_SIGNATURE_INVALID', 'a delivery that old cannot be replayed: its signature is stale')
  })
})
