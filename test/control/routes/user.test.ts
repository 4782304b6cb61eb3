import t from 'tap'
import { assertError, bearer, forEachDatabase, signUp, startApp } from '../harness.ts'

await forEachDatabase(t, async (t, db) => {
  t.test('GET /v1/user: the spec shape', async t => {
    const h = await startApp(t, db)
    const login = await signUp(h, 'profile@example.com')
    const res = await h.request('GET', '/v1/user', undefined, bearer(login.access_token))
    t.equal(res.status, 200)
    t.same(Object.keys(res.body).sort(), ['account_status', 'created_at', 'email', 'id', 'name', 'role', 'subscription_plan', 'subscription_status'])
    t.match(res.body, { id: login.user.id, email: 'profile@example.com', name: 'Ada Lovelace', subscription_status: 'none', subscription_plan: 'free', account_status: 'pending_email_verification', role: 'user' })
    t.match(res.body.created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
    assertError(t, await h.request('GET', '/v1/user'), 'UNAUTHORIZED', 'without token')
  })

  t.test('GET /v1/user: plan comes from the subscription source', async t => {
    const h = await startApp(t, db, { deps: { subscriptions: async () => ({ plan: 'pro', status: 'active' }) } })
    const login = await signUp(h, 'pro@example.com')
    t.match(login.user, { subscription_plan: 'pro', subscription_status: 'active' })
    const res = await h.request('GET', '/v1/user', undefined, bearer(login.access_token))
    t.match(res.body, { subscription_plan: 'pro', subscription_status: 'active' })
  })

  t.test('PATCH /v1/user: renames; validates', async t => {
    const h = await startApp(t, db)
    const login = await signUp(h, 'rename@example.com')
    const auth = bearer(login.access_token)
    const res = await h.request('PATCH', '/v1/user', { name: '  John Smith ' }, auth)
    t.equal(res.status, 200)
    t.same(res.body, { id: login.user.id, email: 'rename@example.com', name: 'John Smith' })
    t.equal((await h.request('GET', '/v1/user', undefined, auth)).body.name, 'John Smith')
    assertError(t, await h.request('PATCH', '/v1/user', {}, auth), 'VALIDATION_ERROR', 'empty body')
    assertError(t, await h.request('PATCH', '/v1/user', { name: '' }, auth), 'VALIDATION_ERROR', 'empty name')
    assertError(t, await h.request('PATCH', '/v1/user', { name: 'x'.repeat(101) }, auth), 'VALIDATION_ERROR', 'long name')
    const email = await h.request('PATCH', '/v1/user', { email: 'other@example.com' }, auth)
    assertError(t, email, 'VALIDATION_ERROR', 'email is not editable here')
    t.ok(email.body.error.details.fields.email)
    assertError(t, await h.request('PATCH', '/v1/user', [1, 2], auth), 'VALIDATION_ERROR', 'array body')
    assertError(t, await h.request('PATCH', '/v1/user', { name: 'x' }), 'UNAUTHORIZED', 'without token')
    t.equal((await db('users').where({ id: login.user.id }).first()).email, 'rename@example.com')
  })

  t.test('unverified accounts are refused on routes that require a verified email', async t => {
    const h = await startApp(t, db)
    // A stand-in for instance creation: the flag is what instance/domain/billing routes set.
    h.app.route({ method: 'POST', path: '/v1/test-create', options: { app: { verifiedEmail: true } }, handler: () => ({ created: true }) })
    const pending = await signUp(h, 'pending@example.com')
    const active = await signUp(h, 'active@example.com', { verify: true })
    const refused = await h.request('POST', '/v1/test-create', undefined, bearer(pending.access_token))
    assertError(t, refused, 'FORBIDDEN')
    t.match(refused.body.error.message, /verify your email/i)
    t.equal(refused.body.error.details.account_status, 'pending_email_verification')
    const allowed = await h.request('POST', '/v1/test-create', undefined, bearer(active.access_token))
    t.equal(allowed.status, 200)
    assertError(t, await h.request('POST', '/v1/test-create'), 'UNAUTHORIZED', 'no token still 401 first')
  })
})
