/** Spec "Billing Endpoints": /v1/billing/*. Logic in services/billing.ts and services/stripe-webhook.ts. */
import type { Plugin } from '@hapi/hapi'
import { Joi } from '../schemas.ts'
import type { CheckoutRequest, PortalRequest } from '../../proto/api/billing.ts'
import * as S from '../schemas.ts'
import type { Services } from '../services/index.ts'
import { plansBody } from '../services/plans.ts'

const tags = ['billing']

const checkoutResponse = Joi.object({
  checkout_url: Joi.string().uri().required(),
  session_id: Joi.string().required(),
  poll_interval: Joi.number().integer().min(1).required(),
}).label('CheckoutResponse')

const planLimits = {
  instances: Joi.number().integer().min(0).required().description('Instances the plan allows'),
  custom_domains_per_instance: Joi.number().integer().min(0).required().description('Custom domains the plan allows on each instance; 0: none'),
}

const subscriptionResponse = Joi.object({
  status: S.subscriptionStatus.required(),
  plan: S.subscriptionPlan.required(),
  current_period_start: S.timestamp.allow(null).required(),
  current_period_end: S.timestamp.allow(null).required(),
  cancel_at_period_end: Joi.boolean().required(),
  payment_method: Joi.object({ brand: Joi.string().required(), last4: Joi.string().required() }).allow(null).required(),
  limits: Joi.object(planLimits).required().label('PlanLimits').description('What `plan` allows (an addition to the spec\'s body)'),
  usage: Joi.object({
    instances: Joi.number().integer().min(0).required().description('The account\'s instances, suspended ones included (what limits.instances counts)'),
    custom_domains: Joi.number().integer().min(0).required().description('Custom domains across all instances, pending verification included'),
    custom_domains_max_per_instance: Joi.number().integer().min(0).required().description('The most custom domains any one instance has (what limits.custom_domains_per_instance counts)'),
  }).required().label('PlanUsage').description('What the account holds now, counted as the limits count it (an addition to the spec\'s body)'),
}).label('Subscription')

const plansResponse = Joi.object({
  plans: Joi.array().items(Joi.object({ plan: S.subscriptionPlan.required(), ...planLimits }).label('Plan')).required().description('Every plan, cheapest first'),
}).label('Plans')

/** Stripe events are small; a cap well above them keeps a flood of junk cheap. */
const WEBHOOK_MAX_BYTES = 512 * 1024

export const billingRoutes: Plugin<Services> = {
  name: 'cc-routes-billing',
  register (server, services) {
    const { billing, webhooks } = services

    server.route({
      method: 'POST',
      path: '/billing/checkout',
      options: {
        description: 'Start a Stripe Checkout session for a paid plan',
        notes: 'Stripe returns to the server\'s own /billing/success and /billing/cancel pages; poll GET /v1/billing/subscription every poll_interval ms to see the result.',
        tags,
        app: { verifiedEmail: true },
        plugins: { openapi: { errors: ['ALREADY_SUBSCRIBED', 'BILLING_NOT_CONFIGURED', 'BILLING_PROVIDER_ERROR'] } },
        validate: { payload: Joi.object({ plan: Joi.string().valid('pro', 'business').required() }).label('CheckoutRequest') },
        response: { status: { 200: checkoutResponse } },
      },
      async handler (request) {
        return await billing.checkout(request.auth.credentials.user!.id, (request.payload as CheckoutRequest).plan)
      },
    })

    server.route({
      method: 'GET',
      path: '/billing/subscription',
      options: {
        description: 'The plan in force and its subscription (the free plan when there is none), with its limits and the account\'s usage',
        tags,
        response: { status: { 200: subscriptionResponse } },
      },
      async handler (request) {
        return await billing.subscription(request.auth.credentials.user!.id)
      },
    })

    server.route({
      method: 'GET',
      path: '/billing/plans',
      options: {
        description: 'Every plan and its limits (spec "Subscription Plans"), cheapest first',
        notes: 'The limits the server enforces: creating an instance or custom domain beyond them answers 403 LIMIT_EXCEEDED (or SUBSCRIPTION_REQUIRED for custom domains on a plan without any).',
        tags,
        response: { status: { 200: plansResponse } },
      },
      handler () {
        return plansBody()
      },
    })

    server.route({
      method: 'POST',
      path: '/billing/portal',
      options: {
        description: 'Open the Stripe Customer Portal (payment method, invoices, plan changes, cancellation)',
        notes: 'return_url must start with one of the server\'s allowed return URLs (CC_BILLING_PORTAL_RETURN_URLS); default: the first of them.',
        tags,
        plugins: { openapi: { errors: ['BILLING_NOT_CONFIGURED', 'BILLING_PROVIDER_ERROR'] } },
        validate: { payload: Joi.object({ return_url: Joi.string().max(2048).uri({ scheme: ['http', 'https'] }) }).allow(null).label('PortalRequest') },
        response: { status: { 200: Joi.object({ portal_url: Joi.string().uri().required() }).label('PortalResponse') } },
      },
      async handler (request) {
        return await billing.portal(request.auth.credentials.user!.id, (request.payload as PortalRequest | null)?.return_url)
      },
    })

    server.route({
      method: 'POST',
      path: '/billing/webhook',
      options: {
        auth: false,
        description: 'Stripe webhook (verified by the Stripe-Signature header)',
        notes: 'Handles checkout.session.completed, customer.subscription.created/updated/deleted and invoice.payment_failed; anything else is acknowledged and ignored. 5xx makes Stripe retry.',
        tags,
        plugins: { openapi: { errors: ['WEBHOOK_SIGNATURE_INVALID', 'BAD_REQUEST', 'BILLING_NOT_CONFIGURED', 'INTERNAL_ERROR'] } },
        // The signature covers the exact bytes: never parse before verifying.
        payload: { parse: false, output: 'data', maxBytes: WEBHOOK_MAX_BYTES },
        response: { status: { 200: Joi.object({ received: Joi.boolean().valid(true).required(), duplicate: Joi.boolean().required() }).label('WebhookResponse') } },
      },
      async handler (request) {
        const body = Buffer.isBuffer(request.payload) ? request.payload : Buffer.alloc(0)
        const signature = request.headers['stripe-signature']
        return await webhooks.handle(body, typeof signature === 'string' ? signature : undefined)
      },
    })
  },
}
