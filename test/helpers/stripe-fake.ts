/**
 * A local HTTP server speaking the few Stripe API endpoints the control plane calls, so the real
 * Stripe SDK can be pointed at it (CC_STRIPE_API_BASE): customers (with Idempotency-Key),
 * Checkout sessions, subscriptions (with expand[]=default_payment_method), payment methods and
 * Customer Portal sessions. Requests are form-encoded as the SDK sends them and answered with
 * objects shaped like API version 2026-10-28 (period on the subscription item, invoice parent).
 *
 * Tests drive the "Stripe side" through it: complete a checkout, change a subscription, and build
 * events whose signature comes from the SDK's own stripe.webhooks.generateTestHeaderString.
 */
import type { Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { AddressInfo } from 'node:net'
import Stripe from 'stripe'

type Json = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any

export interface RecordedRequest {
  method: string
  path: string
  body: Json
  headers: Record<string, string | string[] | undefined>
}

function rid (prefix: string): string {
  return `${prefix}_${randomBytes(12).toString('hex')}`
}

/** `a[b][0][c]=v` (what the SDK sends) -> nested objects; numeric keys make arrays. */
export function parseForm (text: string): Json {
  const root: Json = {}
  for (const [key, value] of new URLSearchParams(text)) {
    const path = key.replace(/\]/g, '').split('[')
    let node: Json = root
    path.forEach((part, i) => {
      if (i === path.length - 1) {
        node[part] = value
        return
      }
      node[part] ??= /^\d+$/.test(path[i + 1]) ? [] : {}
      node = node[part]
    })
  }
  return root
}

const DAY = 24 * 3600

export class StripeFake {
  readonly secretKey = `sk_test_${randomBytes(12).toString('hex')}`
  readonly webhookSecret = `whsec_${randomBytes(24).toString('base64').replace(/[^A-Za-z0-9]/g, '')}`
  readonly prices = { pro: 'price_pro0000000001', business: 'price_business000001' }
  readonly requests: RecordedRequest[] = []
  readonly customers = new Map<string, Json>()
  readonly sessions = new Map<string, Json>()
  readonly subscriptions = new Map<string, Json>()
  readonly paymentMethods = new Map<string, Json>()
  readonly portalSessions = new Map<string, Json>()
  /** The SDK, only for its webhook test-header helper. */
  readonly sdk = new Stripe('sk_test_signing_only', { telemetry: false })
  #idempotent = new Map<string, Json>()
  #failures = 0
  #server: Server
  url = ''

  private constructor () {
    this.#server = createServer((req, res) => { this.#handle(req, res) })
  }

