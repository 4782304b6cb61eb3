/**
 * The dashboard in a real browser (Debian's Chromium, headless) against `cloud-connect start` on
 * loopback: the operator view for an account given the role with the real CLI (the service is
 * stopped for it: the embedded database serves one process at a time) and refused to everyone
 * else; sign-in and a new instance with the keyboard alone, focus visible at each step; and every
 * link of every mail the account flows send opening a working dashboard page.
 */
import t, { type Test } from 'tap'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Page } from 'playwright-core'
import { assertAccessible, requireBrowser, screenshot } from '../helpers/browser.ts'
import { delay, json } from '../agent/service.ts'
import { heading, mailedLink, mainNav, PASSWORD, signIn, startDashboard, withServiceStopped, type World } from './dashboard.ts'

const OPERATOR_SECTIONS = ['Gateways', 'Instances', 'Recent sign-ups', 'Paying accounts', 'Cancellations', 'Webhook failures', 'Certificates expiring soon']

/** Registers `email` through the API and opens its mailed verification link in a fresh browser context. */
async function verifiedAccount (t: Test, w: World, name: string, email: string): Promise<void> {
  const reg = await json(`${w.service.api}/auth/register`, 'POST', { name, email, password: PASSWORD, password_confirmation: PASSWORD, accept_terms: true, accept_privacy: true, accept_marketing: false })
  t.equal(reg.status, 201, `${email} registered`)
  const context = await w.browser.newContext()
  const page = await context.newPage()
  await page.goto(await mailedLink(w, email, 'verify-email'))
  await heading(t, page, 'Email verified')
  await context.close()
}

/** What identifies the focused element, and the styles that show focus. */
interface Focused { tag: string, label: string, outlineStyle: string, outlineWidth: string, boxShadow: string }

const FOCUSED = `(() => {
  const el = document.activeElement
  if (el === null || el === document.body) return null
  const labelled = el.labels && el.labels.length > 0 ? el.labels[0].textContent : ''
  const style = getComputedStyle(el)
  return { tag: el.tagName.toLowerCase(), label: (labelled || el.getAttribute('aria-label') || el.textContent || '').trim(), outlineStyle: style.outlineStyle, outlineWidth: style.outlineWidth, boxShadow: style.boxShadow }
})()`

async function focused (page: Page): Promise<Focused | null> {
  return await page.evaluate(FOCUSED) as Focused | null
}

/**
 * Presses Tab (nothing else) until the element labelled `label` has focus, at most 25 times; then
 * checks that focus is visible: its outline or box-shadow differ from the same element unfocused.
 */
async function tabTo (t: Test, page: Page, label: string): Promise<void> {
  let now: Focused | null = null
  for (let i = 0; i < 25; i++) {
    await page.keyboard.press('Tab')
    now = await focused(page)
    if (now !== null && now.label === label) break
  }
  if (now === null || now.label !== label) {
    t.fail(`"${label}" not reached with 25 Tabs (focus on ${JSON.stringify(now)})`)
    return
  }
  t.pass(`Tab reaches "${label}"`)
  const shown = (now.outlineStyle !== 'none' && now.outlineWidth !== '0px') || now.boxShadow !== 'none'
  // The same element's styles without focus; then focus is put back on it for the typing that follows.
  const unfocused = await page.evaluate(`(() => { const el = document.activeElement; el.blur(); const s = getComputedStyle(el); const r = { outlineStyle: s.outlineStyle, outlineWidth: s.outlineWidth, boxShadow: s.boxShadow }; el.focus(); return r })()`) as Pick<Focused, 'outlineStyle' | 'outlineWidth' | 'boxShadow'>
  t.ok(shown && (now.outlineStyle !== unfocused.outlineStyle || now.outlineWidth !== unfocused.outlineWidth || now.boxShadow !== unfocused.boxShadow),
    `"${label}" shows focus: outline ${now.outlineStyle} ${now.outlineWidth}, box-shadow ${now.boxShadow} (unfocused: ${unfocused.outlineStyle} ${unfocused.outlineWidth}, ${unfocused.boxShadow})`)
  t.equal((await focused(page))?.label, label, `focus back on "${label}"`)
}

