/** `GET /health`: 200 when the database answers, else 503 SERVICE_UNAVAILABLE (spec "Health Checks"). */
import type { Plugin } from '@hapi/hapi'
import { Joi } from '../schemas.ts'
import { ping } from '../db/knex.ts'
import { apiError } from '../errors.ts'
import type { Services } from '../services/index.ts'

export const healthRoutes: Plugin<Services> = {
  name: 'cc-routes-health',
  register (server, services) {
    server.route({
      method: 'GET',
      path: '/health',
      options: {
        auth: false,
        description: 'Liveness and database connectivity',
        tags: ['health'],
        response: { status: { 200: Joi.object({ status: Joi.string().valid('ok'), database: Joi.string().valid('ok') }).label('Health') } },
      },
      async handler () {
        try {
          await ping(services.db)
        } catch (err) {
          services.logger.warn({ err: (err as Error).message }, 'health: database unreachable')
          throw apiError('SERVICE_UNAVAILABLE', 'Database unreachable', { database: 'unreachable' }, { 'retry-after': '5' })
        }
        return { status: 'ok', database: 'ok' }
      },
    })
  },
}
