/**
 * The dashboard's session and account recovery in a real browser (Debian's Chromium, headless)
 * against `cloud-connect start` on loopback: the shell's security headers on every page path, a
 * wrong password and the password reset by the mailed link, the refresh token in an HttpOnly
 * cookie scoped to /v1/auth (no token in script-readable storage), a cookie refresh from a foreign
 * origin refused without spending the cookie, and a reload signed in again by the cookie.
 */
import t from 'tap'
import { assertAccessible, requireBrowser } from '../helpers/browser.ts'
import { json } from '../agent/service.ts'
import { cookieNamed, CSP, followMailedLink, heading, JWT, mailedLink, originRequest, PASSWORD, signIn, startDashboard, THROUGH_EDGE, WRONG_PASSWORD } from './dashboard.ts'

if (requireBrowser(t)) {
  const w = await startDashboard(t)
  const { service, base, browser } = w
  t.comment(`dashboard at ${base}`)
  const email = `grace-${process.pid}@example.com`
  const newPassword = 'a brand new passphrase 42'

  t.test('every page path answers the shell with strict security headers', async t => {
    const page = await browser.newPage()
    for (const path of ['/', '/sign-up', '/sign-in', '/verify-email', '/reset-password', '/instances', '/instances/inst_x', '/billing', '/billing/success', '/account', '/admin']) {
      const shell = await page.goto(`${base}${path}`)
      t.equal(shell?.status(), 200, `${path} answers the shell`)
      const headers = shell?.headers() ?? {}
      t.equal(headers['content-security-policy'], CSP, `${path}: Content-Security-Policy`)
      t.equal(headers['referrer-policy'], 'no-referrer', `${path}: Referrer-Policy`)
      t.equal(headers['x-content-type-options'], 'nosniff', `${path}: X-Content-Type-Options`)
      t.match(headers['cache-control'], /no-store/, `${path}: Cache-Control`)
      if (THROUGH_EDGE) t.match(headers['strict-transport-security'], /max-age=\d+/, `${path}: HSTS`)
    }
    await page.context().close()
  })

  t.test('forgot password: the mailed link, a new password, sign in with it; wrong password is a readable message', async t => {
    const reg = await json(`${service.api}/auth/register`, 'POST', { name: 'Grace Hopper', email, password: PASSWORD, password_confirmation: PASSWORD, accept_terms: true, accept_privacy: true, accept_marketing: false })
    t.equal(reg.status, 201, 'account registered')
    await mailedLink(w, email, 'verify-email') // not followed: the reset link proves the mailbox too
    const context = await browser.newContext()
    const page = await context.newPage()

    await signIn(t, w, page, email, 'not the password at all')
    const wrong = page.getByRole('alert')
    await wrong.first().waitFor()
    t.match(await wrong.first().innerText(), WRONG_PASSWORD, 'wrong password: readable message')
    await assertAccessible(t, page, 'sign-in (wrong password)')

    await page.getByRole('link', { name: 'Forgot your password?' }).click()
    await heading(t, page, 'Reset your password')
    await assertAccessible(t, page, 'forgot-password')
    await page.getByLabel('Email', { exact: true }).fill(email)
    await page.getByRole('button', { name: 'Send reset link' }).click()
    await page.getByText(new RegExp(`${email.replace(/[.]/g, '\\.')}|check your email|sent`, 'i')).first().waitFor()
    t.pass('a confirmation is shown')

    await followMailedLink(t, w, page, email, 'reset-password', 'Choose a new password')
    await page.getByLabel('New password', { exact: true }).fill(newPassword)
    await page.getByLabel('Confirm new password', { exact: true }).fill(newPassword)
    await page.getByRole('button', { name: 'Set password' }).click()
    await page.getByRole('status').filter({ hasText: /password/i }).waitFor()
    t.pass('the change is confirmed')
    await assertAccessible(t, page, 'reset-password (done)')
    await page.getByRole('link', { name: 'Sign in' }).click()
    await heading(t, page, 'Sign in')

    await signIn(t, w, page, email, PASSWORD)
    await page.getByRole('alert').first().waitFor()
    t.match(await page.getByRole('alert').first().innerText(), WRONG_PASSWORD, 'the old password no longer works')
    await signIn(t, w, page, email, newPassword)
    await heading(t, page, 'Instances')
    t.pass('signed in with the new password')
    await context.close()
  })

  t.test('signed in: refresh token in an HttpOnly cookie only; a foreign-origin refresh refused; a reload signs in by the cookie', async t => {
    const context = await browser.newContext()
    const page = await context.newPage()
    await signIn(t, w, page, email, newPassword)
    await heading(t, page, 'Instances')

    // The refresh token lives in an HttpOnly cookie scoped to /v1/auth; the access token in memory only.
    const refresh = await cookieNamed(context, 'cc_refresh')
    t.ok(refresh, 'cc_refresh cookie set at sign-in')
    t.match(refresh, { httpOnly: true, secure: true, sameSite: 'Strict', path: '/v1/auth' }, 'cookie attributes')
    const stored = await page.evaluate('JSON.stringify([Object.entries(localStorage), Object.entries(sessionStorage)])') as string
    t.notMatch(stored, JWT, 'no token in localStorage or sessionStorage')
    t.notMatch(stored, refresh?.value ?? 'no cookie', 'the refresh token is not stored by script')
    t.equal(await page.evaluate('document.cookie.includes("cc_refresh")'), false, 'script cannot read the cookie')

    // A cookie refresh from a foreign origin is refused, and it does not spend the cookie.
    const foreign = await originRequest(w, 'POST', '/v1/auth/refresh', { origin: 'https://evil.example', cookie: `cc_refresh=${refresh?.value ?? ''}`, 'x-cc-session': 'cookie', 'content-type': 'application/json' }, '{}')
    t.equal(foreign.status, 403, 'refresh with a foreign Origin: 403')
    t.equal(JSON.parse(foreign.body).error?.code, 'FORBIDDEN')
    t.equal(foreign.headers['set-cookie'], undefined, 'no cookie handed out')
    await page.reload()
    await heading(t, page, 'Instances')
    t.pass('after a reload the cookie still signs the page in (same-origin refresh)')
    t.not((await cookieNamed(context, 'cc_refresh'))?.value, refresh?.value, 'the refresh rotated the cookie')
    t.same(browser.problems, { errors: [], csp: [] }, 'no script errors and no CSP refusals in any page')
    await context.close()
  })
}
