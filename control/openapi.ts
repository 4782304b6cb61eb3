/**
 * `GET /v1/openapi.json`: an OpenAPI 3.0 document generated from the routes themselves (server.table():
 * path, method, description, joi validation and response schemas), so it cannot drift from what the
 * server enforces. joi -> JSON Schema by joi-to-json.
 */
import type { Plugin, RequestRoute, Server } from '@hapi/hapi'
import Joi from 'joi'
import { createRequire } from 'node:module'
import { ERROR_STATUS, type ErrorCode } from '../proto/api/errors.ts'
import { errorResponse } from './schemas.ts'
import type { Services } from './services/index.ts'

type JsonSchema = Record<string, unknown>

// joi-to-json is CommonJS with `module.exports = parse`.
const parse = createRequire(import.meta.url)('joi-to-json') as typeof import('joi-to-json').parse

/** joi-to-json renders `valid(Joi.ref(...))` as an enum of ref objects; drop those enums. */
function stripRefEnums (node: unknown): unknown {
  if (Array.isArray(node)) return node.map(stripRefEnums)
  if (node === null || typeof node !== 'object') return node
  const out: JsonSchema = {}
  for (const [key, value] of Object.entries(node)) {
    if (key === 'enum' && Array.isArray(value) && value.some(v => v !== null && typeof v === 'object')) {
      out.type = 'string'
      continue
    }
    out[key] = stripRefEnums(value)
  }
  return out
}

function toSchema (schema: unknown): JsonSchema | undefined {
  if (!Joi.isSchema(schema)) return undefined
  return stripRefEnums(parse(schema as Joi.Schema, 'open-api')) as JsonSchema
}

function isPublic (route: RequestRoute): boolean {
  return (route.settings.auth as unknown) === false
}

const STATUS_TEXT: Record<number, string> = { 200: 'OK', 201: 'Created', 204: 'No Content' }

function errorStatusesOf (route: RequestRoute): number[] {
  const statuses = new Set<number>([ERROR_STATUS.RATE_LIMITED])
  const settings = route.settings
  const v = settings.validate ?? {}
  if (v.payload !== undefined || v.query !== undefined || v.params !== undefined) statuses.add(ERROR_STATUS.VALIDATION_ERROR)
  if (v.payload !== undefined) { statuses.add(ERROR_STATUS.BAD_REQUEST); statuses.add(ERROR_STATUS.PAYLOAD_TOO_LARGE) }
  if (!isPublic(route)) statuses.add(ERROR_STATUS.UNAUTHORIZED)
  if (settings.app?.verifiedEmail === true) statuses.add(ERROR_STATUS.FORBIDDEN)
  statuses.add(ERROR_STATUS.SERVICE_UNAVAILABLE)
  for (const code of ((settings.plugins as { openapi?: { errors?: ErrorCode[] } }).openapi?.errors ?? [])) statuses.add(ERROR_STATUS[code])
  return [...statuses].sort((a, b) => a - b)
}

export function buildOpenApi (server: Server, title = 'Erugo Cloud Connect API', version = '1'): JsonSchema {
  const paths: Record<string, Record<string, unknown>> = {}
  const routes = server.table().filter(r => r.path.startsWith('/v1/') || r.path === '/health' || r.path === '/ready')
  for (const route of routes.sort((a, b) => a.path.localeCompare(b.path))) {
    if (route.settings.plugins && (route.settings.plugins as { openapi?: { hidden?: boolean } }).openapi?.hidden === true) continue
    const v = route.settings.validate ?? {}
    const operation: JsonSchema = {
      summary: route.settings.description,
      description: route.settings.notes,
      tags: route.settings.tags,
      security: isPublic(route) ? [] : [{ bearer: [] }],
    }
    const parameters: JsonSchema[] = []
    for (const [where, schema] of [['query', v.query], ['path', v.params]] as const) {
      const json = toSchema(schema)
      const props = (json?.properties ?? {}) as Record<string, JsonSchema>
      const required = new Set((json?.required ?? []) as string[])
      for (const [name, prop] of Object.entries(props)) parameters.push({ name, in: where, required: where === 'path' || required.has(name), schema: prop })
    }
    if (parameters.length > 0) operation.parameters = parameters
    const body = toSchema(v.payload)
    if (body !== undefined) operation.requestBody = { required: true, content: { 'application/json': { schema: body } } }

    const responses: JsonSchema = {}
    const statuses = (route.settings.response as { status?: Record<string, unknown> } | undefined)?.status ?? {}
    for (const [status, schema] of Object.entries(statuses)) {
      const json = Number(status) === 204 ? undefined : toSchema(schema)
      responses[status] = json === undefined
        ? { description: STATUS_TEXT[Number(status)] ?? status }
        : { description: STATUS_TEXT[Number(status)] ?? status, content: { 'application/json': { schema: json } } }
    }
    for (const status of errorStatusesOf(route)) {
      responses[String(status)] = { description: 'Error', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } }
    }
    operation.responses = responses
    const path = route.path.replace(/\{(\w+)\??\}/g, '{$1}')
    ;(paths[path] ??= {})[route.method] = operation
  }
  return {
    openapi: '3.0.3',
    info: { title, version },
    paths,
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' } },
      schemas: { Error: toSchema(errorResponse) },
    },
  }
}

export const openApiRoutes: Plugin<Services> = {
  name: 'cc-routes-openapi',
  register (server) {
    let cached: JsonSchema | undefined
    server.route({
      method: 'GET',
      path: '/openapi.json',
      options: { auth: false, description: 'This document', tags: ['meta'], plugins: { openapi: { hidden: true } } },
      handler: () => (cached ??= buildOpenApi(server)),
    })
  },
}
