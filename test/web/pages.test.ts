/**
 * The dashboard's pages beyond the journey, in a real browser (Debian's Chromium, headless) against
 * `cloud-connect start` on loopback: plan limits shown as the API publishes them (and not from a
 * copy: the page follows the API's answer when it changes), the API's 422 details next to their
 * fields, the verification page's used / not valid / expired states with a working resend, the
 * account page (name, sign out everywhere, sign out), instance settings and not-found states, and
 * every page at 375 px wide.
 */
import t, { type Test } from 'tap'
import type { BrowserContext, Page } from 'playwright-core'
import { assertAccessible, DESKTOP, horizontalOverflow, NARROW, requireBrowser } from '../helpers/browser.ts'
import { delay, json } from '../agent/service.ts'
import { heading, mailedLink, mainNav, originRequest, PASSWORD, signIn, startDashboard, waitForText, type World } from './dashboard.ts'

/** Verification links live this long here (seconds): long enough to open at once, short enough to outwait. */
const VERIFY_TTL = 10

type Json = Record<string, any> // eslint-disable-line @typescript-eslint/no-explicit-any

async function register (t: Test, w: World, email: string, name = 'Pat Pages'): Promise<void> {
  const reg = await json(`${w.service.api}/auth/register`, 'POST', { name, email, password: PASSWORD, password_confirmation: PASSWORD, accept_terms: true, accept_privacy: true, accept_marketing: false })
  t.equal(reg.status, 201, `${email} registered`)
}

/** Registers and verifies through the API (the mailed token, at once); returns an access token. */
async function verifiedAccount (t: Test, w: World, email: string, name?: string): Promise<string> {
  await register(t, w, email, name)
  const token = new URL(await mailedLink(w, email, 'verify-email')).searchParams.get('token')
  t.equal((await json(`${w.service.api}/auth/verify-email`, 'POST', { token })).status, 200, `${email} verified`)
  const login = await json(`${w.service.api}/auth/login`, 'POST', { email, password: PASSWORD })
  t.equal(login.status, 200, `${email} signed in through the API`)
  return login.body.access_token as string
}

async function signedIn (t: Test, w: World, email: string): Promise<{ context: BrowserContext, page: Page }> {
  const context = await w.browser.newContext()
  const page = await context.newPage()
  await signIn(t, w, page, email, PASSWORD)
  await heading(t, page, 'Instances')
  return { context, page }
}

/**
 * Every later API answer of `path` on `context` changed by `edit`: the real answer is fetched
 * first, from here (Playwright's own fetch cannot resolve *.localhost names), with the page's headers.
 */
async function rewrite (w: World, context: BrowserContext, path: string, edit: (body: Json) => void): Promise<void> {
  await context.route(url => url.pathname === path, async route => {
    try {
      const headers = Object.fromEntries(Object.entries(await route.request().allHeaders()).filter(([name]) => !name.startsWith(':')))
      const real = await originRequest(w, route.request().method(), path, headers)
      const body = JSON.parse(real.body) as Json
      if (real.status === 200) edit(body)
      await route.fulfill({ status: real.status, json: body })
    } catch (err) {
      await route.abort().catch(() => {})
      throw err
    }
  })
}

function limitWords (limits: { instances: number, custom_domains_per_instance: number }): string[] {
  const d = limits.custom_domains_per_instance
  return [`${limits.instances} instance${limits.instances === 1 ? '' : 's'}`, d === 0 ? 'No custom domains' : `${d} custom domain${d === 1 ? '' : 's'} per instance`]
}

