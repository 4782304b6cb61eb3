/** Operator endpoints (not in the spec): administrators only (users.role, `cloud-connect admin grant`). */
import type { Plugin } from '@hapi/hapi'
import { ADMIN_LIMITS, CANCELLATION_WINDOW_DAYS, CERTIFICATE_EXPIRY_WINDOW_DAYS, type AdminOverview } from '../../proto/api/admin.ts'
import { Joi } from '../schemas.ts'
import * as S from '../schemas.ts'
import type { Services } from '../services/index.ts'

const nullableTimestamp = S.timestamp.allow(null)

const overview = Joi.object({
  gateways: Joi.array().max(ADMIN_LIMITS.gateways).items(Joi.object({
    id: Joi.string().required(),
    endpoint: Joi.string().allow(null).required().description('host:port containers are told (null: the configured endpoint with its listen port)'),
    software: Joi.string().allow(null).required(),
    hello_at: S.timestamp.required(),
    last_report_at: nullableTimestamp.required().description('Latest report; null: none since its hello'),
    peer_count: Joi.number().integer().min(0).allow(null).required().description('WireGuard peers in the latest report'),
    region: Joi.string().allow(null).required().description('CC_GATEWAY_REGION (null: none)'),
    alive: Joi.boolean().required().description('A hello or report within the alive window (3 report intervals, at least 15 s), as last published'),
    draining: Joi.boolean().required().description('Set by `cloud-connect gateway drain`: takes no new placements, its instances are moved to other gateways'),
    placed_instances: Joi.number().integer().min(0).required().description('Instances placed on it, as primary or backup'),
  }).label('AdminGateway')).required().description(`Newest hello first, at most ${ADMIN_LIMITS.gateways}`),
  instances: Joi.array().max(ADMIN_LIMITS.instances).items(Joi.object({
    id: Joi.string().required(),
    name: Joi.string().required(),
    subdomain: Joi.string().required(),
    owner_email: Joi.string().required(),
    status: Joi.string().valid('pending', 'connected', 'disconnected', 'suspended').required(),
    last_seen: nullableTimestamp.required(),
    created_at: S.timestamp.required(),
  }).label('AdminInstance')).required().description(`Every user's instances, newest first, at most ${ADMIN_LIMITS.instances}`),
  recent_signups: Joi.array().max(ADMIN_LIMITS.recentSignups).items(Joi.object({
    email: Joi.string().required(),
    created_at: S.timestamp.required(),
    verified: Joi.boolean().required(),
  }).label('AdminSignup')).required().description(`The last ${ADMIN_LIMITS.recentSignups} accounts created`),
  paying_accounts: Joi.array().max(ADMIN_LIMITS.payingAccounts).items(Joi.object({
    email: Joi.string().required(),
    plan: Joi.string().allow(null).required().description('null: a Stripe price this server does not sell'),
    status: Joi.string().required().description('Stripe\'s subscription status: active, trialing or past_due'),
    current_period_end: nullableTimestamp.required(),
    cancel_at_period_end: Joi.boolean().required(),
  }).label('AdminPayingAccount')).required().description(`Live subscriptions, most recently changed first, at most ${ADMIN_LIMITS.payingAccounts}`),
  cancellations: Joi.array().max(ADMIN_LIMITS.cancellations).items(Joi.object({
    email: Joi.string().required(),
    plan: Joi.string().allow(null).required(),
    status: Joi.string().required(),
    canceled_at: S.timestamp.required(),
    ended_at: nullableTimestamp.required().description('null: runs until the end of its paid period'),
  }).label('AdminCancellation')).required().description(`Cancelled in the last ${CANCELLATION_WINDOW_DAYS} days, newest first`),
  webhook_failures: Joi.array().max(ADMIN_LIMITS.webhookFailures).items(Joi.object({
    event_id: Joi.string().required(),
    event_type: Joi.string().required(),
    attempts: Joi.number().integer().min(1).required(),
    last_error: Joi.string().allow('').required(),
    first_failed_at: S.timestamp.required(),
    last_failed_at: S.timestamp.required(),
    resolved_at: nullableTimestamp.required().description('A later delivery succeeded; null: still failing'),
  }).label('AdminWebhookFailure')).required()
    .description(`Verified Stripe events whose processing failed (answered 5xx, Stripe retries), latest first, at most ${ADMIN_LIMITS.webhookFailures}`),
  expiring_certificates: Joi.array().max(ADMIN_LIMITS.expiringCertificates).items(Joi.object({
    hostname: Joi.string().required(),
    state: Joi.string().valid('pending', 'active', 'failing').required(),
    not_after: S.timestamp.required(),
    last_error: Joi.string().allow(null).required(),
    gateway_id: Joi.string().required(),
    reported_at: S.timestamp.required(),
  }).label('AdminExpiringCertificate')).required()
    .description(`Certificates gateways report as expiring within ${CERTIFICATE_EXPIRY_WINDOW_DAYS} days (or expired), soonest first`),
}).label('AdminOverview')

export const adminRoutes: Plugin<Services> = {
  name: 'cc-routes-admin',
  register (server, services) {
    server.route({
      method: 'GET',
      path: '/admin/overview',
      options: {
        tags: ['admin'],
        app: { adminOnly: true },
        description: 'Operator overview: gateways, all instances, sign-ups, billing, webhook failures, expiring certificates',
        notes: 'Administrators only (403 FORBIDDEN otherwise); the role is granted on the server with `cloud-connect admin grant EMAIL`. ' +
          'Every list is bounded and ordered newest or most urgent first.',
        response: { status: { 200: overview } },
        plugins: { openapi: { errors: ['FORBIDDEN'] } },
      },
      async handler (): Promise<AdminOverview> {
        return await services.operator.overview()
      },
    })
  },
}
