/** Spec "Instance Management Endpoints": /v1/instances (access token). Logic in services/instances.ts. */
import type { Plugin } from '@hapi/hapi'
import { Joi } from '../schemas.ts'
import type { CreateInstanceRequest, ListInstancesResponse, RegenerateTokenResponse, UpdateInstanceRequest } from '../../proto/api/instances.ts'
import * as S from '../schemas.ts'
import type { Services } from '../services/index.ts'
import { SUBDOMAIN_MAX_LENGTH, SUBDOMAIN_PATTERN } from '../services/subdomains.ts'

export const instanceId = Joi.string().pattern(/^inst_[0-9A-Za-z]{22}$/).example('inst_7Hq2mZ4xNc8Rv1Tb6Ws3Yd')
/** Checked again by the service (reserved names, RFC 5891 hyphens); this is the shape. */
export const subdomainInput = Joi.string().trim().lowercase().min(1).max(SUBDOMAIN_MAX_LENGTH).pattern(SUBDOMAIN_PATTERN)
  .messages({ 'string.pattern.base': 'must be 1-63 characters of a-z, 0-9 and hyphens, not starting or ending with a hyphen' })
const instanceName = Joi.string().trim().min(1).max(100)
const status = Joi.string().valid('pending', 'connected', 'disconnected', 'suspended')
  .description('pending: no key registered or no handshake yet; connected/disconnected: what gateways saw; suspended: over the plan limit, not routed')
export const suspendedReason = Joi.string().valid('plan_limit').allow(null)
  .description('Why the instance is suspended (plan_limit: over the plan\'s instance limit); null when it is not')
const ipv4 = Joi.string().ip({ version: ['ipv4'], cidr: 'forbidden' })
const ipv4Cidr = Joi.string().ip({ version: ['ipv4'], cidr: 'required' })
const fullDomain = Joi.string().hostname()

const summaryFields = {
  id: instanceId.required(),
  name: Joi.string().required(),
  subdomain: Joi.string().required(),
  custom_domain: Joi.string().allow(null).required(),
  status: status.required(),
  suspended_reason: suspendedReason.required(),
  tunnel_ip: ipv4.required(),
  last_seen: S.timestamp.allow(null).required(),
  created_at: S.timestamp.required(),
}

const offlineAlert = Joi.boolean().description('Mail the owner when the instance has been offline for the alert threshold (CC_ALERT_OFFLINE_AFTER, default 5 minutes), and once when it is back; default true')
const alertsChange = Joi.object({ offline: offlineAlert }).min(1).label('InstanceAlertsChange')
const alerts = Joi.object({ offline: offlineAlert.required() }).label('InstanceAlerts')

const instanceSummary = Joi.object(summaryFields).label('InstanceSummary')
const instanceDetails = Joi.object({ ...summaryFields, full_domain: fullDomain.required(), alerts: alerts.required() }).label('Instance')

const createResponse = Joi.object({
  instance: Joi.object({
    id: instanceId.required(),
    name: Joi.string().required(),
    subdomain: Joi.string().required(),
    full_domain: fullDomain.required(),
    status: status.required(),
    tunnel_ip: ipv4.required(),
    created_at: S.timestamp.required(),
  }).required(),
  credentials: Joi.object({
    instance_token: Joi.string().required(),
    wireguard: Joi.object({
      server_public_key: Joi.string().required(),
      server_endpoint: Joi.string().required(),
      client_ip: ipv4Cidr.required(),
      allowed_ips: ipv4Cidr.required(),
    }).required(),
  }).required(),
}).label('CreateInstanceResponse')

const params = Joi.object({ instance_id: Joi.string().max(64).required() })

export const instanceRoutes: Plugin<Services> = {
  name: 'cc-routes-instances',
  register (server, services) {
    const { instances } = services
    const tags = ['instances']

    server.route({
      method: 'GET',
      path: '/instances',
      options: {
        description: 'List your instances',
        tags,
        response: { status: { 200: Joi.object({ instances: Joi.array().items(instanceSummary).required() }).label('InstanceList') } },
      },
      async handler (request) {
        const body: ListInstancesResponse = { instances: await instances.list(request.auth.credentials.user!.id) }
        return body
      },
    })

    server.route({
      method: 'POST',
      path: '/instances',
      options: {
        description: 'Create an instance: its subdomain, tunnel address and credentials',
        notes: 'The instance token is shown only in this response. WireGuard allowed_ips is the gateway\'s own /32: the tunnel routes nothing else.',
        tags,
        app: { verifiedEmail: true },
        plugins: { openapi: { errors: ['SUBDOMAIN_TAKEN', 'LIMIT_EXCEEDED'] } },
        validate: {
          payload: Joi.object({ name: instanceName.required(), subdomain: subdomainInput.required() }).label('CreateInstanceRequest'),
        },
        response: { status: { 201: createResponse } },
      },
      async handler (request, h) {
        const body = await instances.create(request.auth.credentials.user!.id, request.payload as CreateInstanceRequest)
        return h.response(body).code(201)
      },
    })

    server.route({
      method: 'GET',
      path: '/instances/{instance_id}',
      options: {
        description: 'One instance',
        tags,
        plugins: { openapi: { errors: ['NOT_FOUND'] } },
        validate: { params },
        response: { status: { 200: instanceDetails } },
      },
      async handler (request) {
        return await instances.get(request.auth.credentials.user!.id, request.params.instance_id as string)
      },
    })

    server.route({
      method: 'PATCH',
      path: '/instances/{instance_id}',
      options: {
        description: 'Rename an instance, move it to another subdomain, or choose its alerts',
        tags,
        plugins: { openapi: { errors: ['NOT_FOUND', 'SUBDOMAIN_TAKEN'] } },
        validate: {
          params,
          payload: Joi.object({ name: instanceName, subdomain: subdomainInput, alerts: alertsChange }).min(1).label('UpdateInstanceRequest'),
        },
        response: {
          status: {
            200: Joi.object({ id: instanceId.required(), name: Joi.string().required(), subdomain: Joi.string().required(), full_domain: fullDomain.required(), alerts: alerts.required() }).label('UpdateInstanceResponse'),
          },
        },
      },
      async handler (request) {
        return await instances.update(request.auth.credentials.user!.id, request.params.instance_id as string, request.payload as UpdateInstanceRequest)
      },
    })

    server.route({
      method: 'DELETE',
      path: '/instances/{instance_id}',
      options: {
        description: 'Delete an instance and revoke its tunnel access',
        tags,
        plugins: { openapi: { errors: ['NOT_FOUND'] } },
        validate: { params },
        response: { status: { 204: Joi.any().empty() } },
      },
      async handler (request, h) {
        await instances.remove(request.auth.credentials.user!.id, request.params.instance_id as string)
        return h.response().code(204)
      },
    })

    server.route({
      method: 'POST',
      path: '/instances/{instance_id}/regenerate-token',
      options: {
        description: 'Issue a new instance token; the old one stops working and the registered WireGuard key is dropped',
        tags,
        plugins: { openapi: { errors: ['NOT_FOUND'] } },
        validate: { params },
        response: { status: { 200: Joi.object({ instance_token: Joi.string().required() }).label('RegenerateTokenResponse') } },
      },
      async handler (request) {
        const body: RegenerateTokenResponse = { instance_token: await instances.regenerateToken(request.auth.credentials.user!.id, request.params.instance_id as string) }
        return body
      },
    })
  },
}
