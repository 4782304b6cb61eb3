/**
 * Real-browser tests: Debian's Chromium driven by playwright-core, headless, trusting our local CA.
 *
 *   if (!requireBrowser(t)) return
 *   const browser = await launchBrowser(t, { ca: service.ca })   // closed by t.teardown
 *   const page = await browser.newPage()
 *   await assertAccessible(t, page, 'sign-in')                    // axe-core: no serious/critical
 *   await screenshot(page, 'dashboard-sign-in')                   // docs/dashboard-sign-in.png
 *
 * Trust: Chromium on Linux reads trust anchors from the NSS database in $HOME/.pki/nssdb, so each
 * launch gets a throw-away HOME whose database holds only the CA given (certutil, Debian's
 * libnss3-tools). Certificates from any other issuer still fail. The alternative,
 * --ignore-certificate-errors-spki-list, only matches the leaf's key (tried with Chromium 156: the
 * CA's SPKI there does not make its leaves acceptable), and the edge issues a new leaf per name.
 */
import type { Test } from 'tap'
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type BrowserContext, type BrowserContextOptions, type Page } from 'playwright-core'
import { onPath } from './lab.ts'
import { unavailable } from './require.ts'

export const CHROMIUM = process.env.CC_CHROMIUM ?? '/usr/bin/chromium'
export const DOCS = resolve(fileURLToPath(import.meta.url), '../../../docs')
export const DESKTOP = { width: 1280, height: 800 }
export const NARROW = { width: 375, height: 812 }

const AXE_SOURCE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8')

/** Why the browser tests cannot run here, or null if they can. */
export function browserMissing (): string | null {
  if (!existsSync(CHROMIUM)) return `no Chromium at ${CHROMIUM} (apt-get install chromium, or set CC_CHROMIUM)`
  if (!onPath('certutil')) return 'certutil is missing (apt-get install libnss3-tools)'
  return null
}

/** True when Chromium can run; otherwise skips with the reason, or fails under CC_REQUIRE_INTEROP=1 (CI). */
export function requireBrowser (t: Test): boolean {
  const reason = browserMissing()
  if (reason === null) return true
  return unavailable(t, 'browser', reason)
}

/** What went wrong inside pages: uncaught errors and Content-Security-Policy refusals. */
export interface PageProblems {
  errors: string[]
  csp: string[]
}

export interface TestBrowser {
  browser: Browser
  problems: PageProblems
  /** A context at 1280x800 (English, UTC) that records page problems; closed with the browser. */
  newContext (options?: BrowserContextOptions): Promise<BrowserContext>
  newPage (options?: BrowserContextOptions): Promise<Page>
}

/** Chromium with a fresh profile whose only extra trust anchor is `ca` (PEM); closed by t.teardown. */
export async function launchBrowser (t: Test, options: { ca: string }): Promise<TestBrowser> {
  const home = mkdtempSync(join(tmpdir(), 'cc-browser-'))
  t.teardown(() => { rmSync(home, { recursive: true, force: true }) })
  const nssdb = join(home, '.pki/nssdb')
  mkdirSync(nssdb, { recursive: true, mode: 0o700 })
  const caFile = join(home, 'ca.pem')
  writeFileSync(caFile, options.ca)
  execFileSync('certutil', ['-N', '-d', `sql:${nssdb}`, '--empty-password'], { stdio: 'pipe', timeout: 30_000 })
  // -t C,,: a trusted CA for TLS servers only (not for mail or code signing).
  execFileSync('certutil', ['-A', '-d', `sql:${nssdb}`, '-n', 'cloud-connect test CA', '-t', 'C,,', '-i', caFile], { stdio: 'pipe', timeout: 30_000 })

  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    // Chromium's sandbox cannot start as root (CI runs as root).
    args: process.getuid?.() === 0 ? ['--no-sandbox'] : [],
    env: { ...process.env, HOME: home },
    timeout: 60_000,
  })
  t.teardown(async () => { await browser.close() })

  const problems: PageProblems = { errors: [], csp: [] }
  const watch = (page: Page): void => {
    page.on('pageerror', err => { problems.errors.push(`${page.url()}: ${err.message}`) })
    page.on('console', msg => {
      if (/Content Security Policy/i.test(msg.text())) problems.csp.push(`${page.url()}: ${msg.text()}`)
    })
  }
  const newContext = async (contextOptions: BrowserContextOptions = {}): Promise<BrowserContext> => {
    const context = await browser.newContext({ viewport: DESKTOP, locale: 'en-US', timezoneId: 'UTC', ...contextOptions })
    context.setDefaultTimeout(15_000)
    context.on('page', watch)
    return context
  }
  return {
    browser,
    problems,
    newContext,
    newPage: async (contextOptions?: BrowserContextOptions) => await (await newContext(contextOptions)).newPage(),
  }
}

export interface AxeViolation {
  id: string
  impact: string | null
  help: string
  nodes: Array<{ target: unknown[] }>
}

/**
 * axe-core's serious and critical violations on the page as it is now.
 *
 * The source is evaluated over the DevTools protocol rather than added with page.addScriptTag:
 * addScriptTag inserts an inline <script>, which the dashboard's CSP (script-src 'self') refuses,
 * and bypassCSP would switch the CSP off for the very page under test. Protocol evaluation is
 * not subject to the page's CSP, so axe runs against the page exactly as users get it.
 */
export async function axeViolations (page: Page): Promise<AxeViolation[]> {
  if (await page.evaluate('typeof window.axe') !== 'object') await page.evaluate(AXE_SOURCE)
  const violations = await page.evaluate(`window.axe.run(document, { resultTypes: ['violations'] }).then(r => r.violations.map(v => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => ({ target: n.target })) })))`) as AxeViolation[]
  return violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
}

export function describeViolations (violations: AxeViolation[]): string {
  return violations.map(v => `${v.id} (${String(v.impact)}): ${v.help} at ${v.nodes.slice(0, 5).map(n => n.target.join(' ')).join(', ')}`).join('; ')
}

/** Fails `t` on serious or critical axe-core violations, naming each rule and element. */
export async function assertAccessible (t: Test, page: Page, where: string): Promise<void> {
  const violations = await axeViolations(page)
  if (violations.length === 0) t.pass(`axe: no serious or critical violations on ${where}`)
  else t.fail(`axe: ${violations.length} serious or critical violation(s) on ${where}: ${describeViolations(violations)}`)
}

/** Saves the viewport as `<dir>/<name>.png` (docs/ by default); returns the path. */
export async function screenshot (page: Page, name: string, dir = DOCS): Promise<string> {
  mkdirSync(dir, { recursive: true })
  const path = join(dir, `${name}.png`)
  await page.screenshot({ path, animations: 'disabled', caret: 'hide' })
  return path
}

/** The page at 375 px wide: saved as `<name>.png`, then the viewport is put back. */
export async function screenshotNarrow (page: Page, name: string, dir = DOCS): Promise<string> {
  const before = page.viewportSize() ?? DESKTOP
  await page.setViewportSize(NARROW)
  try {
    return await screenshot(page, name, dir)
  } finally {
    await page.setViewportSize(before)
  }
}

/** Widest content at the current viewport minus its width (> 0: the page scrolls sideways). */
export async function horizontalOverflow (page: Page): Promise<number> {
  return await page.evaluate('document.documentElement.scrollWidth - document.documentElement.clientWidth') as number
}