if (requireBrowser(t)) {
  const w = await startDashboard(t, { CC_VERIFY_EMAIL_TTL: String(VERIFY_TTL) })
  const { browser } = w
  let n = 0
  const fresh = (label: string) => `${label}-${process.pid}-${++n}@example.com`

  t.test('billing, instances and custom domains show the limits the API publishes, and follow it when it changes', async t => {
    const email = fresh('limits')
    const token = await verifiedAccount(t, w, email)
    const api = async (path: string) => (await json(`${w.service.api}${path}`, 'GET', undefined, token)).body as Json
    const { context, page } = await signedIn(t, w, email)

    // As the API says them.
    const sub = await api('/billing/subscription')
    const { plans } = await api('/billing/plans') as { plans: Array<{ plan: string, instances: number, custom_domains_per_instance: number }> }
    await mainNav(page, 'Billing')
    await heading(t, page, 'Billing')
    await waitForText(page, 'usage', text => text.includes(`${sub.usage.instances as number} of ${sub.limits.instances as number} instances`), 15_000)
    t.pass(`usage: ${sub.usage.instances as number} of ${sub.limits.instances as number} instances`)
    const cards = page.getByRole('listitem').filter({ has: page.getByRole('heading', { level: 3 }) })
    t.equal(await cards.count(), plans.length, 'a card per plan of GET /billing/plans')
    for (const [i, plan] of plans.entries()) {
      const text = await cards.nth(i).innerText()
      for (const words of limitWords(plan)) t.ok(text.includes(words), `${plan.plan}: "${words}" in ${JSON.stringify(text)}`)
    }

    await mainNav(page, 'Instances')
    await waitForText(page, 'instance usage', text => /0 of 1 instances on the Free plan/.test(text), 15_000)
    t.pass('the list says 0 of 1 instances on the Free plan')
    const created = await json(`${w.service.api}/instances`, 'POST', { name: 'Limits', subdomain: `limits-${process.pid}` }, token)
    t.equal(created.status, 201, 'one instance (the Free plan is full)')
    await page.getByRole('link', { name: 'New instance' }).click()
    await heading(t, page, 'New instance')
    const full = page.getByText(/allows 1 instance and you have 1/)
    await full.waitFor()
    t.match(await full.innerText(), /Billing/, `said before trying: ${await full.innerText()}`)
    await page.goto(`${w.base}/instances/${created.body.instance.id as string}`)
    await heading(t, page, 'Limits')
    const noDomains = page.getByText(/Free plan has no custom domains/)
    await noDomains.waitFor()
    t.pass(`custom domains: ${await noDomains.innerText()}`)

    // The API's answer changed on the way: the pages follow it, so they keep no copy of the limits.
    await rewrite(w, context, '/v1/billing/plans', body => { for (const plan of body.plans) { plan.instances += 40; plan.custom_domains_per_instance += 2 } })
    await rewrite(w, context, '/v1/billing/subscription', body => { body.limits = { instances: 7, custom_domains_per_instance: 2 }; body.usage.instances = 4 })
    await page.goto(`${w.base}/billing`)
    await heading(t, page, 'Billing')
    await waitForText(page, 'the changed usage', text => text.includes('4 of 7 instances'), 15_000)
    t.pass('billing: 4 of 7 instances, as the (changed) answer says')
    for (const [i, plan] of plans.entries()) {
      const text = await cards.nth(i).innerText()
      for (const words of limitWords({ instances: plan.instances + 40, custom_domains_per_instance: plan.custom_domains_per_instance + 2 })) t.ok(text.includes(words), `${plan.plan}: "${words}"`)
    }
    await mainNav(page, 'Instances')
    await waitForText(page, 'the changed limit', text => /1 of 7 instances on the Free plan/.test(text), 15_000)
    t.pass('instances: 1 of 7 (the count from the list, the limit from the API)')
    await page.goto(`${w.base}/instances/new`)
    await heading(t, page, 'New instance')
    await delay(1000)
    t.equal(await page.getByText(/allows \d+ instances? and you have/).count(), 0, 'no "plan is full" note when the API says there is room')
    await page.goto(`${w.base}/instances/${created.body.instance.id as string}`)
    await heading(t, page, 'Limits')
    await page.getByText('0 of 2 custom domains on this instance').waitFor()
    t.pass('custom domains: 0 of 2 on this instance')
    await context.close()
  })

  t.test('a 422 puts each message next to its field, linked for screen readers, and says so at the top', async t => {
    const context = await browser.newContext()
    const page = await context.newPage()
    await page.goto(`${w.base}/sign-up`)
    await heading(t, page, 'Create your account')
    await page.getByLabel('Name', { exact: true }).fill('Val Idation')
    await page.getByLabel('Email', { exact: true }).fill('not-an-address')
    await page.getByLabel('Password', { exact: true }).fill('short')
    await page.getByLabel('Confirm password', { exact: true }).fill('different')
    await page.getByLabel('I accept the terms of service').check()
    await page.getByRole('button', { name: 'Create account' }).click()
    const top = page.getByRole('alert').filter({ hasText: /\S/ })
    await top.first().waitFor()
    t.match(await top.first().innerText(), /fields need your attention/i, `form-level message: ${await top.first().innerText()}`)
    for (const label of ['Email', 'Password', 'Confirm password', 'I accept the privacy policy']) {
      const field = page.getByLabel(label, { exact: true })
      t.equal(await field.getAttribute('aria-invalid'), 'true', `${label}: aria-invalid`)
      const ids = (await field.getAttribute('aria-describedby') ?? '').split(/\s+/).filter(Boolean)
      const messages: string[] = []
      for (const id of ids) {
        const el = page.locator(`#${id}.field-error`)
        if (await el.count() === 1 && await el.isVisible()) messages.push(await el.innerText())
      }
      t.equal(messages.length, 1, `${label}: one visible error message linked by aria-describedby: ${JSON.stringify(messages)}`)
      t.notMatch(messages[0] ?? '', /VALIDATION|undefined|\[object|"/, `${label}: in words: ${messages[0] ?? ''}`)
      // Next to the field: in the same field group.
      const sameGroup = await field.evaluate((input, id) => input.closest('.field')?.querySelector(`#${id}`) !== null, ids.at(-1) ?? '')
      t.ok(sameGroup, `${label}: the message sits with its field`)
    }
    t.equal(await page.getByLabel('Name', { exact: true }).getAttribute('aria-invalid'), null, 'a valid field is not marked')
    t.equal(await page.evaluate('document.activeElement.name'), 'email', 'focus moves to the first field in error')
    await assertAccessible(t, page, 'sign-up (422)')

    // Fixing a field and sending again clears its message.
    await page.getByLabel('Email', { exact: true }).fill(fresh('fixed'))
    await page.getByRole('button', { name: 'Create account' }).click()
    await page.getByLabel('Password', { exact: true }).and(page.locator('[aria-invalid="true"]')).waitFor()
    t.pass('after the second answer Password is still marked')
    t.equal(await page.getByLabel('Email', { exact: true }).getAttribute('aria-invalid'), null, 'the corrected Email no longer is')
    t.equal(await page.locator('.field-error:visible').count(), 3, 'three messages left: Password, Confirm password, privacy policy')
    await context.close()
  })

  t.test('verification links: used, not valid and expired each say so in words, and Send a new link sends one that works', async t => {
    const context = await browser.newContext()
    const page = await context.newPage()
    const resendWorks = async (email: string) => {
      t.equal(await page.getByRole('button', { name: 'Send a new link' }).count(), 1, 'a resend button')
      await page.getByLabel('Email', { exact: true }).fill(email)
      await page.getByRole('button', { name: 'Send a new link' }).click()
      await page.getByRole('status').filter({ hasText: /sent/i }).waitFor()
      t.pass('the resend is confirmed')
    }

    const used = fresh('used')
    await register(t, w, used)
    const link = await mailedLink(w, used, 'verify-email')
    await page.goto(link)
    await heading(t, page, 'Email verified')
    await page.goto(link)
    await heading(t, page, 'This link was already used')
    t.equal(await page.getByRole('link', { name: 'Sign in' }).count() > 0, true, 'with a way to sign in')
    await assertAccessible(t, page, 'verify-email (used)')

    await page.goto(`${w.base}/verify-email?token=${'x'.repeat(43)}`)
    await heading(t, page, 'This link is not valid')
    await assertAccessible(t, page, 'verify-email (not valid)')

    const late = fresh('late')
    await register(t, w, late)
    const old = await mailedLink(w, late, 'verify-email')
    await delay((VERIFY_TTL + 1) * 1000)
    await page.goto(old)
    await heading(t, page, 'This link has expired')
    await assertAccessible(t, page, 'verify-email (expired)')
    await resendWorks(late)
    await page.goto(await mailedLink(w, late, 'verify-email'))
    await heading(t, page, 'Email verified')
    t.pass('the new link verifies the account')
    await context.close()
  })

  t.test('account: the name saved; sign out everywhere ends the other browser\'s session; sign out', async t => {
    const email = fresh('account')
    await verifiedAccount(t, w, email, 'Acc Ount')
    const here = await signedIn(t, w, email)
    const there = await signedIn(t, w, email)
    const page = here.page

    await mainNav(page, 'Account')
    await heading(t, page, 'Account')
    await waitForText(page, 'the email', text => text.includes(email), 15_000)
    t.pass('the email is shown')
    await page.getByLabel('Name', { exact: true }).fill('Renamed Person')
    await page.getByRole('button', { name: 'Save', exact: true }).click()
    await page.getByRole('status').filter({ hasText: /saved/i }).waitFor()
    await page.reload()
    await heading(t, page, 'Account')
    t.equal(await page.getByLabel('Name', { exact: true }).inputValue(), 'Renamed Person', 'the new name is kept')
    await assertAccessible(t, page, 'account')

    await page.getByRole('button', { name: 'Sign out everywhere' }).click()
    await heading(t, page, 'Sign in')
    await there.page.reload()
    await heading(t, there.page, 'Sign in')
    t.pass('the other browser is signed out at its next load')
    await there.page.goto(`${w.base}/instances`)
    await heading(t, there.page, 'Sign in')

    const again = await signedIn(t, w, email)
    await again.page.getByRole('navigation', { name: 'Main' }).getByRole('button', { name: 'Sign out' }).click()
    await heading(t, again.page, 'Sign in')
    await again.page.goto(`${w.base}/billing`)
    await heading(t, again.page, 'Sign in')
    t.pass('after Sign out a signed-in page asks to sign in')
    for (const c of [here.context, there.context, again.context]) await c.close()
  })

  t.test('instance settings: rename and move, the heading and public URL follow; a missing instance and a mistyped address say so', async t => {
    const email = fresh('settings')
    const token = await verifiedAccount(t, w, email)
    const created = await json(`${w.service.api}/instances`, 'POST', { name: 'Before', subdomain: `before-${process.pid}` }, token)
    t.equal(created.status, 201)
    const { context, page } = await signedIn(t, w, email)
    await page.goto(`${w.base}/instances/${created.body.instance.id as string}`)
    await heading(t, page, 'Before')
    const settings = page.locator('section').filter({ has: page.getByRole('heading', { level: 2, name: 'Settings' }) })
    await settings.getByLabel('Name', { exact: true }).fill('After')
    await settings.getByLabel('Subdomain', { exact: true }).fill(`after-${process.pid}`)
    await settings.getByRole('button', { name: 'Save changes' }).click()
    await heading(t, page, 'After')
    const url = page.getByRole('link', { name: new RegExp(`^https://after-${process.pid}\\.`) })
    await url.first().waitFor()
    t.pass(`the public URL follows: ${await url.first().innerText()}`)
    const stored = await json(`${w.service.api}/instances/${created.body.instance.id as string}`, 'GET', undefined, token)
    t.match(stored.body, { name: 'After', subdomain: `after-${process.pid}` }, 'saved through the API')

    await page.goto(`${w.base}/instances/inst_doesnotexist0000000000`)
    await heading(t, page, 'Instance not found')
    t.match(await page.getByRole('alert').first().innerText(), /does not exist/, 'in words')
    const typo = await page.goto(`${w.base}/no/such/page`)
    t.equal(typo?.status(), 404, 'a mistyped address answers 404')
    await heading(t, page, 'Page not found')
    await assertAccessible(t, page, 'page not found')
    await context.close()
  })

  t.test('focus stays where the keyboard put it while a page finishes loading', async t => {
    const email = fresh('focus')
    await verifiedAccount(t, w, email)
    const { context, page } = await signedIn(t, w, email)
    let release = (): void => {}
    const held = new Promise<void>(resolve => { release = resolve })
    // The list's API call waits until the keyboard has moved.
    await context.route(url => url.pathname === '/v1/instances', async route => { await held; await route.continue() })
    await page.goto(`${w.base}/instances`)
    await heading(t, page, 'Instances')
    await page.getByText('Loading instances…').waitFor()
    let label = ''
    for (let i = 0; i < 10 && label !== 'New instance'; i++) {
      await page.keyboard.press('Tab')
      label = await page.evaluate('document.activeElement?.textContent?.trim() ?? ""') as string
    }
    t.equal(label, 'New instance', 'Tab reached "New instance" while the list loads')
    release()
    await page.getByText('No instances yet').waitFor()
    await delay(500)
    t.equal(await page.evaluate('document.activeElement?.textContent?.trim() ?? ""'), 'New instance', 'still there once the page has loaded')
    await context.close()
  })

  t.test('a dashboard file that cannot be loaded: the page says so in words, not "Loading…" for ever', async t => {
    const context = await browser.newContext()
    await context.route(url => url.pathname === '/assets/pages/billing.js', route => route.abort())
    const page = await context.newPage()
    await page.goto(`${w.base}/sign-in`)
    const alert = page.getByRole('alert').filter({ hasText: /could not be loaded/ })
    await alert.waitFor()
    t.match(await alert.innerText(), /reload/i, `said: ${await alert.innerText()}`)
    await context.close()
  })

  t.test('every page at 375 px: no sideways scrolling, the navigation within reach', async t => {
    const email = fresh('narrow')
    const token = await verifiedAccount(t, w, email)
    const created = await json(`${w.service.api}/instances`, 'POST', { name: 'Narrow', subdomain: `narrow-${process.pid}` }, token)
    t.equal(created.status, 201)
    const check = async (page: Page, path: string, h1: string) => {
      const pending = new Map<object, string>()
      const log: string[] = []
      page.on('request', r => { pending.set(r, `${r.method()} ${r.url()}`) })
      page.on('requestfinished', r => { pending.delete(r) })
      page.on('requestfailed', r => { log.push(`failed ${r.url()} ${r.failure()?.errorText ?? ''}`); pending.delete(r) })
      page.on('response', r => { log.push(`${r.status()} ${r.url()}`) })
      await page.goto(`${w.base}${path}`)
      try {
        await heading(t, page, h1)
      } catch (err) {
        t.fail(`${path}: no h1 "${h1}"; the page says: ${await page.locator('body').innerText().catch(() => '?')}; pending: ${[...pending.values()].join(', ')}; seen: ${log.join(', ')}`)
        throw err
      }
      await page.waitForLoadState('networkidle').catch(() => {})
      t.ok(await horizontalOverflow(page) <= 0, `${path}: no sideways scrolling at 375 px (${await horizontalOverflow(page)})`)
      const nav = page.getByRole('navigation', { name: 'Main' })
      if (await nav.count() === 1) {
        for (const item of [...await nav.getByRole('link').all(), nav.getByRole('button', { name: 'Sign out' })]) {
          const box = await item.boundingBox()
          t.ok(box !== null && box.x >= 0 && box.x + box.width <= NARROW.width + 0.5, `${path}: "${await item.innerText()}" within the 375 px`)
        }
      }
      await assertAccessible(t, page, `${path} at 375 px`)
    }
    const guest = await browser.newPage({ viewport: NARROW })
    for (const [path, h1] of [['/sign-up', 'Create your account'], ['/sign-in', 'Sign in'], ['/forgot-password', 'Reset your password'], ['/check-email', 'Check your email'], ['/verify-email', 'This link is not valid'], ['/reset-password', 'Choose a new password'], ['/billing/success', 'Payment successful'], ['/billing/cancel', 'Payment cancelled']]) {
      await check(guest, path, h1)
    }
    await guest.context().close()
    const context = await browser.newContext({ viewport: NARROW })
    const page = await context.newPage()
    await signIn(t, w, page, email, PASSWORD)
    await heading(t, page, 'Instances')
    for (const [path, h1] of [['/instances', 'Instances'], ['/instances/new', 'New instance'], [`/instances/${created.body.instance.id as string}`, 'Narrow'], ['/billing', 'Billing'], ['/account', 'Account'], ['/admin', 'Operator']]) {
      await check(page, path, h1)
    }
    await page.setViewportSize(DESKTOP)
    await context.close()
    t.same(browser.problems, { errors: [], csp: [] }, 'no script errors and no CSP refusals in any page')
  })
}
