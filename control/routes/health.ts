/**
 * Spec "Health Checks". `GET /health`: liveness, 200 when the database answers, else 503
 * SERVICE_UNAVAILABLE. `GET /ready`: every component with why (services/readiness.ts), 200 when all
 * are ready, else 503 SERVICE_UNAVAILABLE naming the failing ones, the same report in `details`.
 */
import type { Plugin } from '@hapi/hapi'
import { Joi } from '../schemas.ts'
import { apiError } from '../errors.ts'
import type { Services } from '../services/index.ts'
import { GATEWAY_LISTENER_COMPONENTS, READY_COMPONENTS } from '../../proto/api/health.ts'

const componentSchema = Joi.object({
  status: Joi.string().valid('ok', 'failing', 'not_configured').required(),
  detail: Joi.string().required(),
  checked_at: Joi.string().isoDate().allow(null).required().description('Last check in this process that found it ok'),
}).label('ComponentReadiness')

const componentNames = [...READY_COMPONENTS, ...GATEWAY_LISTENER_COMPONENTS]

export const readinessSchema = Joi.object({
  status: Joi.string().valid('ready', 'not_ready').required(),
  failing: Joi.array().items(Joi.string().valid(...componentNames)).required(),
  components: Joi.object(Object.fromEntries(componentNames.map(name => [name, READY_COMPONENTS.includes(name as typeof READY_COMPONENTS[number]) ? componentSchema.required() : componentSchema]))).required(),
}).label('Readiness')

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
          await services.readiness.live()
        } catch (err) {
          services.logger.warn({ err: (err as Error).message }, 'health: database unreachable')
          throw apiError('SERVICE_UNAVAILABLE', 'Database unreachable', { database: 'unreachable' }, { 'retry-after': '5' })
        }
        return { status: 'ok', database: 'ok' }
      },
    })

    server.route({
      method: 'GET',
      path: '/ready',
      options: {
        auth: false,
        description: 'Readiness: every component with its status, why, and its last good check',
        notes: 'Components: database, gateways, stripe_webhooks, certificates, and under `cloud-connect start` the gateway\'s wireguard and https listeners. ' +
          '200 when each is ok or not_configured; otherwise 503 SERVICE_UNAVAILABLE whose message names the failing components and whose details is this same Readiness object.',
        tags: ['health'],
        response: { status: { 200: readinessSchema } },
      },
      async handler (_request, h) {
        const report = await services.readiness.check()
        if (report.status === 'ready') return h.response(report).header('cache-control', 'no-store')
        throw apiError('SERVICE_UNAVAILABLE', `Not ready: ${report.failing.join(', ')}`, { ...report }, { 'retry-after': '5', 'cache-control': 'no-store' })
      },
    })
  },
}
