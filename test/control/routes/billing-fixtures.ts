/** Shared set-up for the billing tests: the app pointed at the Stripe fake, on a settable clock. */
import type { Test } from 'tap'
import type { AppDeps } from '../../../control/app.ts'
import type { Db } from '../../../control/db/knex.ts'
import { StripeFake } from '../../helpers/stripe-fake.ts'
import { bearer, PASSWORD, startApp, type Reply, type TestApp } from '../harness.ts'
import { BASE_DOMAIN, Clock, GATEWAY_ENDPOINT, GATEWAY_KEY, newUser } from './tunnel-fixtures.ts'

type Json = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any

export interface BillingHarness {
  h: TestApp
  fake: StripeFake
  clock: Clock
  /** The clock in Stripe's unit (seconds). */
  seconds (): number
}

export async function startBillingApp (t: Test, db: Db, options: { env?: Record<string, string>, clock?: Clock, deps?: Partial<AppDeps> } = {}): Promise<BillingHarness> {
  const fake = await StripeFake.start(t)
  const clock = options.clock ?? new Clock()
  const h = await startApp(t, db, {
    env: { CC_GATEWAY_PUBLIC_KEY: GATEWAY_KEY, CC_GATEWAY_ENDPOINT: GATEWAY_ENDPOINT, CC_BASE_DOMAIN: BASE_DOMAIN, ...fake.env(), ...options.env },
    deps: { now: clock.now, ...options.deps },
  })
  return { h, fake, clock, seconds: () => Math.floor(clock.time / 1000) }
}

export interface DeliverOptions {
  /** Signature timestamp (seconds); default: the app's clock. */
  timestamp?: number
  secret?: string
  /** Send this body instead of the signed one (tampering). */
  body?: string
  /** Send this header instead of a computed one. */
  header?: string | null
}

/** POSTs an event to the webhook as Stripe would: the exact JSON bytes, signed. */
export async function deliver (b: BillingHarness, event: Json, options: DeliverOptions = {}): Promise<Reply> {
  const payload = JSON.stringify(event, null, 2)
  const header = options.header !== undefined ? options.header : b.fake.sign(payload, { timestamp: options.timestamp ?? b.seconds(), secret: options.secret })
  const headers: Record<string, string> = { 'content-type': 'application/json; charset=utf-8' }
  if (header !== null) headers['stripe-signature'] = header
  return await b.h.request('POST', '/v1/billing/webhook', options.body ?? payload, headers)
}

/** Delivers and fails the test unless Stripe would count it delivered (2xx). */
export async function mustDeliver (t: Test, b: BillingHarness, event: Json): Promise<Reply> {
  const res = await deliver(b, event)
  if (res.status !== 200) t.fail(`${String(event.type)} ${String(event.id)}: ${res.status} ${res.raw}`)
  return res
}

export interface Subscribed {
  sessionId: string
  subscription: Json
  events: Json[]
}

/**
 * A user goes through Checkout for `plan` and Stripe sends what it sends for that: the
 * subscription created, then checkout.session.completed. Returns the subscription and events.
 */
export async function subscribe (t: Test, b: BillingHarness, token: string, plan: 'pro' | 'business', options: { deliver?: boolean } = {}): Promise<Subscribed> {
  const res = await b.h.request('POST', '/v1/billing/checkout', { plan }, bearer(token))
  if (res.status !== 200) t.fail(`checkout ${plan}: ${res.status} ${res.raw}`)
  const at = b.seconds()
  const { session, subscription } = b.fake.completeCheckout(res.body.session_id, { at })
  const events = [b.fake.event('customer.subscription.created', subscription, at), b.fake.event('checkout.session.completed', session, at)]
  if (options.deliver !== false) for (const e of events) await mustDeliver(t, b, e)
  return { sessionId: res.body.session_id, subscription, events }
}

export async function subscriptionOf (b: BillingHarness, token: string): Promise<Json> {
  return (await b.h.request('GET', '/v1/billing/subscription', undefined, bearer(token))).body
}

/** A new access token for `userId` (after the clock moved past the 15-minute access TTL). */
export async function relogin (b: BillingHarness, userId: string): Promise<string> {
  const row = await b.h.services.db('users').where({ id: userId }).first('email') as { email: string }
  const res = await b.h.request('POST', '/v1/auth/login', { email: row.email, password: PASSWORD })
  if (res.status !== 200) throw new Error(`login ${row.email}: ${res.status} ${res.raw}`)
  return res.body.access_token
}

/**
 * Every write to billing_subscriptions fails ('P0001: injected failure', inside the webhook's
 * transaction) until the answered function lifts it; teardown lifts it too. `name` keeps the
 * trigger of one test from another's.
 */
export async function failSubscriptionWrites (t: Test, db: Db, name: string): Promise<() => Promise<void>> {
  await db.raw(`create or replace function ${name}() returns trigger language plpgsql as $$ begin raise exception 'injected failure'; end $$`)
  await db.raw(`create trigger ${name} before insert or update on billing_subscriptions for each row execute function ${name}()`)
  let dropped = false
  const lift = async (): Promise<void> => {
    if (dropped) return
    dropped = true
    await db.raw(`drop trigger if exists ${name} on billing_subscriptions`)
  }
  t.teardown(lift)
  return lift
}

export { newUser }
