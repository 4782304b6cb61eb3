/**
 * The few Stripe calls we make, through the official SDK: customers, Checkout and Customer Portal
 * sessions, reading a subscription or a payment method, and webhook signature verification. The
 * API base URL is configurable (CC_STRIPE_API_BASE), which is how tests point the SDK at a local
 * fake. SDK failures become BILLING_PROVIDER_ERROR (502) without Stripe's internals.
 */
import Stripe from 'stripe'
import type { Logger } from 'pino'
import type { StripeConfig } from '../config.ts'
import { apiError } from '../errors.ts'

export type StripeSubscription = Stripe.Subscription
export type StripeEvent = Stripe.Event
export type StripeInvoice = Stripe.Invoice
export type StripeCheckoutSession = Stripe.Checkout.Session

export interface PaymentMethodCard {
  id: string
  brand: string
  last4: string
}

export interface CheckoutSessionInput {
  customerId: string
  priceId: string
  userId: string
  plan: string
  successUrl: string
  cancelUrl: string
}

/** The `t=` of a Stripe-Signature header (seconds), or undefined. */
export function signatureTimestamp (header: string): number | undefined {
  for (const part of header.split(',')) {
    const [key, value] = part.split('=', 2)
    if (key.trim() === 't' && /^\d{1,12}$/.test(value ?? '')) return Number(value)
  }
  return undefined
}

/** brand/last4 of a payment method object (cards; other kinds report their type as the brand). */
export function cardOf (pm: Stripe.PaymentMethod): PaymentMethodCard | undefined {
  if (pm.card != null) return { id: pm.id, brand: pm.card.brand, last4: pm.card.last4 }
  const details = (pm as unknown as Record<string, unknown>)[pm.type] as { last4?: unknown } | undefined
  if (typeof details?.last4 === 'string') return { id: pm.id, brand: pm.type, last4: details.last4 }
  return undefined
}

export class StripeClient {
  readonly #stripe: Stripe
  readonly #config: StripeConfig
  readonly #logger: Logger

  constructor (config: StripeConfig, logger: Logger) {
    const base = new URL(config.apiBase)
    this.#config = config
    this.#logger = logger
    this.#stripe = new Stripe(config.secretKey, {
      host: base.hostname,
      port: base.port === '' ? (base.protocol === 'https:' ? 443 : 80) : Number(base.port),
      protocol: base.protocol === 'https:' ? 'https' : 'http',
      maxNetworkRetries: 2,
      timeout: 15_000,
      telemetry: false,
      appInfo: { name: 'erugo-cloud-connect' },
    })
  }

  get prices (): StripeConfig['prices'] {
    return this.#config.prices
  }

  async #call<T> (what: string, body: () => Promise<T>): Promise<T> {
    try {
      return await body()
    } catch (err) {
      const e = err as { type?: string, code?: string, statusCode?: number, message?: string }
      this.#logger.warn({ call: what, type: e.type, code: e.code, status: e.statusCode, err: e.message }, 'stripe call failed')
      throw apiError('BILLING_PROVIDER_ERROR', 'The payment provider could not complete the request, try again shortly', { call: what })
    }
  }

  /** One customer per user: the idempotency key makes a retried or concurrent create return the same one. */
  async createCustomer (userId: string, email: string, name: string): Promise<string> {
    const customer = await this.#call('customers.create', async () => await this.#stripe.customers.create(
      { email, name, metadata: { user_id: userId } },
      { idempotencyKey: `cc-customer-${userId}` },
    ))
    return customer.id
  }

  async createCheckoutSession (input: CheckoutSessionInput): Promise<{ id: string, url: string }> {
    const session = await this.#call('checkout.sessions.create', async () => await this.#stripe.checkout.sessions.create({
      mode: 'subscription',
      customer: input.customerId,
      client_reference_id: input.userId,
      line_items: [{ price: input.priceId, quantity: 1 }],
      success_url: input.successUrl,
      cancel_url: input.cancelUrl,
      metadata: { user_id: input.userId, plan: input.plan },
      subscription_data: { metadata: { user_id: input.userId, plan: input.plan } },
    }))
    if (session.url == null) throw apiError('BILLING_PROVIDER_ERROR', 'The payment provider returned no checkout URL', {})
    return { id: session.id, url: session.url }
  }

  async createPortalSession (customerId: string, returnUrl: string): Promise<string> {
    const session = await this.#call('billing_portal.sessions.create', async () => await this.#stripe.billingPortal.sessions.create({ customer: customerId, return_url: returnUrl }))
    return session.url
  }

  async retrieveSubscription (id: string): Promise<Stripe.Subscription> {
    return await this.#call('subscriptions.retrieve', async () => await this.#stripe.subscriptions.retrieve(id, { expand: ['default_payment_method'] }))
  }

  async retrievePaymentMethod (id: string): Promise<PaymentMethodCard | undefined> {
    return cardOf(await this.#call('payment_methods.retrieve', async () => await this.#stripe.paymentMethods.retrieve(id)))
  }

  /**
   * Verifies the Stripe-Signature header over the raw body with the SDK (HMAC-SHA256, constant-time
   * compare, at most `toleranceSeconds` old), then refuses a timestamp more than the tolerance in
   * the future too, which the SDK lets through: such a signature would stay replayable for longer.
   * Throws WEBHOOK_SIGNATURE_INVALID.
   */
  verifyEvent (rawBody: Buffer, header: string | undefined, toleranceSeconds: number, now: Date): Stripe.Event {
    const invalid = (why: string): Error => apiError('WEBHOOK_SIGNATURE_INVALID', `Invalid Stripe signature: ${why}`)
    if (header === undefined || header === '') throw invalid('the Stripe-Signature header is missing')
    let event: Stripe.Event
    try {
      event = this.#stripe.webhooks.constructEvent(rawBody, header, this.#config.webhookSecret, toleranceSeconds, undefined, now.getTime())
    } catch (err) {
      if (err instanceof Stripe.errors.StripeSignatureVerificationError) {
        throw invalid(/tolerance/.test(err.message) ? 'the timestamp is too old' : 'no signature matches the body')
      }
      throw apiError('BAD_REQUEST', 'The webhook body is not a JSON event')
    }
    const t = signatureTimestamp(header)
    if (t === undefined || t - Math.floor(now.getTime() / 1000) > toleranceSeconds) throw invalid('the timestamp is in the future')
    return event
  }
}
