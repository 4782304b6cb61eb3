// Stripe webhooks with two control replicas on one Postgres (behind a balancer Stripe's retries
// and duplicates land on either): each event is applied, and its mail sent, once in all.
import t from 'tap'
import { openTestDatabase, startApp } from '../harness.ts'
import { postgresOrSkip } from '../../helpers/postgres.ts'
import { deliver, startBillingApp, subscribe, type BillingHarness } from './billing-fixtures.ts'
import { BASE_DOMAIN, GATEWAY_ENDPOINT, GATEWAY_KEY, newUser } from './tunnel-fixtures.ts'

if (await postgresOrSkip(t, 'webhooks on two replicas', 'replicas need a real Postgres server') !== undefined) {
  t.test('one event delivered to both replicas at the same moment -> processed once, one mail', async t => {
    const db = await openTestDatabase(t, 'postgres')
    const a = await startBillingApp(t, db)
    const other = await startApp(t, db, {
      env: { CC_GATEWAY_PUBLIC_KEY: GATEWAY_KEY, CC_GATEWAY_ENDPOINT: GATEWAY_ENDPOINT, CC_BASE_DOMAIN: BASE_DOMAIN, ...a.fake.env() },
      deps: { now: a.clock.now },
    })
    const b: BillingHarness = { ...a, h: other }
    const user = await newUser(a.h, 'replicas')
    const { subscription } = await subscribe(t, a, user.token, 'pro')

    const ROUNDS = 5
    const eventIds: string[] = []
    for (let i = 0; i < ROUNDS; i++) {
      const invoice = a.fake.failedInvoice(subscription.id, { at: a.seconds() })
      const event = a.fake.event('invoice.payment_failed', invoice, a.seconds())
      eventIds.push(event.id as string)
      const replies = await Promise.all([deliver(a, event), deliver(b, event), deliver(a, event), deliver(b, event)])
      t.same(replies.map(r => r.status), [200, 200, 200, 200], `round ${i + 1}: every copy acknowledged`)
      t.equal(replies.filter(r => r.body.duplicate === false).length, 1, `round ${i + 1}: exactly one copy processed`)
    }
    const stored = await db('stripe_events').whereIn('id', eventIds).count('* as n').first() as { n: string }
    t.equal(Number(stored.n), ROUNDS, 'one stored row per event')
    await a.h.services.mailer.drain()
    await b.h.services.mailer.drain()
    const mails = [...a.h.mail.messages, ...b.h.mail.messages].filter(m => m.subject.includes('payment failed') && m.to.startsWith('replicas-'))
    t.equal(mails.length, ROUNDS, 'one payment-failed mail per event over both replicas')
  })
}
