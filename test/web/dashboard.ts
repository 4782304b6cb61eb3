/**
 * Shared set-up of the dashboard's browser tests: `cloud-connect start` on loopback pointed at a
 * local Stripe stand-in and a test DNS server, headless Chromium trusting its CA, and helpers that
 * find things the way people do (role, label, text: the dashboard contract's accessible names).
 */
import type { Test } from 'tap'
import { existsSync, readdirSync, readFileSync } from 'node:fs'
import https from 'node:https'
import { join } from 'node:path'
import type { BrowserContext, Locator, Page } from 'playwright-core'
import { assertAccessible, launchBrowser, type TestBrowser } from '../helpers/browser.ts'
import { TinyDns } from '../helpers/dns-server.ts'
import { StripeFake } from '../helpers/stripe-fake.ts'
import { freePort } from '../helpers/ports.ts'
import { delay, Proc, serviceEnv, startService, tempDir, type Service, type ServicePorts } from '../agent/service.ts'

/** Through the edge (`https://app.localhost:<https port>`), or control's own listener (a secure context too). */
export const THROUGH_EDGE = true

export const PASSWORD = 'correct horse battery staple'
export const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
export const JWT = /eyJ[\w-]+\.[\w-]+\.[\w-]+/
/** The API's words, or the dashboard's own. */
export const WRONG_PASSWORD = /invalid email or password|email or password is incorrect/i

export interface World {
  /** Mail files already read (mailedLink skips them). */
  mails: Set<string>
  service: Service
  base: string
  browser: TestBrowser
  stripe: StripeFake
  dns: TinyDns
  dir: string
  /** What `start` was given, for a restart on the same data and ports. */
  ports: Partial<ServicePorts>
  env: NodeJS.ProcessEnv
}

/** The newest mail to `email` carrying a `<base>/<page>?token=` link not seen before; the link. */
export async function mailedLink (w: World, email: string, page: 'verify-email' | 'reset-password'): Promise<string> {
  const seen = w.mails
  const link = new RegExp(`https?://[^\\s]+/${page}\\?token=[^\\s]+`)
  const deadline = Date.now() + 15_000
  while (Date.now() < deadline) {
    for (const file of existsSync(w.service.outbox) ? readdirSync(w.service.outbox).sort() : []) {
      if (seen.has(file)) continue
      const text = readFileSync(join(w.service.outbox, file), 'utf8')
      const m = link.exec(text)
      if (text.includes(`To: ${email}`) && m !== null) {
        seen.add(file)
        return m[0]
      }
    }
    await delay(100)
  }
  throw new Error(`no mail to ${email} with a ${page} link within 15 s`)
}

/** Passes once `locator` is visible (it may still be loading); fails naming it after the timeout. */
export async function shows (t: Test, locator: Locator, what: string): Promise<void> {
  try {
    await locator.first().waitFor()
    t.pass(what)
  } catch (err) {
    t.fail(`${what}: ${(err as Error).message.split('\n')[0]}`)
  }
}

export async function heading (t: Test, page: Page, name: string): Promise<void> {
  await page.getByRole('heading', { level: 1, name, exact: true }).waitFor()
  t.pass(`h1 "${name}" at ${new URL(page.url()).pathname}`)
}

/**
 * Opens the newest `kind` link mailed to `email` (after checking it points at the dashboard's page):
 * the page headed `title` shows, without the token in the address bar, and passes the accessibility check.
 */
export async function followMailedLink (t: Test, w: World, page: Page, email: string, kind: 'verify-email' | 'reset-password', title: string): Promise<void> {
  const link = await mailedLink(w, email, kind)
  t.ok(link.startsWith(`${w.base}/${kind}?token=`), `the mail links to the dashboard page: ${link}`)
  await page.goto(link)
  await heading(t, page, title)
  t.notMatch(page.url(), /token=/, 'the token is dropped from the address bar')
  await assertAccessible(t, page, kind)
}

/** A mark in the page's JS world: still there later means the page was not reloaded meanwhile. */
export async function markPage (page: Page): Promise<void> {
  await page.evaluate('window.ccNotReloaded = true')
}

export async function stillSamePage (page: Page): Promise<boolean> {
  return await page.evaluate('window.ccNotReloaded === true') as boolean
}

/** The main content's text without `without` (button names that repeat a word). */
export async function mainText (page: Page, without: RegExp[] = []): Promise<string> {
  let text = await page.locator('main').innerText()
  for (const re of without) text = text.replace(re, '')
  return text
}