  static async start (t: Test): Promise<StripeFake> {
    const fake = new StripeFake()
    await new Promise<void>(resolve => fake.#server.listen(0, '127.0.0.1', resolve))
    fake.url = `http://127.0.0.1:${(fake.#server.address() as AddressInfo).port}`
    t.teardown(async () => {
      fake.#server.closeAllConnections()
      await new Promise<void>(resolve => fake.#server.close(() => { resolve() }))
    })
    return fake
  }

  /** Environment that points the control plane at this fake. */
  env (extra: Record<string, string> = {}): Record<string, string> {
    return {
      CC_STRIPE_SECRET_KEY: this.secretKey,
      CC_STRIPE_WEBHOOK_SECRET: this.webhookSecret,
      CC_STRIPE_PRICE_PRO: this.prices.pro,
      CC_STRIPE_PRICE_BUSINESS: this.prices.business,
      CC_STRIPE_API_BASE: this.url,
      ...extra,
    }
  }

  /** The next `n` API requests answer 500 (the SDK retries a few times itself). */
  failNext (n: number): void {
    this.#failures = n
  }

  requestsTo (method: string, path: string): RecordedRequest[] {
    return this.requests.filter(r => r.method === method && r.path === path)
  }

  #handle (req: IncomingMessage, res: ServerResponse): void {
    let raw = ''
    req.setEncoding('utf8')
    req.on('data', chunk => { raw += chunk })
    req.on('end', () => {
      const url = new URL(req.url ?? '/', 'http://fake')
      const body = req.method === 'GET' ? parseForm(url.search.slice(1)) : parseForm(raw)
      this.requests.push({ method: req.method ?? '', path: url.pathname, body, headers: req.headers })
      const send = (status: number, payload: Json): void => {
        res.writeHead(status, { 'content-type': 'application/json', 'request-id': rid('req') })
        res.end(JSON.stringify(payload))
      }
      if (req.headers.authorization !== `Bearer ${this.secretKey}`) {
        send(401, { error: { type: 'invalid_request_error', message: 'Invalid API Key provided' } })
        return
      }
      if (this.#failures > 0) {
        this.#failures--
        send(500, { error: { type: 'api_error', message: 'Something went wrong on our end' } })
        return
      }
      try {
        const [status, payload] = this.#route(req.method ?? '', url.pathname, body, req.headers['idempotency-key'] as string | undefined)
        send(status, payload)
      } catch (err) {
        send(400, { error: { type: 'invalid_request_error', message: (err as Error).message } })
      }
    })
  }

  #route (method: string, path: string, body: Json, idempotencyKey: string | undefined): [number, Json] {
    let m: RegExpExecArray | null
    if (method === 'POST' && path === '/v1/customers') {
      if (idempotencyKey !== undefined && this.#idempotent.has(idempotencyKey)) return [200, this.#idempotent.get(idempotencyKey)!]
      const customer = { id: rid('cus'), object: 'customer', email: body.email ?? null, name: body.name ?? null, metadata: body.metadata ?? {}, created: now() }
      this.customers.set(customer.id, customer)
      if (idempotencyKey !== undefined) this.#idempotent.set(idempotencyKey, customer)
      return [200, customer]
    }
    if (method === 'POST' && path === '/v1/checkout/sessions') {
      const price = body.line_items?.[0]?.price
      if (body.mode !== 'subscription') throw new Error('mode must be subscription here')
      if (!this.customers.has(body.customer)) throw new Error(`No such customer: '${String(body.customer)}'`)
      if (price !== this.prices.pro && price !== this.prices.business) throw new Error(`No such price: '${String(price)}'`)
      if (typeof body.success_url !== 'string' || typeof body.cancel_url !== 'string') throw new Error('success_url and cancel_url are required')
      const id = rid('cs_test')
      const session = {
        id,
        object: 'checkout.session',
        mode: 'subscription',
        status: 'open',
        payment_status: 'unpaid',
        customer: body.customer,
        client_reference_id: body.client_reference_id ?? null,
        success_url: body.success_url,
        cancel_url: body.cancel_url,
        metadata: body.metadata ?? {},
        subscription: null,
        url: `https://checkout.stripe.test/c/pay/${id}`,
        line_items: body.line_items,
        subscription_data: body.subscription_data ?? {},
        created: now(),
      }
      this.sessions.set(id, session)
      return [200, session]
    }
    if (method === 'GET' && (m = /^\/v1\/subscriptions\/([\w]+)$/.exec(path)) !== null) {
      const sub = this.subscriptions.get(m[1])
      if (sub === undefined) return [404, { error: { type: 'invalid_request_error', message: `No such subscription: '${m[1]}'` } }]
      const copy = structuredClone(sub)
      const expand: string[] = Array.isArray(body.expand) ? body.expand : []
      if (expand.includes('default_payment_method') && typeof copy.default_payment_method === 'string') {
        copy.default_payment_method = this.paymentMethods.get(copy.default_payment_method) ?? copy.default_payment_method
      }
      return [200, copy]
    }
    if (method === 'GET' && (m = /^\/v1\/payment_methods\/([\w]+)$/.exec(path)) !== null) {
      const pm = this.paymentMethods.get(m[1])
      if (pm === undefined) return [404, { error: { type: 'invalid_request_error', message: `No such PaymentMethod: '${m[1]}'` } }]
      return [200, pm]
    }
    if (method === 'POST' && path === '/v1/billing_portal/sessions') {
      if (!this.customers.has(body.customer)) throw new Error(`No such customer: '${String(body.customer)}'`)
      const id = rid('bps')
      const session = { id, object: 'billing_portal.session', customer: body.customer, return_url: body.return_url ?? null, url: `https://billing.stripe.test/p/session/${id}`, created: now() }
      this.portalSessions.set(id, session)
      return [200, session]
    }
    return [404, { error: { type: 'invalid_request_error', message: `Unrecognized request URL (${method}: ${path})` } }]
  }

  // The Stripe side of a scenario.

  addCard (brand = 'visa', last4 = '4242'): Json {
    const pm = { id: rid('pm'), object: 'payment_method', type: 'card', card: { brand, last4, exp_month: 12, exp_year: 2030 } }
    this.paymentMethods.set(pm.id, pm)
    return pm
  }

  /** The payer completes Checkout: a subscription exists (status `status`), the session is complete. */
  completeCheckout (sessionId: string, options: { at: number, status?: string, card?: Json } = { at: now() }): { session: Json, subscription: Json } {
    const session = this.sessions.get(sessionId)
    if (session === undefined) throw new Error(`no session ${sessionId}`)
    const card = options.card ?? this.addCard()
    const subscription = this.createSubscription({
      customer: session.customer,
      price: session.line_items[0].price,
      at: options.at,
      status: options.status ?? 'active',
      paymentMethod: card.id,
      metadata: session.subscription_data?.metadata ?? {},
    })
    Object.assign(session, { status: 'complete', payment_status: 'paid', subscription: subscription.id })
    return { session: structuredClone(session), subscription: structuredClone(subscription) }
  }

  createSubscription (o: { customer: string, price: string, at: number, status?: string, paymentMethod?: string | null, metadata?: Json }): Json {
    const id = rid('sub')
    const sub = {
      id,
      object: 'subscription',
      customer: o.customer,
      status: o.status ?? 'active',
      created: o.at,
      start_date: o.at,
      cancel_at: null,
      cancel_at_period_end: false,
      canceled_at: null,
      ended_at: null,
      default_payment_method: o.paymentMethod ?? null,
      latest_invoice: null,
      metadata: o.metadata ?? {},
      items: {
        object: 'list',
        data: [{ id: rid('si'), object: 'subscription_item', quantity: 1, price: { id: o.price, object: 'price' }, current_period_start: o.at, current_period_end: o.at + 30 * DAY }],
      },
    }
    this.subscriptions.set(id, sub)
    return structuredClone(sub)
  }

  /** Changes the subscription as Stripe would; returns a copy of its new state (for an event). */
  updateSubscription (id: string, patch: { status?: string, price?: string, periodStart?: number, cancelAtPeriodEnd?: boolean, canceledAt?: number | null, endedAt?: number | null, paymentMethod?: string | null }): Json {
    const sub = this.subscriptions.get(id)
    if (sub === undefined) throw new Error(`no subscription ${id}`)
    if (patch.status !== undefined) sub.status = patch.status
    if (patch.price !== undefined) sub.items.data[0].price = { id: patch.price, object: 'price' }
    if (patch.periodStart !== undefined) Object.assign(sub.items.data[0], { current_period_start: patch.periodStart, current_period_end: patch.periodStart + 30 * DAY })
    if (patch.cancelAtPeriodEnd !== undefined) sub.cancel_at_period_end = patch.cancelAtPeriodEnd
    if (patch.canceledAt !== undefined) sub.canceled_at = patch.canceledAt
    if (patch.endedAt !== undefined) sub.ended_at = patch.endedAt
    if (patch.paymentMethod !== undefined) sub.default_payment_method = patch.paymentMethod
    return structuredClone(sub)
  }

  /** An invoice of `subscriptionId` whose payment failed (attempt `attempt`). */
  failedInvoice (subscriptionId: string, o: { at: number, attempt?: number, nextAttempt?: number | null }): Json {
    const sub = this.subscriptions.get(subscriptionId)!
    return {
      id: rid('in'),
      object: 'invoice',
      customer: sub.customer,
      status: 'open',
      amount_due: 500,
      currency: 'usd',
      attempt_count: o.attempt ?? 1,
      next_payment_attempt: o.nextAttempt === undefined ? o.at + 3 * DAY : o.nextAttempt,
      created: o.at,
      parent: { type: 'subscription_details', subscription_details: { subscription: subscriptionId, metadata: sub.metadata } },
    }
  }

  /** A webhook event around `object` as it is now. */
  event (type: string, object: Json, created: number): Json {
    return { id: rid('evt'), object: 'event', api_version: '2026-10-28.endive', created, livemode: false, pending_webhooks: 1, request: { id: null, idempotency_key: null }, type, data: { object: structuredClone(object) } }
  }

  /** Stripe-Signature for `payload`, by the SDK's own helper. */
  sign (payload: string, options: { timestamp?: number, secret?: string } = {}): string {
    return this.sdk.webhooks.generateTestHeaderString({ payload, secret: options.secret ?? this.webhookSecret, timestamp: options.timestamp })
  }
}

function now (): number {
  return Math.floor(Date.now() / 1000)
}
