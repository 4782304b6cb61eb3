/** Spec "Custom Domain Endpoints": /v1/instances/{instance_id}/domains. Logic in services/domains.ts. */
import type { Plugin } from '@hapi/hapi'
import { Joi } from '../schemas.ts'
import type { AddDomainRequest, ListDomainsResponse } from '../../proto/api/domains.ts'
import * as S from '../schemas.ts'
import type { Services } from '../services/index.ts'

const tags = ['domains']

/** The shape only; normalisation and every refusal with its reason are in services/dns-names.ts. */
const domainInput = Joi.string().min(1).max(1024)
const status = Joi.string().valid('pending_verification', 'verified', 'suspended')
const sslStatus = Joi.string().valid('none', 'provisioning', 'active', 'failed')

const record = Joi.object({
  type: Joi.string().valid('CNAME', 'TXT', 'A', 'AAAA').required(),
  name: Joi.string().required(),
  value: Joi.string().required(),
}).label('DnsRecord')

const verification = Joi.object({
  type: Joi.string().valid('CNAME', 'TXT').required(),
  name: Joi.string().required(),
  value: Joi.string().required(),
  instructions: Joi.string().required(),
  records: Joi.array().items(record).min(1).required(),
}).label('DomainVerification')

const instanceParams = Joi.object({ instance_id: Joi.string().max(64).required() })
const domainParams = Joi.object({ instance_id: Joi.string().max(64).required(), domain: domainInput.required() })

export const domainRoutes: Plugin<Services> = {
  name: 'cc-routes-domains',
  register (server, services) {
    const { domains } = services

    server.route({
      method: 'POST',
      path: '/instances/{instance_id}/domains',
      options: {
        description: 'Add a custom domain to an instance; the answer says which DNS records to create',
        notes: 'A name below your zone (share.example.com) gets a CNAME to <instance id>.tunnel.<base domain>; a zone apex (example.com), which cannot hold a CNAME, gets a TXT ownership record plus A/AAAA records to the gateway.',
        tags,
        app: { verifiedEmail: true },
        plugins: { openapi: { errors: ['NOT_FOUND', 'DOMAIN_ALREADY_EXISTS', 'SUBSCRIPTION_REQUIRED', 'LIMIT_EXCEEDED'] } },
        validate: { params: instanceParams, payload: Joi.object({ domain: domainInput.required() }).label('AddDomainRequest') },
        response: {
          status: {
            201: Joi.object({ domain: Joi.string().required(), status: Joi.string().valid('pending_verification').required(), verification: verification.required() }).label('AddDomainResponse'),
          },
        },
      },
      async handler (request, h) {
        const body = await domains.add(request.auth.credentials.user!.id, request.params.instance_id as string, (request.payload as AddDomainRequest).domain)
        return h.response(body).code(201)
      },
    })

    server.route({
      method: 'GET',
      path: '/instances/{instance_id}/domains',
      options: {
        description: 'Custom domains of an instance',
        tags,
        plugins: { openapi: { errors: ['NOT_FOUND'] } },
        validate: { params: instanceParams },
        response: {
          status: {
            200: Joi.object({
              domains: Joi.array().items(Joi.object({
                domain: Joi.string().required(),
                status: status.required(),
                ssl_status: sslStatus.required(),
                verified_at: S.timestamp.allow(null).required(),
                error: Joi.string().allow(null).required(),
                verification: verification.required(),
              }).label('CustomDomain')).required(),
            }).label('CustomDomainList'),
          },
        },
      },
      async handler (request) {
        const body: ListDomainsResponse = { domains: await domains.list(request.auth.credentials.user!.id, request.params.instance_id as string) }
        return body
      },
    })

    server.route({
      method: 'POST',
      path: '/instances/{instance_id}/domains/{domain}/verify',
      options: {
        description: 'Check the domain\'s DNS records now',
        notes: 'Not configured yet is not an error: the answer is 200 with status pending_verification and the reason (record not found, wrong target, domain does not exist, DNS timeout).',
        tags,
        plugins: { openapi: { errors: ['NOT_FOUND'] } },
        validate: { params: domainParams },
        response: {
          status: {
            200: Joi.alternatives(
              Joi.object({ domain: Joi.string().required(), status: Joi.string().valid('verified', 'suspended').required(), ssl_status: sslStatus.required() }),
              Joi.object({ domain: Joi.string().required(), status: Joi.string().valid('pending_verification').required(), error: Joi.string().required() }),
            ).label('VerifyDomainResponse'),
          },
        },
      },
      async handler (request) {
        return await domains.verify(request.auth.credentials.user!.id, request.params.instance_id as string, request.params.domain as string)
      },
    })

    server.route({
      method: 'DELETE',
      path: '/instances/{instance_id}/domains/{domain}',
      options: {
        description: 'Remove a custom domain (it stops being served at once)',
        tags,
        plugins: { openapi: { errors: ['NOT_FOUND'] } },
        validate: { params: domainParams },
        response: { status: { 204: Joi.any().empty() } },
      },
      async handler (request, h) {
        await domains.remove(request.auth.credentials.user!.id, request.params.instance_id as string, request.params.domain as string)
        return h.response().code(204)
      },
    })
  },
}