export async function waitForText (page: Page, what: string, test: (text: string) => boolean, timeoutMs: number, without: RegExp[] = []): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const text = await mainText(page, without)
    if (test(text)) return
    if (Date.now() > deadline) throw new Error(`${what} not shown within ${timeoutMs} ms at ${page.url()}; the page said:\n${text}`)
    await delay(200)
  }
}

/** Follows a link of the signed-in navigation (in-page routing: the session stays in memory). */
export async function mainNav (page: Page, name: string): Promise<void> {
  await page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true }).click()
}

export async function signIn (t: Test, w: World, page: Page, email: string, password: string): Promise<void> {
  await page.goto(`${w.base}/sign-in`)
  await heading(t, page, 'Sign in')
  await page.getByLabel('Email', { exact: true }).fill(email)
  await page.getByLabel('Password', { exact: true }).fill(password)
  await page.getByRole('button', { name: 'Sign in', exact: true }).click()
}

export async function cookieNamed (context: BrowserContext, name: string): Promise<Awaited<ReturnType<BrowserContext['cookies']>>[number] | undefined> {
  return (await context.cookies()).find(c => c.name === name)
}


export interface RawReply { status: number, headers: Record<string, string | string[] | undefined>, body: string }

/**
 * A request to the dashboard's origin from outside the browser (an attacker's page would send
 * one like it). Through the edge: TLS to the HTTPS listener with SNI and Host app.localhost and
 * only our CA trusted (node's resolver need not know *.localhost).
 */
export async function originRequest (w: World, method: string, path: string, headers: Record<string, string>, body?: string): Promise<RawReply> {
  const url = new URL(path, w.base)
  if (url.protocol === 'http:') {
    const res = await fetch(url, { method, headers, body })
    return { status: res.status, headers: Object.fromEntries(res.headers), body: await res.text() }
  }
  return await new Promise((resolve, reject) => {
    const req = https.request({ host: '127.0.0.1', port: w.service.httpsPort, servername: url.hostname, method, path: url.pathname + url.search, headers: { host: url.host, ...headers }, ca: w.service.ca, timeout: 15_000 }, res => {
      let text = ''
      res.setEncoding('utf8').on('data', (chunk: string) => { text += chunk }).on('end', () => { resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }) })
    })
    req.on('timeout', () => { req.destroy(new Error('timed out')) })
    req.on('error', reject)
    req.end(body)
  })
}

/** The service, its Stripe stand-in and DNS server, and a browser; all stopped by t.teardown. `extra`: more settings. */
export async function startDashboard (t: Test, extra: NodeJS.ProcessEnv = {}): Promise<World> {
  const dir = tempDir(t, 'cc-web-')
  const stripe = await StripeFake.start(t)
  const dns = await TinyDns.start(t)
  const ports = { api: await freePort(), https: await freePort() }
  const base = THROUGH_EDGE ? `https://app.localhost:${ports.https}` : `http://localhost:${ports.api}`
  const env: NodeJS.ProcessEnv = {
    ...stripe.env(),
    CC_PUBLIC_URL: base,
    CC_DNS_RESOLVERS: dns.server,
    CC_DNS_TIMEOUT_MS: '1000',
    CC_DNS_TRIES: '1',
    // Every full page load spends one /v1/auth request (the cookie refresh) and all of the tests'
    // browsing comes from one address: the default 20/10 would throttle the tests, not a person.
    CC_RATE_AUTH_PER_IP: '200/100',
    ...extra,
  }
  const service = await startService(t, join(dir, 'service'), ports, env)
  const browser = await launchBrowser(t, { ca: service.ca })
  return { service, base, browser, stripe, dns, dir, mails: new Set(), ports, env }
}

/**
 * `cloud-connect <args>` on the service's data while the service is stopped (the embedded
 * database serves one process at a time), then `start` again on the same data and ports: the
 * browser's cookies and trusted CA stay valid. Returns the command's output; fails on a non-zero exit.
 */
export async function withServiceStopped (t: Test, w: World, args: string[]): Promise<string> {
  const stopped = await w.service.proc.stop()
  if (stopped !== 0) throw new Error(`start exited ${String(stopped)} on SIGTERM:\n${w.service.proc.output.slice(-2000)}`)
  const cli = new Proc(args.join(' '), args, serviceEnv(w.service.dataDir, w.ports, w.env), t)
  const code = await Promise.race([cli.exited, delay(60_000).then(() => 'timeout')])
  if (code !== 0) throw new Error(`cloud-connect ${args.join(' ')}: exit ${String(code)}:\n${cli.output}`)
  w.service = await startService(t, w.service.dataDir, w.ports, w.env)
  return cli.output
}
