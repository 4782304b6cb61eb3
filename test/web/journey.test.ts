/**
 * The dashboard in a real browser (Debian's Chromium, headless) against `cloud-connect start` on
 * loopback, with a local Stripe stand-in and a test DNS server. A new user goes the whole way:
 * sign up, the mailed verification link, sign in, an instance and its token, a userspace agent
 * that the page sees connect by itself, the public URL, Pro through Checkout and the webhook, a
 * custom domain verified, the token regenerated (the agent stops) and the instance deleted.
 * Pages are found only by role, label and text (the accessible names of the dashboard contract);
 * axe-core runs on every page; screenshots of the main pages go to docs/. Session security and the
 * password reset: session.test.ts.
 */
import t from 'tap'
import { assertAccessible, DESKTOP, horizontalOverflow, NARROW, requireBrowser, screenshot, screenshotNarrow } from '../helpers/browser.ts'
import { delay, startAgent, tempDir } from '../agent/service.ts'
import { edgeText, startOrigin } from '../agent/origin.ts'
import { followMailedLink, heading, mainNav, mainText, markPage, PASSWORD, shows, startDashboard, stillSamePage, waitForText } from './dashboard.ts'

if (requireBrowser(t)) {
  const w = await startDashboard(t)
  const { service, base, browser, stripe, dns } = w

  t.test('a new user: sign up, verify, sign in, instance, agent connected, Pro, custom domain, regenerate, delete', async t => {
    const context = await browser.newContext()
    // Checkout opens at Stripe in a new tab; the stand-in's URL is answered here, never fetched.
    await context.route('https://checkout.stripe.test/**', route => route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><html lang="en"><title>Checkout</title><h1>Checkout</h1></html>' }))
    const page = await context.newPage()
    const email = `ada-${process.pid}@example.com`
    const subdomain = 'ada-files'

    // Sign up.
    await page.goto(`${base}/sign-up`)
    await heading(t, page, 'Create your account')
    await assertAccessible(t, page, 'sign-up')
    await screenshot(page, 'dashboard-sign-up')
    await page.getByLabel('Name', { exact: true }).fill('Ada Lovelace')
    await page.getByLabel('Email', { exact: true }).fill(email)
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD)
    await page.getByLabel('Confirm password', { exact: true }).fill(PASSWORD)
    await page.getByLabel('I accept the terms of service').check()
    await page.getByLabel('I accept the privacy policy').check()
    await page.getByRole('button', { name: 'Create account' }).click()
    await heading(t, page, 'Check your email')
    await assertAccessible(t, page, 'check-email')

    // The mailed verification link opens the dashboard, which drops the token from the address bar.
    await followMailedLink(t, w, page, email, 'verify-email', 'Email verified')
    await page.getByRole('link', { name: 'Sign in' }).click()

    // Sign in.
    await heading(t, page, 'Sign in')
    await assertAccessible(t, page, 'sign-in')
    await screenshot(page, 'dashboard-sign-in')
    await screenshotNarrow(page, 'dashboard-sign-in-narrow')
    await page.getByLabel('Email', { exact: true }).fill(email)
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD)
    await page.getByRole('button', { name: 'Sign in', exact: true }).click()
    await heading(t, page, 'Instances')
    await shows(t, page.getByText('No instances yet'), 'empty state')
    await assertAccessible(t, page, 'instances (empty)')
    const nav = page.getByRole('navigation', { name: 'Main' })
    for (const name of ['Instances', 'Billing', 'Account']) await shows(t, nav.getByRole('link', { name, exact: true }), `nav link ${name}`)
    t.equal(await nav.getByRole('link', { name: 'Operator' }).count(), 0, 'no Operator link for a user')

    // New instance: the subdomain checked as it is typed.
    await page.getByRole('link', { name: 'New instance' }).click()
    await heading(t, page, 'New instance')
    await page.getByLabel('Name', { exact: true }).fill('Home')
    await page.getByLabel('Subdomain', { exact: true }).fill(subdomain)
    await page.getByText(/\bavailable\b/i).first().waitFor()
    await assertAccessible(t, page, 'new instance')
    await page.getByRole('button', { name: 'Create instance' }).click()
    await heading(t, page, 'Home')
    const instanceId = /\/instances\/([^/?#]+)$/.exec(page.url())?.[1] ?? ''
    t.ok(instanceId !== '', `instance page ${page.url()}`)

    // The token, shown once, with the container settings to paste.
    const tokenField = page.getByRole('textbox', { name: 'Instance token', exact: true })
    const token = await tokenField.inputValue()
    t.match(token, /^\S{20,}$/, 'the instance token is in its field')
    t.ok(await tokenField.evaluate(el => (el as HTMLInputElement).readOnly), 'read-only field')
    await shows(t, page.getByRole('button', { name: 'Copy token' }), 'Copy token button')
    await shows(t, page.getByRole('button', { name: 'Copy settings' }), 'Copy settings button')
    t.ok((await mainText(page)).split(token).length > 2, 'the container settings carry the token too')
    await assertAccessible(t, page, 'instance (token shown)')
    await screenshot(page, 'dashboard-instance-token')

    // The public URL is a link; the status is Pending until an agent comes.
    const publicLink = page.getByRole('link', { name: new RegExp(`${subdomain}\\.localhost`) }).first()
    const publicUrl = new URL(await publicLink.getAttribute('href') ?? '')
    t.equal(publicUrl.hostname, `${subdomain}.localhost`, `public URL ${publicUrl.href}`)
    await shows(t, page.getByText('Pending', { exact: true }), 'status Pending before the agent')

    // An agent with that token in front of a local web server: the page shows Connected by itself.
    const origin = await startOrigin(t)
    await markPage(page)
    const agent = startAgent(t, { api: service.api, token, dir: tempDir(t, 'cc-web-agent-'), target: `http://127.0.0.1:${origin.port}` })
    await agent.waitFor(/"msg":"tunnel up: the gateway answers"/, 60_000)
    await page.getByText('Connected', { exact: true }).waitFor({ timeout: 15_000 })
    t.ok(await stillSamePage(page), 'Connected shown within 15 s without a reload')

    // The public URL serves the origin's page, through the edge with our CA.
    const served = await edgeText({ port: service.httpsPort, hostname: publicUrl.hostname, ca: service.ca }, '/hello')
    t.equal(served.status, 200)
    t.equal(served.body, `hello GET /hello host=${publicUrl.hostname} proto=https\n`, 'the origin answers through edge, tunnel and agent')
    const tab = await context.newPage()
    await tab.goto(`https://${publicUrl.hostname}:${service.httpsPort}/from-the-browser`)
    t.match(await tab.locator('body').innerText(), /hello GET \/from-the-browser/, 'and in the browser, with the CA trusted')
    await tab.close()

    // On Free, custom domains are explained as a plan limit.
    await page.getByLabel('Domain', { exact: true }).fill('files.example.com')
    await page.getByRole('button', { name: 'Add domain' }).click()
    const domainRefused = page.getByRole('alert').filter({ hasText: /plan/i })
    await domainRefused.first().waitFor()
    t.match(await domainRefused.first().innerText(), /Pro|Business/, `readable plan limit: ${await domainRefused.first().innerText()}`)

    // A second instance: the taken subdomain with suggestions, then the Free plan's instance limit.
    await mainNav(page, 'Instances')
    await heading(t, page, 'Instances')
    await page.getByRole('link', { name: 'New instance' }).click()
    await heading(t, page, 'New instance')
    await page.getByLabel('Name', { exact: true }).fill('Second')
    await page.getByLabel('Subdomain', { exact: true }).fill(subdomain)
    await page.getByText(/\btaken\b/i).first().waitFor()
    t.pass('the live region says taken')
    const suggestion = page.getByRole('button', { name: new RegExp(`^${subdomain}.+`) }).first()
    const suggested = (await suggestion.innerText()).trim()
    await suggestion.click()
    t.equal(await page.getByLabel('Subdomain', { exact: true }).inputValue(), suggested, `a suggestion fills the field: ${suggested}`)
    await page.getByText(/\bavailable\b/i).first().waitFor()
    await assertAccessible(t, page, 'new instance (taken, suggestions)')
    await page.getByRole('button', { name: 'Create instance' }).click()
    const limit = page.getByRole('alert').filter({ hasText: /plan/i })
    await limit.first().waitFor()
    t.match(await limit.first().innerText(), /instance/i, `readable instance limit: ${await limit.first().innerText()}`)
    t.equal(new URL(page.url()).pathname, '/instances/new', 'still on the form')

    // The list: live status.
    await mainNav(page, 'Instances')
    await heading(t, page, 'Instances')
    const table = page.getByRole('table', { name: 'Your instances' })
    for (const column of ['Name', 'Address', 'Status', 'Last seen', 'Tunnel IP']) await shows(t, table.getByRole('columnheader', { name: column }), `column ${column}`)
    const row = table.getByRole('row').filter({ has: page.getByRole('link', { name: 'Home' }) })
    await row.getByText('Connected', { exact: true }).waitFor()
    await assertAccessible(t, page, 'instances')
    await screenshot(page, 'dashboard-instances')
    await page.setViewportSize(NARROW)
    t.ok(await horizontalOverflow(page) <= 0, 'instances: no sideways scrolling at 375 px')
    await page.setViewportSize(DESKTOP)

    // Billing: Pro through Checkout in a new tab; the webhook arrives; the page shows Pro by itself.
    await mainNav(page, 'Billing')
    await heading(t, page, 'Billing')
    const buttons = [/Subscribe to (Pro|Business)/g, /Manage billing/g]
    await waitForText(page, 'plan Free', text => /\bFree\b/.test(text), 15_000, buttons)
    t.match(await mainText(page), /1 of 1 instances?/, 'usage: 1 of 1 instances')
    await assertAccessible(t, page, 'billing (Free)')
    await screenshot(page, 'dashboard-billing')
    await markPage(page)
    const [checkout] = await Promise.all([context.waitForEvent('page'), page.getByRole('button', { name: 'Subscribe to Pro' }).click()])
    // The tab opens blank at the click (popup blockers) and goes to Checkout once the API answers.
    await checkout.waitForURL(/^https:\/\/checkout\.stripe\.test\//)
    const sessionId = /\/c\/pay\/(cs_test_\w+)/.exec(checkout.url())?.[1]
    t.ok(sessionId !== undefined && stripe.sessions.has(sessionId), `Checkout opened in a new tab: ${checkout.url()}`)
    await checkout.close()
    const at = Math.floor(Date.now() / 1000)
    const { session, subscription } = stripe.completeCheckout(sessionId!, { at })
    for (const event of [stripe.event('customer.subscription.created', subscription, at), stripe.event('checkout.session.completed', session, at)]) {
      const payload = JSON.stringify(event)
      const res = await fetch(`${service.api}/billing/webhook`, { method: 'POST', headers: { 'content-type': 'application/json', 'stripe-signature': stripe.sign(payload, { timestamp: at }) }, body: payload })
      t.equal(res.status, 200, `webhook ${String(event.type)} delivered`)
    }
    // Pro allows 3 instances: the usage line says so once the page has the new plan.
    await waitForText(page, 'plan Pro', text => /\bPro\b/.test(text) && /1 of 3 instances/.test(text), 15_000, buttons)
    t.ok(await stillSamePage(page), 'Pro shown without a reload')
    await assertAccessible(t, page, 'billing (Pro)')

    // A custom domain: the DNS record to create, the test DNS answers it, Verify.
    await mainNav(page, 'Instances')
    await heading(t, page, 'Instances')
    await page.getByRole('table', { name: 'Your instances' }).getByRole('link', { name: 'Home' }).click()
    await heading(t, page, 'Home')
    t.equal(new URL(page.url()).pathname, `/instances/${instanceId}`)
    t.equal(await page.getByRole('textbox', { name: 'Instance token', exact: true }).count(), 0, 'the token is shown only once')
    const domain = 'files.example.com'
    const target = `${instanceId}.tunnel.localhost`
    await page.getByLabel('Domain', { exact: true }).fill(domain)
    await page.getByRole('button', { name: 'Add domain' }).click()
    const record = page.getByRole('row').filter({ hasText: target })
    await record.first().waitFor()
    t.match(await record.first().innerText(), /CNAME/, `the CNAME record to create: ${await record.first().innerText()}`)
    await shows(t, record.first().getByRole('button', { name: 'Copy' }).first(), 'a Copy button per record')
    await assertAccessible(t, page, 'instance (custom domain pending)')
    dns.set(domain, { CNAME: target })
    await page.getByRole('button', { name: 'Verify' }).click()
    await waitForText(page, 'domain verified', text => /\bverified\b/i.test(text) && !/not verified/i.test(text), 15_000)
    t.pass('the domain is shown verified')
    await assertAccessible(t, page, 'instance (custom domain verified)')
    await screenshot(page, 'dashboard-custom-domain')

    // Regenerate the token: confirmed in a dialog, the new one shown, the running agent stops.
    await page.getByRole('button', { name: 'Regenerate token' }).click()
    const regenerate = page.getByRole('dialog')
    await regenerate.waitFor()
    await assertAccessible(t, page, 'regenerate dialog')
    await regenerate.getByRole('button', { name: 'Regenerate', exact: true }).click()
    const newToken = await page.getByRole('textbox', { name: 'Instance token', exact: true }).inputValue()
    t.match(newToken, /^\S{20,}$/)
    t.not(newToken, token, 'a new token')
    const code = await Promise.race([agent.exited, delay(60_000).then(() => 'still running')])
    t.equal(code, 3, 'the agent with the old token stopped (exit status 3: token rejected)')

    // Delete: the dialog says what stops working.
    await page.getByRole('button', { name: 'Delete instance' }).click()
    const remove = page.getByRole('dialog')
    await remove.waitFor()
    t.match(await remove.innerText(), new RegExp(`${subdomain}\\.localhost|${domain}`), 'the dialog names the addresses that stop working')
    await assertAccessible(t, page, 'delete dialog')
    await remove.getByRole('button', { name: 'Delete', exact: true }).click()
    await heading(t, page, 'Instances')
    await page.getByText('No instances yet').waitFor()
    const gone = await edgeText({ port: service.httpsPort, hostname: publicUrl.hostname, ca: service.ca }, '/gone').catch((err: Error) => ({ status: 0, body: err.message }))
    t.notMatch(gone.body, /hello GET/, `the public URL no longer reaches the origin (${gone.status})`)

    t.same(browser.problems, { errors: [], csp: [] }, 'no script errors and no CSP refusals in any page')
    await context.close()
  })
}
