import t from 'tap'
import { openTestDatabase, startApp } from './harness.ts'

t.test('GET /v1/openapi.json describes every route from its joi schemas', async t => {
  const db = await openTestDatabase(t, 'pglite')
  const h = await startApp(t, db)
  const res = await h.request('GET', '/v1/openapi.json')
  t.equal(res.status, 200)
  const doc = res.body
  t.equal(doc.openapi, '3.0.3')
  const routes = h.app.table().filter(r => r.path.startsWith('/v1/') && r.path !== '/v1/openapi.json').map(r => `${r.method} ${r.path}`)
  const documented = Object.entries(doc.paths as Record<string, Record<string, unknown>>).flatMap(([path, ops]) => Object.keys(ops).map(m => `${m} ${path}`))
  for (const route of routes) t.ok(documented.includes(route), `documents ${route}`)

  const register = doc.paths['/v1/auth/register'].post
  const schema = register.requestBody.content['application/json'].schema
  t.same(schema.required.sort(), ['accept_privacy', 'accept_terms', 'email', 'name', 'password', 'password_confirmation'])
  t.equal(schema.additionalProperties, false, 'unknown fields refused, as the server does')
  t.equal(schema.properties.password.minLength, 8)
  t.equal(schema.properties.password.maxLength, 128)
  t.equal(schema.properties.name.maxLength, 100)
  t.ok(register.responses['201'].content['application/json'].schema.properties.user, '201 body')
  t.ok(register.responses['422'], 'validation error documented')
  t.same(register.security, [], 'public')

  const user = doc.paths['/v1/user'].get
  t.same(user.security, [{ bearer: [] }])
  t.ok(user.responses['401'])
  t.same(doc.components.schemas.Error.required, ['error'])
  const verify = doc.paths['/v1/auth/verify-email'].get
  t.match(verify.parameters, [{ name: 'token', in: 'query', required: true }])
})

t.test('the documented instance states include suspended, with its reason', async t => {
  const db = await openTestDatabase(t, 'pglite')
  const h = await startApp(t, db)
  const doc = (await h.request('GET', '/v1/openapi.json')).body
  const list = doc.paths['/v1/instances'].get.responses['200'].content['application/json'].schema
  const item = list.properties?.instances?.items ?? doc.components.schemas.InstanceSummary
  const summary = item.$ref !== undefined ? doc.components.schemas[item.$ref.split('/').pop()] : item
  t.ok(summary.properties.status.enum.includes('suspended'), 'InstanceSummary.status')
  t.ok(summary.required.includes('suspended_reason'), 'InstanceSummary.suspended_reason')
  t.ok(summary.properties.suspended_reason.enum.includes('plan_limit'))
  const tunnel = doc.paths['/v1/tunnel/status'].get.responses['200'].content['application/json'].schema
  const status = tunnel.$ref !== undefined ? doc.components.schemas[tunnel.$ref.split('/').pop()] : tunnel
  t.ok(status.properties.tunnel_status.enum.includes('suspended'), 'TunnelStatus.tunnel_status')
  t.ok(status.required.includes('suspended_reason'))
  t.same([...status.properties.domains.properties.subdomain.properties.status.enum].sort(), ['active', 'pending', 'suspended'])
})

t.test('the subscription documents its limits and usage; the plans route its table', async t => {
  const db = await openTestDatabase(t, 'pglite')
  const h = await startApp(t, db)
  const doc = (await h.request('GET', '/v1/openapi.json')).body
  const deref = (schema: { $ref?: string }): any => schema.$ref !== undefined ? doc.components.schemas[schema.$ref.split('/').pop()!] : schema // eslint-disable-line @typescript-eslint/no-explicit-any
  const sub = deref(doc.paths['/v1/billing/subscription'].get.responses['200'].content['application/json'].schema)
  t.ok(sub.required.includes('limits') && sub.required.includes('usage'), `Subscription requires limits and usage: ${String(sub.required)}`)
  t.same(deref(sub.properties.limits).required.sort(), ['custom_domains_per_instance', 'instances'])
  t.same(deref(sub.properties.usage).required.sort(), ['custom_domains', 'custom_domains_max_per_instance', 'instances'])
  t.ok(deref(sub.properties.usage).properties.instances.description, 'usage.instances says what it counts')
  const plans = doc.paths['/v1/billing/plans'].get
  t.same(plans.security, [{ bearer: [] }])
  const body = deref(plans.responses['200'].content['application/json'].schema)
  const item = deref(body.properties.plans.items)
  t.same(item.required.sort(), ['custom_domains_per_instance', 'instances', 'plan'])
  t.same([...item.properties.plan.enum].sort(), ['business', 'free', 'pro'])
})

t.test('the usage and access-log routes are documented with their parameters and bodies', async t => {
  const db = await openTestDatabase(t, 'pglite')
  const h = await startApp(t, db)
  const doc = (await h.request('GET', '/v1/openapi.json')).body
  const deref = (schema: { $ref?: string }): any => schema.$ref !== undefined ? doc.components.schemas[schema.$ref.split('/').pop()!] : schema // eslint-disable-line @typescript-eslint/no-explicit-any
  const usage = doc.paths['/v1/instances/{instance_id}/usage'].get
  t.same(usage.security, [{ bearer: [] }])
  t.same(usage.parameters.map((p: { name: string }) => p.name).sort(), ['from', 'instance_id', 'to'])
  for (const status of ['200', '401', '404', '422']) t.ok(usage.responses[status], `usage ${status}`)
  const usageBody = deref(usage.responses['200'].content['application/json'].schema)
  t.same(usageBody.required.sort(), ['buckets', 'from', 'instance_id', 'to', 'totals'])
  t.same(deref(usageBody.properties.buckets.items).required.sort(), ['bytes_in', 'bytes_out', 'hour', 'requests'])
  const log = doc.paths['/v1/instances/{instance_id}/access-log'].get
  t.same(log.parameters.map((p: { name: string }) => p.name).sort(), ['cursor', 'instance_id', 'limit'])
  for (const status of ['200', '401', '404', '422']) t.ok(log.responses[status], `access-log ${status}`)
  const logBody = deref(log.responses['200'].content['application/json'].schema)
  t.same(logBody.required.sort(), ['entries', 'next_cursor'])
  t.same(deref(logBody.properties.entries.items).required.sort(), ['at', 'bytes_in', 'bytes_out', 'client', 'duration_ms', 'method', 'path', 'status'])
})
