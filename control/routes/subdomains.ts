/** Spec "Subdomain Endpoints": GET /v1/subdomains/check (access token). */
import type { Plugin } from '@hapi/hapi'
import { Joi } from '../schemas.ts'
import type { SubdomainCheckResponse } from '../../proto/api/instances.ts'
import type { Services } from '../services/index.ts'
import { classifySubdomain, verdictMessage } from '../services/subdomains.ts'
import { apiError } from '../errors.ts'
import { subdomainInput } from './instances.ts'

export const subdomainRoutes: Plugin<Services> = {
  name: 'cc-routes-subdomains',
  register (server, services) {
    const { subdomains } = services

    server.route({
      method: 'GET',
      path: '/subdomains/check',
      options: {
        description: 'Whether a subdomain is free; if not, free alternatives',
        notes: 'A reserved name answers available: false with suggestions; a malformed one is 422. A subdomain given up by a rename or a delete stays unavailable to other accounts for the quarantine (CC_SUBDOMAIN_QUARANTINE); its previous owner sees it available.',
        tags: ['subdomains'],
        validate: { query: Joi.object({ subdomain: subdomainInput.required() }) },
        response: {
          status: {
            200: Joi.object({
              subdomain: Joi.string().required(),
              available: Joi.boolean().required(),
              suggestions: Joi.array().items(Joi.string()).max(3),
            }).label('SubdomainCheck'),
          },
        },
      },
      async handler (request) {
        const label = (request.query as { subdomain: string }).subdomain
        const verdict = classifySubdomain(label)
        if (verdict === 'invalid') throw apiError('VALIDATION_ERROR', 'The request data is invalid', { fields: { subdomain: [verdictMessage(verdict)] } })
        const result = await subdomains.check(label, request.auth.credentials.user!.id)
        const body: SubdomainCheckResponse = result.available ? { subdomain: label, available: true } : { subdomain: label, available: false, suggestions: result.suggestions }
        return body
      },
    })
  },
}
