/**
 * An instance's edge traffic for its owner (access token): hourly usage and the access log, as
 * gateways report them. Logic in services/usage.ts; another user's instance is a 404.
 */
import type { Plugin } from '@hapi/hapi'
import { Joi } from '../schemas.ts'
import * as S from '../schemas.ts'
import type { Services } from '../services/index.ts'
import { ACCESS_LOG_DEFAULT_LIMIT, ACCESS_LOG_MAX_LIMIT, MAX_USAGE_RANGE_DAYS } from '../services/usage.ts'
import { instanceId } from './instances.ts'

const params = Joi.object({ instance_id: Joi.string().max(64).required() })
const count = Joi.number().integer().min(0)

const usageBucket = Joi.object({
  hour: S.timestamp.required().description('Start of the hour (UTC)'),
  bytes_in: count.required().description('Request body bytes'),
  bytes_out: count.required().description('Response body bytes'),
  requests: count.required(),
}).label('UsageBucket')

const usageResponse = Joi.object({
  instance_id: instanceId.required(),
  from: S.timestamp.required().description('Start of the range (rounded down to its hour)'),
  to: S.timestamp.required().description('End of the range (exclusive)'),
  buckets: Joi.array().items(usageBucket).required().description('Hours with traffic, oldest first'),
  totals: Joi.object({ bytes_in: count.required(), bytes_out: count.required(), requests: count.required() }).required().label('UsageTotals'),
}).label('InstanceUsage')

const accessLogEntry = Joi.object({
  at: S.timestamp.required().description('When the request began'),
  method: Joi.string().required(),
  path: Joi.string().allow('').required().description('The path, never the query string'),
  status: Joi.number().integer().min(0).max(999).required().description('0: the client left before a status was sent'),
  bytes_in: count.required(),
  bytes_out: count.required(),
  duration_ms: count.required(),
  client: Joi.string().allow(null).required().description('Client address, truncated to its /24 (IPv4) or /48 (IPv6) unless the operator keeps full addresses'),
}).label('AccessLogEntry')

const accessLogResponse = Joi.object({
  entries: Joi.array().items(accessLogEntry).required().description('Newest first'),
  next_cursor: Joi.string().allow(null).required().description('Pass as cursor for the next (older) page; null on the last page'),
}).label('AccessLog')

export const usageRoutes: Plugin<Services> = {
  name: 'cc-routes-usage',
  register (server, services) {
    const { usage } = services
    const tags = ['instances']

    server.route({
      method: 'GET',
      path: '/instances/{instance_id}/usage',
      options: {
        description: 'Hourly traffic of an instance: request and response body bytes and request counts',
        notes: `Default range: the last 24 hours. \`from\` is rounded down to its hour; the range may span at most ${MAX_USAGE_RANGE_DAYS} days. Kept for CC_USAGE_RETENTION_DAYS (default 90).`,
        tags,
        plugins: { openapi: { errors: ['NOT_FOUND'] } },
        validate: {
          params,
          query: Joi.object({
            from: Joi.date().iso().description('Start (ISO 8601)'),
            to: Joi.date().iso().description('End, exclusive (ISO 8601); default now'),
          }),
        },
        response: { status: { 200: usageResponse } },
      },
      async handler (request) {
        const query = request.query as { from?: Date, to?: Date }
        return await usage.usage(request.auth.credentials.user!.id, request.params.instance_id as string, query)
      },
    })

    server.route({
      method: 'GET',
      path: '/instances/{instance_id}/access-log',
      options: {
        description: 'The requests an instance answered, newest first',
        notes: 'Time, method, path without the query string, status, body bytes, duration and the client address (truncated to /24 or /48 by default). Never query strings or headers. Kept for CC_ACCESS_LOG_RETENTION_DAYS (default 7). Page with next_cursor.',
        tags,
        plugins: { openapi: { errors: ['NOT_FOUND'] } },
        validate: {
          params,
          query: Joi.object({
            limit: Joi.number().integer().min(1).max(ACCESS_LOG_MAX_LIMIT).default(ACCESS_LOG_DEFAULT_LIMIT).description('Entries per page'),
            cursor: Joi.string().max(200).pattern(/^[A-Za-z0-9_-]+$/).description('next_cursor of the previous page'),
          }),
        },
        response: { status: { 200: accessLogResponse } },
      },
      async handler (request) {
        const query = request.query as { limit: number, cursor?: string }
        return await usage.accessLog(request.auth.credentials.user!.id, request.params.instance_id as string, query)
      },
    })
  },
}
