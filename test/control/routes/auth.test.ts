import t from 'tap'
import { MESSAGES } from '../../../proto/api/auth.ts'
import { assertError, bearer, forEachDatabase, PASSWORD, registration, signUp, startApp, tokenFromMail, type TestApp } from '../harness.ts'

const USER_ID = /^usr_[0-9A-Za-z]{22}$/
const ISO_SECONDS = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/

async function mailsTo (h: TestApp, email: string, subject: RegExp): Promise<ReturnType<TestApp['mail']['to']>> {
  await h.services.mailer.drain()
  return h.mail.to(email).filter(m => subject.test(m.subject))
}

await forEachDatabase(t, async (t, db) => {
  t.test('register: 201 with the spec body, normalised email, verification mail', async t => {
    const h = await startApp(t, db)
    const res = await h.request('POST', '/v1/auth/register', registration('  New.User@Example.COM '))
    t.equal(res.status, 201)
    t.same(Object.keys(res.body).sort(), ['message', 'user'])
    t.same(Object.keys(res.body.user).sort(), ['account_status', 'created_at', 'email', 'id', 'name'])
    t.match(res.body.user.id, USER_ID)
    t.equal(res.body.user.email, 'new.user@example.com')
    t.equal(res.body.user.name, 'Ada Lovelace')
    t.match(res.body.user.created_at, ISO_SECONDS)
    t.equal(res.body.user.account_status, 'pending_email_verification')
    t.equal(res.body.message, MESSAGES.registered)
    const row = await db('users').where({ email: 'new.user@example.com' }).first()
    t.equal(row.id, res.body.user.id)
    t.equal(row.erugo_version, '1.0.0')
    t.equal(row.accept_marketing, false)
    t.match(row.password_hash, /^\$argon2id\$/, 'argon2id hash stored')
    t.not(row.password_hash.includes(PASSWORD), true)
    const mails = await mailsTo(h, 'new.user@example.com', /Confirm/)
    t.equal(mails.length, 1)
    t.match(mails[0].links[0], /^https:\/\/api\.example\.test\/verify-email\?token=[\w-]{43}$/, 'the dashboard page under CC_PUBLIC_URL')
  })

  t.test('register: marketing flag stored; version optional', async t => {
    const h = await startApp(t, db)
    const body = registration('marketing@example.com', { accept_marketing: true })
    delete body.erugo_version
    const res = await h.request('POST', '/v1/auth/register', body)
    t.equal(res.status, 201)
    const row = await db('users').where({ email: 'marketing@example.com' }).first()
    t.equal(row.accept_marketing, true)
    t.equal(row.erugo_version, null)
  })

  t.test('register: validation errors name each field', async t => {
    const h = await startApp(t, db)
    const countUsers = async (): Promise<number> => Number((await db('users').count('* as n').first())!.n)
    const before = await countUsers()
    const cases: Array<[string, Record<string, unknown>, string]> = [
      ['short password', { password: 'short12', password_confirmation: 'short12' }, 'password'],
      ['129-char password', { password: 'x'.repeat(129), password_confirmation: 'x'.repeat(129) }, 'password'],
      ['confirmation mismatch', { password_confirmation: 'something else' }, 'password_confirmation'],
      ['terms refused', { accept_terms: false }, 'accept_terms'],
      ['privacy missing', { accept_privacy: undefined }, 'accept_privacy'],
      ['terms as string', { accept_terms: 'true' }, 'accept_terms'],
      ['empty name', { name: '   ' }, 'name'],
      ['101-char name', { name: 'n'.repeat(101) }, 'name'],
      ['bad email', { email: 'not-an-email' }, 'email'],
      ['unknown field', { is_admin: true }, 'is_admin'],
      ['name as number', { name: 42 }, 'name'],
    ]
    for (const [label, change, field] of cases) {
      const res = await h.request('POST', '/v1/auth/register', registration(`${label.replace(/\W/g, '')}@example.com`, change))
      assertError(t, res, 'VALIDATION_ERROR', label)
      t.ok(Array.isArray(res.body.error.details.fields?.[field]), `${label}: details.fields.${field}`)
    }
    const many = await h.request('POST', '/v1/auth/register', { name: '', email: 'x', extra: 1 })
    assertError(t, many, 'VALIDATION_ERROR')
    t.ok(Object.keys(many.body.error.details.fields).length >= 5, 'all failures reported, not only the first')
    t.equal(await countUsers(), before, 'nothing stored')
  })

  t.test('register: 128-character password accepted and not truncated', async t => {
    const h = await startApp(t, db)
    const long = 'p'.repeat(127) + 'A'
    t.equal((await h.request('POST', '/v1/auth/register', registration('long@example.com', { password: long, password_confirmation: long }))).status, 201)
    t.equal((await h.request('POST', '/v1/auth/login', { email: 'long@example.com', password: long })).status, 200)
    assertError(t, await h.request('POST', '/v1/auth/login', { email: 'long@example.com', password: 'p'.repeat(127) + 'B' }), 'UNAUTHORIZED', 'last character matters')
  })

  t.test('register: an existing email answers like a new one; owner is told instead', async t => {
    const h = await startApp(t, db)
    const first = await h.request('POST', '/v1/auth/register', registration('taken@example.com'))
    const again = await h.request('POST', '/v1/auth/register', registration('TAKEN@example.com', { name: 'Mallory' }))
    const fresh = await h.request('POST', '/v1/auth/register', registration('untaken@example.com', { name: 'Mallory' }))
    t.equal(again.status, fresh.status)
    t.same(Object.keys(again.body).sort(), Object.keys(fresh.body).sort())
    t.same(Object.keys(again.body.user).sort(), Object.keys(fresh.body.user).sort())
    t.equal(again.body.message, fresh.body.message)
    t.equal(again.body.user.account_status, fresh.body.user.account_status)
    t.equal(again.body.user.name, 'Mallory', 'echoes the submitted name, as a new registration does')
    t.match(again.body.user.id, USER_ID)
    t.not(again.body.user.id, first.body.user.id, 'the real id is not revealed')
    t.same(Object.keys(again.headers).filter(k => k !== 'date').sort(), Object.keys(fresh.headers).filter(k => k !== 'date').sort(), 'same headers')
    const owner = await db('users').where({ email: 'taken@example.com' }).first()
    t.equal(owner.name, 'Ada Lovelace', 'existing account untouched')
    t.equal(await db('users').where({ email: 'taken@example.com' }).count('* as n').first().then(r => Number(r!.n)), 1)
    const notices = await mailsTo(h, 'taken@example.com', /tried to sign up/)
    t.equal(notices.length, 1, 'owner notified')
    t.equal((await mailsTo(h, 'taken@example.com', /Confirm/)).length, 1, 'no second verification mail')
  })

  t.test('register: concurrent registrations of one email create one account', async t => {
    const h = await startApp(t, db)
    const results = await Promise.all(Array.from({ length: 5 }, () => h.request('POST', '/v1/auth/register', registration('race@example.com'))))
    t.same(results.map(r => r.status), [201, 201, 201, 201, 201])
    t.equal(await db('users').where({ email: 'race@example.com' }).count('* as n').first().then(r => Number(r!.n)), 1)
  })

  t.test('verify-email: the GET link of older mails works once, then LINK_ALREADY_USED; account becomes active', async t => {
    const h = await startApp(t, db)
    await h.request('POST', '/v1/auth/register', registration('verify@example.com'))
    const [mail] = await mailsTo(h, 'verify@example.com', /Confirm/)
    const url = `/v1/auth/verify-email?token=${encodeURIComponent(tokenFromMail(mail))}`
    const ok = await h.request('GET', url)
    t.equal(ok.status, 200)
    t.same(ok.body, { message: MESSAGES.emailVerified, account_status: 'active' })
    t.equal((await db('users').where({ email: 'verify@example.com' }).first()).account_status, 'active')
    const again = await h.request('GET', url)
    assertError(t, again, 'LINK_ALREADY_USED', 'second use')
    const login = await h.request('POST', '/v1/auth/login', { email: 'verify@example.com', password: PASSWORD })
    t.equal(login.body.user.account_status, 'active')
  })

  t.test('verify-email: POST form, bad tokens, expiry', async t => {
    let now = new Date('2030-01-01T00:00:00Z')
    const h = await startApp(t, db, { deps: { now: () => now } })
    await h.request('POST', '/v1/auth/register', registration('post-verify@example.com'))
    await h.request('POST', '/v1/auth/register', registration('late@example.com'))
    const [mail] = await mailsTo(h, 'post-verify@example.com', /Confirm/)
    const [late] = await mailsTo(h, 'late@example.com', /Confirm/)
    assertError(t, await h.request('POST', '/v1/auth/verify-email', { token: 'nope' }), 'LINK_INVALID', 'unknown token')
    assertError(t, await h.request('GET', '/v1/auth/verify-email?token=nope'), 'LINK_INVALID', 'unknown token (GET)')
    assertError(t, await h.request('POST', '/v1/auth/verify-email', { token: '' }), 'VALIDATION_ERROR', 'empty token')
    assertError(t, await h.request('POST', '/v1/auth/verify-email', { token: 'x'.repeat(300) }), 'VALIDATION_ERROR', 'oversized token')
    assertError(t, await h.request('POST', '/v1/auth/verify-email', {}), 'VALIDATION_ERROR', 'missing token')
    assertError(t, await h.request('GET', '/v1/auth/verify-email'), 'VALIDATION_ERROR', 'missing query token')
    assertError(t, await h.request('GET', '/v1/auth/verify-email?token=a&x=1'), 'VALIDATION_ERROR', 'unknown query field')
    t.equal((await h.request('POST', '/v1/auth/verify-email', { token: tokenFromMail(mail) })).status, 200)
    assertError(t, await h.request('POST', '/v1/auth/verify-email', { token: tokenFromMail(mail) }), 'LINK_ALREADY_USED', 'second use')
    now = new Date(now.getTime() + 24 * 3600_000 + 1000)
    assertError(t, await h.request('POST', '/v1/auth/verify-email', { token: tokenFromMail(late) }), 'LINK_EXPIRED', 'expired after 24 h')
    const resetToken = tokenFromMail((await mailsTo(h, 'post-verify@example.com', /Confirm/))[0]).replace(/^./, c => c === 'A' ? 'B' : 'A')
    assertError(t, await h.request('POST', '/v1/auth/verify-email', { token: resetToken }), 'LINK_INVALID', 'one character changed')
    t.equal((await db('users').where({ email: 'late@example.com' }).first()).account_status, 'pending_email_verification')
    const stored = await db('account_tokens').select('token_hash')
    t.notOk(stored.some((r: { token_hash: string }) => r.token_hash === tokenFromMail(late)), 'tokens stored hashed')
  })

  t.test('resend-verification: same answer whatever the account; mail only for unverified', async t => {
    const h = await startApp(t, db)
    await signUp(h, 'resend-active@example.com', { verify: true })
    await h.request('POST', '/v1/auth/register', registration('resend-pending@example.com'))
    const answers = []
    for (const email of ['resend-pending@example.com', 'resend-active@example.com', 'nobody@example.com']) {
      answers.push(await h.request('POST', '/v1/auth/resend-verification', { email }))
    }
    for (const a of answers) {
      t.equal(a.status, 200)
      t.same(a.body, { message: MESSAGES.resendVerification })
    }
    t.equal((await mailsTo(h, 'resend-pending@example.com', /Confirm/)).length, 2)
    t.equal((await mailsTo(h, 'resend-active@example.com', /Confirm/)).length, 1)
    t.equal((await mailsTo(h, 'nobody@example.com', /./)).length, 0)
    assertError(t, await h.request('POST', '/v1/auth/resend-verification', { email: 'bad' }), 'VALIDATION_ERROR')
  })

  t.test('login: spec body, tokens, Free plan; unverified accounts may log in', async t => {
    const h = await startApp(t, db)
    await h.request('POST', '/v1/auth/register', registration('login@example.com'))
    const res = await h.request('POST', '/v1/auth/login', { email: ' LOGIN@example.com', password: PASSWORD })
    t.equal(res.status, 200)
    t.same(Object.keys(res.body).sort(), ['access_token', 'expires_in', 'refresh_token', 'token_type', 'user'])
    t.equal(res.body.token_type, 'Bearer')
    t.equal(res.body.expires_in, 900)
    t.match(res.body.access_token, /^[\w-]+\.[\w-]+\.[\w-]+$/)
    t.match(res.body.refresh_token, /^[\w-]+\.[\w-]+\.[\w-]+$/)
    t.match(res.body.user, { email: 'login@example.com', name: 'Ada Lovelace', subscription_status: 'none', subscription_plan: 'free', account_status: 'pending_email_verification' })
    t.match(res.body.user.id, USER_ID)
    const payload = JSON.parse(Buffer.from(res.body.access_token.split('.')[1], 'base64url').toString())
    t.equal(payload.exp - payload.iat, 900, 'access token lives 15 min')
    const refresh = JSON.parse(Buffer.from(res.body.refresh_token.split('.')[1], 'base64url').toString())
    t.equal(refresh.exp - refresh.iat, 7 * 24 * 3600, 'refresh token lives 7 days')
  })

  t.test('login: wrong password and unknown email are the same 401', async t => {
    const h = await startApp(t, db)
    await signUp(h, 'known@example.com')
    const wrong = await h.request('POST', '/v1/auth/login', { email: 'known@example.com', password: 'wrong password' })
    const unknown = await h.request('POST', '/v1/auth/login', { email: 'unknown@example.com', password: 'wrong password' })
    assertError(t, wrong, 'UNAUTHORIZED')
    assertError(t, unknown, 'UNAUTHORIZED')
    t.same(wrong.body, unknown.body)
    assertError(t, await h.request('POST', '/v1/auth/login', { email: 'known@example.com' }), 'VALIDATION_ERROR', 'missing password')
    assertError(t, await h.request('POST', '/v1/auth/login', { email: 'known@example.com', password: PASSWORD, remember: true }), 'VALIDATION_ERROR', 'unknown field')
  })

  t.test('refresh: rotates; the old token is spent; reuse revokes the family', async t => {
    const h = await startApp(t, db)
    const login = await signUp(h, 'rotate@example.com')
    const other = await h.request('POST', '/v1/auth/login', { email: 'rotate@example.com', password: PASSWORD })
    const r1 = await h.request('POST', '/v1/auth/refresh', { refresh_token: login.refresh_token })
    t.equal(r1.status, 200)
    t.same(Object.keys(r1.body).sort(), ['access_token', 'expires_in', 'refresh_token', 'token_type'])
    t.equal(r1.body.expires_in, 900)
    t.not(r1.body.refresh_token, login.refresh_token)
    t.equal((await h.request('GET', '/v1/user', undefined, bearer(r1.body.access_token))).status, 200, 'new access token works')
    const r2 = await h.request('POST', '/v1/auth/refresh', { refresh_token: r1.body.refresh_token })
    t.equal(r2.status, 200, 'successor works')

    // The first token again: it was copied. Whole family revoked, including the live successor.
    assertError(t, await h.request('POST', '/v1/auth/refresh', { refresh_token: login.refresh_token }), 'UNAUTHORIZED', 'reuse')
    assertError(t, await h.request('POST', '/v1/auth/refresh', { refresh_token: r2.body.refresh_token }), 'UNAUTHORIZED', 'successor revoked')
    t.equal((await h.request('POST', '/v1/auth/refresh', { refresh_token: other.body.refresh_token })).status, 200, 'another login is unaffected')
  })

  t.test('refresh: parallel use of one token: one success, family revoked', async t => {
    const h = await startApp(t, db)
    const login = await signUp(h, 'parallel@example.com')
    const results = await Promise.all([1, 2, 3].map(() => h.request('POST', '/v1/auth/refresh', { refresh_token: login.refresh_token })))
    t.equal(results.filter(r => r.status === 200).length, 1, 'exactly one rotation wins')
    for (const r of results.filter(r => r.status !== 200)) assertError(t, r, 'UNAUTHORIZED')
    const winner = results.find(r => r.status === 200)!
    assertError(t, await h.request('POST', '/v1/auth/refresh', { refresh_token: winner.body.refresh_token }), 'UNAUTHORIZED', 'reuse detected revoked the winner too')
  })

  t.test('refresh: expired after 7 days', async t => {
    let now = new Date('2030-01-01T00:00:00Z')
    const h = await startApp(t, db, { deps: { now: () => now } })
    const login = await signUp(h, 'expire@example.com')
    now = new Date(now.getTime() + 7 * 24 * 3600_000 + 1000)
    assertError(t, await h.request('POST', '/v1/auth/refresh', { refresh_token: login.refresh_token }), 'UNAUTHORIZED')
    assertError(t, await h.request('GET', '/v1/user', undefined, bearer(login.access_token)), 'UNAUTHORIZED', 'access token long expired')
  })

  t.test('logout: revokes the family; unknown tokens are ignored', async t => {
    const h = await startApp(t, db)
    const login = await signUp(h, 'logout@example.com')
    const res = await h.request('POST', '/v1/auth/logout', { refresh_token: login.refresh_token })
    t.equal(res.status, 204)
    t.equal(res.raw, '')
    assertError(t, await h.request('POST', '/v1/auth/refresh', { refresh_token: login.refresh_token }), 'UNAUTHORIZED')
    t.equal((await h.request('POST', '/v1/auth/logout', { refresh_token: 'garbage' })).status, 204)
    // No token in the body means the cc_refresh cookie (session-cookie.test.ts), which needs a same-origin request.
    assertError(t, await h.request('POST', '/v1/auth/logout', {}), 'FORBIDDEN')
    assertError(t, await h.request('POST', '/v1/auth/logout', { refresh_token: 42 }), 'VALIDATION_ERROR')
  })

  t.test('forgot-password: same answer for known and unknown; link from config, not Host', async t => {
    const h = await startApp(t, db)
    await signUp(h, 'forgot@example.com')
    const known = await h.request('POST', '/v1/auth/forgot-password', { email: 'Forgot@example.com' }, { host: 'evil.example.net', 'x-forwarded-host': 'evil.example.net' })
    const unknown = await h.request('POST', '/v1/auth/forgot-password', { email: 'ghost@example.com' })
    t.equal(known.status, 200)
    t.equal(unknown.status, 200)
    t.same(known.body, { message: MESSAGES.forgotPassword })
    t.same(unknown.body, known.body)
    const [mail] = await mailsTo(h, 'forgot@example.com', /Reset/)
    t.match(mail.links[0], /^https:\/\/dashboard\.example\.test\/reset-password\?token=[\w-]{43}$/)
    t.notMatch(mail.text, /evil/)
    t.equal((await mailsTo(h, 'ghost@example.com', /./)).length, 0)
    assertError(t, await h.request('POST', '/v1/auth/forgot-password', {}), 'VALIDATION_ERROR')
  })

  t.test('reset-password: once only; signs out sessions; verifies the address', async t => {
    const h = await startApp(t, db)
    const login = await signUp(h, 'reset@example.com')
    await h.request('POST', '/v1/auth/forgot-password', { email: 'reset@example.com' })
    await h.request('POST', '/v1/auth/forgot-password', { email: 'reset@example.com' })
    const [first, second] = await mailsTo(h, 'reset@example.com', /Reset/)
    const newPassword = 'a brand new passphrase'
    assertError(t, await h.request('POST', '/v1/auth/reset-password', { token: tokenFromMail(first), password: newPassword, password_confirmation: 'different' }), 'VALIDATION_ERROR', 'mismatch')
    assertError(t, await h.request('POST', '/v1/auth/reset-password', { token: tokenFromMail(first), password: 'short', password_confirmation: 'short' }), 'VALIDATION_ERROR', 'too short')
    const ok = await h.request('POST', '/v1/auth/reset-password', { token: tokenFromMail(first), password: newPassword, password_confirmation: newPassword })
    t.equal(ok.status, 200)
    t.same(ok.body, { message: MESSAGES.passwordReset })
    assertError(t, await h.request('POST', '/v1/auth/reset-password', { token: tokenFromMail(first), password: newPassword, password_confirmation: newPassword }), 'VALIDATION_ERROR', 'second use')
    assertError(t, await h.request('POST', '/v1/auth/reset-password', { token: tokenFromMail(second), password: 'yet another one', password_confirmation: 'yet another one' }), 'VALIDATION_ERROR', 'other outstanding link spent too')
    assertError(t, await h.request('POST', '/v1/auth/refresh', { refresh_token: login.refresh_token }), 'UNAUTHORIZED', 'refresh tokens revoked')
    assertError(t, await h.request('GET', '/v1/user', undefined, bearer(login.access_token)), 'UNAUTHORIZED', 'access token stops at once')
    assertError(t, await h.request('POST', '/v1/auth/login', { email: 'reset@example.com', password: PASSWORD }), 'UNAUTHORIZED', 'old password')
    const again = await h.request('POST', '/v1/auth/login', { email: 'reset@example.com', password: newPassword })
    t.equal(again.status, 200)
    t.equal(again.body.user.account_status, 'active', 'a reset link proves the mailbox')
    t.equal((await mailsTo(h, 'reset@example.com', /was changed/)).length, 1, 'owner told of the change')
  })

  t.test('reset-password: expires after 1 hour', async t => {
    let now = new Date('2030-01-01T00:00:00Z')
    const h = await startApp(t, db, { deps: { now: () => now } })
    await signUp(h, 'reset-late@example.com')
    await h.request('POST', '/v1/auth/forgot-password', { email: 'reset-late@example.com' })
    const [mail] = await mailsTo(h, 'reset-late@example.com', /Reset/)
    now = new Date(now.getTime() + 3600_000 + 1000)
    assertError(t, await h.request('POST', '/v1/auth/reset-password', { token: tokenFromMail(mail), password: 'new password 1', password_confirmation: 'new password 1' }), 'VALIDATION_ERROR')
  })
  t.test('mails carry no user-chosen text: a name with a link never reaches any mailbox', async t => {
    const h = await startApp(t, db)
    const lure = 'Prize! Claim at https://evil.example/claim now'
    const crlf = await h.request('POST', '/v1/auth/register', registration('lure-crlf@example.com', { name: 'Ada\r\nSubject: urgent\r\n\r\nVisit https://evil.example/' }))
    assertError(t, crlf, 'VALIDATION_ERROR', 'CR/LF in the name')
    t.same(Object.keys(crlf.body.error.details.fields), ['name'])
    t.equal((await mailsTo(h, 'lure-crlf@example.com', /./)).length, 0, 'no mail for the refused sign-up')

    // Someone signs a victim's address up under a name that reads as an instruction.
    t.equal((await h.request('POST', '/v1/auth/register', registration('lure-victim@example.com', { name: lure }))).status, 201)
    t.equal((await h.request('POST', '/v1/auth/register', registration('lure-victim@example.com', { name: lure }))).status, 201, 'again: the owner is told')
    t.equal((await h.request('POST', '/v1/auth/resend-verification', { email: 'lure-victim@example.com' })).status, 200)
    t.equal((await h.request('POST', '/v1/auth/forgot-password', { email: 'lure-victim@example.com' })).status, 200)
    const [reset] = await mailsTo(h, 'lure-victim@example.com', /Reset/)
    t.equal((await h.request('POST', '/v1/auth/reset-password', { token: tokenFromMail(reset), password: 'new password 1', password_confirmation: 'new password 1' })).status, 200)
    const mails = await mailsTo(h, 'lure-victim@example.com', /./)
    t.same(mails.map(m => m.subject).sort(), [
      'Confirm your Erugo Cloud email address', 'Confirm your Erugo Cloud email address', 'Reset your Erugo Cloud password',
      'Someone tried to sign up with your email address', 'Your Erugo Cloud password was changed',
    ], 'verification, resend, existing-account, reset and changed mails')
    for (const mail of mails) {
      t.notMatch(mail.text, /evil\.example|Prize|Claim/, `${mail.subject}: the name is not in the text`)
      t.notMatch(mail.subject, /evil|Prize/, `${mail.subject}: nor in the subject`)
      t.same(mail.links.filter(link => !link.startsWith('https://api.example.test/') && !link.startsWith('https://dashboard.example.test/')), [], `${mail.subject}: only our links`)
      t.match(mail.text, /^Hello,\n/, `${mail.subject}: a generic greeting`)
    }
  })
})