/** Every mail to `email` in the outbox, with its subject and the http(s) links in it. */
function mailsTo (w: World, email: string): Array<{ file: string, subject: string, text: string, links: string[] }> {
  const found: Array<{ file: string, subject: string, text: string, links: string[] }> = []
  for (const file of existsSync(w.service.outbox) ? readdirSync(w.service.outbox).sort() : []) {
    const text = readFileSync(join(w.service.outbox, file), 'utf8')
    if (!text.includes(`To: ${email}`)) continue
    const subject = /^Subject: (.*)$/m.exec(text)?.[1] ?? file
    found.push({ file, subject, text, links: [...text.matchAll(/https?:\/\/[^\s<>"')]+/g)].map(m => m[0]) })
  }
  return found
}

if (requireBrowser(t)) {
  // The restarted service must outlive the subtest that restarts it.
  const root = t
  const w = await startDashboard(t)
  const { browser } = w
  const admin = `operator-${process.pid}@example.com`
  const plain = `user-${process.pid}@example.com`

  t.test('an account granted the role with the CLI sees the Operator view; others are refused in words', async t => {
    await verifiedAccount(t, w, 'Olive Operator', admin)
    await verifiedAccount(t, w, 'Uma User', plain)

    const output = await withServiceStopped(root, w, ['admin', 'grant', admin])
    t.match(output, /is now an administrator/, `cloud-connect admin grant: ${output.trim()}`)

    const context = await browser.newContext()
    const page = await context.newPage()
    await signIn(t, w, page, admin, PASSWORD)
    await heading(t, page, 'Instances')
    await mainNav(page, 'Operator')
    await heading(t, page, 'Operator')
    t.equal(new URL(page.url()).pathname, '/admin', 'the Operator link goes to /admin')
    for (const name of OPERATOR_SECTIONS) await page.getByRole('heading', { level: 2, name, exact: true }).waitFor()
    t.pass(`sections: ${OPERATOR_SECTIONS.join(', ')}`)
    const section = (name: string) => page.locator('section').filter({ has: page.getByRole('heading', { level: 2, name, exact: true }) })
    const gatewayRows = section('Gateways').getByRole('table').getByRole('row')
    await gatewayRows.nth(1).waitFor()
    t.ok(await gatewayRows.count() >= 2, `the gateway of start is listed: ${await gatewayRows.nth(1).innerText()}`)
    const gatewayColumns = await section('Gateways').getByRole('columnheader').allInnerTexts()
    t.ok(gatewayColumns.some(c => /last report/i.test(c)) && gatewayColumns.some(c => /peer/i.test(c)), `gateways show their last report and peer count: ${gatewayColumns.join(', ')}`)
    t.ok(['Region', 'Alive', 'Draining', 'Placed instances'].every(c => gatewayColumns.includes(c)), `and their region, liveness, draining and placements: ${gatewayColumns.join(', ')}`)
    const signups = section('Recent sign-ups').getByRole('table')
    for (const email of [admin, plain]) await signups.getByRole('row').filter({ hasText: email }).first().waitFor()
    t.pass('both sign-ups are listed')
    await assertAccessible(t, page, 'operator')
    await screenshot(page, 'dashboard-operator')
    await context.close()

    const userContext = await browser.newContext()
    const userPage = await userContext.newPage()
    await signIn(t, w, userPage, plain, PASSWORD)
    await heading(t, userPage, 'Instances')
    t.equal(await userPage.getByRole('navigation', { name: 'Main' }).getByRole('link', { name: 'Operator' }).count(), 0, 'no Operator link for a user')
    await userPage.goto(`${w.base}/admin`)
    await heading(t, userPage, 'Operator')
    const refused = userPage.getByRole('alert').filter({ hasText: /\S/ })
    await refused.first().waitFor()
    const words = await refused.first().innerText()
    t.match(words, /operator|administrator|not allowed|permission/i, `a readable refusal: ${words}`)
    t.notMatch(words, /FORBIDDEN|403|undefined|\[object/, 'no codes or raw values')
    for (const name of OPERATOR_SECTIONS) t.equal(await userPage.getByRole('heading', { level: 2, name, exact: true }).count(), 0, `no "${name}" section for a user`)
    await assertAccessible(t, userPage, 'operator (refused)')
    await userContext.close()
  })

  t.test('keyboard only: sign in, then a new instance, with focus visible at each step', async t => {
    const context = await browser.newContext()
    const page = await context.newPage()
    await page.goto(`${w.base}/sign-in`)
    await heading(t, page, 'Sign in')
    await tabTo(t, page, 'Email')
    await page.keyboard.type(plain)
    await tabTo(t, page, 'Password')
    await page.keyboard.type(PASSWORD)
    await tabTo(t, page, 'Sign in')
    // Back on a field, Enter submits the form.
    await page.keyboard.press('Shift+Tab')
    t.equal((await focused(page))?.label, 'Password', 'Shift+Tab returns to Password')
    await page.keyboard.press('Enter')
    await heading(t, page, 'Instances')
    t.pass('signed in with the keyboard alone')

    await tabTo(t, page, 'New instance')
    await page.keyboard.press('Enter')
    await heading(t, page, 'New instance')
    await tabTo(t, page, 'Name')
    await page.keyboard.type('Keys')
    await tabTo(t, page, 'Subdomain')
    await page.keyboard.type('keyboard-only')
    const live = page.locator('[aria-live]').filter({ hasText: /\bavailable\b/i })
    await live.first().waitFor()
    t.pass(`the live region says: ${await live.first().innerText()}`)
    t.equal((await focused(page))?.label, 'Subdomain', 'focus stays in Subdomain while the check runs')
    await page.keyboard.press('Enter')
    await heading(t, page, 'Keys')
    t.match(page.url(), /\/instances\/[^/]+$/, 'Enter created the instance')
    await context.close()
  })

  t.test('every link in every mail opens a working dashboard page', async t => {
    const email = `mail-${process.pid}@example.com`
    const body = { name: 'Mae Links', email, password: PASSWORD, password_confirmation: PASSWORD, accept_terms: true, accept_privacy: true, accept_marketing: false }
    t.equal((await json(`${w.service.api}/auth/register`, 'POST', body)).status, 201, 'registered')
    const again = await json(`${w.service.api}/auth/register`, 'POST', body)
    t.equal(again.status, 201, 'registering the same email again looks the same to the caller')
    const forgot = await json(`${w.service.api}/auth/forgot-password`, 'POST', { email })
    t.ok(forgot.status >= 200 && forgot.status < 300, `password reset asked for: ${forgot.status}`)

    let mails: ReturnType<typeof mailsTo> = []
    for (let i = 0; i < 150 && (mails = mailsTo(w, email)).length < 3; i++) await delay(100)
    t.equal(mails.length, 3, `three mails: ${mails.map(m => m.subject).join(' | ')}`)
    for (const mail of mails) t.ok(mail.links.length > 0, `"${mail.subject}" has a link`)
    const existing = mails.find(m => /already has an account/.test(m.text))
    t.ok(existing?.links.some(link => /\/reset-password\?token=/.test(link)), `the existing-account mail has a reset link:\n${existing?.text ?? '(no such mail)'}`)

    const context = await browser.newContext()
    const page = await context.newPage()
    for (const { subject, link } of mails.flatMap(m => m.links.map(link => ({ subject: m.subject, link })))) {
      const reply = await page.goto(link)
      t.equal(reply?.status(), 200, `${subject}: ${link} answers`)
      t.ok(link.startsWith(`${w.base}/`), `${link} is on the dashboard's origin`)
      // The page settles once its API calls are answered (a token page shows "Verifying…" first).
      await page.waitForLoadState('networkidle')
      const expected = /\/reset-password\?/.test(link) ? 'Choose a new password' : /\/verify-email\?/.test(link) ? 'Email verified' : null
      if (expected !== null) await heading(t, page, expected)
      else t.pass(`${subject}: ${link} opens "${await page.getByRole('heading', { level: 1 }).first().innerText()}"`)
      const alerts = await page.getByRole('alert').filter({ hasText: /\S/ }).allInnerTexts()
      t.same(alerts, [], `${subject}: no error on ${new URL(link).pathname}`)
    }
    await context.close()
    t.same(browser.problems, { errors: [], csp: [] }, 'no script errors and no CSP refusals in any page')
  })
}
