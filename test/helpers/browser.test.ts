/**
 * The browser harness itself: Chromium trusts exactly the CA it is given, axe-core runs under a
 * strict Content-Security-Policy and finds what it should, screenshots have the asked width.
 */
import t from 'tap'
import https from 'node:https'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalCa } from '../../gateway/edge/local-ca.ts'
import { axeViolations, describeViolations, launchBrowser, NARROW, requireBrowser, screenshotNarrow } from './browser.ts'

const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

const GOOD = '<!doctype html><html lang="en"><head><title>Good</title></head><body><main><h1>Sign in</h1><form><label for="e">Email</label><input id="e" type="email"><button>Sign in</button></form></main></body></html>'
const BAD = '<!doctype html><html lang="en"><head><title>Bad</title></head><body><main><h1>Sign in</h1><form><input id="e" type="email"><button></button></form></main></body></html>'

function tempDir (prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  return dir
}

/** An HTTPS server for app.localhost with a leaf from `ca`, every page under the dashboard's CSP. */
async function serve (ca: LocalCa): Promise<number> {
  const leaf = await ca.issue('app.localhost')
  const server = https.createServer({ cert: leaf.certificatePem, key: leaf.privateKeyPem }, (req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'content-security-policy': CSP })
    res.end(req.url === '/bad' ? BAD : GOOD)
  })
  await new Promise<void>(resolve => { server.listen(0, '127.0.0.1', resolve) })
  t.teardown(async () => {
    server.closeAllConnections()
    await new Promise(resolve => { server.close(resolve) })
  })
  return (server.address() as AddressInfo).port
}

if (requireBrowser(t)) {
  const trusted = await LocalCa.open({ directory: tempDir('cc-ca-trusted-') })
  const stranger = await LocalCa.open({ directory: tempDir('cc-ca-stranger-') })
  const browser = await launchBrowser(t, { ca: trusted.certificatePem })
  const trustedPort = await serve(trusted)
  const strangerPort = await serve(stranger)

  t.test('a leaf of the given CA loads; a leaf of any other CA is refused', async t => {
    const page = await browser.newPage()
    const res = await page.goto(`https://app.localhost:${trustedPort}/`)
    t.equal(res?.status(), 200)
    t.equal(await page.getByRole('heading', { level: 1 }).textContent(), 'Sign in')
    await t.rejects(page.goto(`https://app.localhost:${strangerPort}/`), /ERR_CERT_AUTHORITY_INVALID/, 'certificate errors are not ignored')
  })

  t.test('under the strict CSP: addScriptTag is refused, axe still runs and reports what is wrong', async t => {
    const page = await browser.newPage()
    await page.goto(`https://app.localhost:${trustedPort}/bad`)
    await t.rejects(page.addScriptTag({ content: 'window.injected = 1' }), 'an inline script is refused by the page CSP')
    t.equal(await page.evaluate('typeof window.injected'), 'undefined')
    t.ok(browser.problems.csp.some(line => line.includes('/bad')), 'the refusal is recorded as a CSP problem')
    const bad = await axeViolations(page)
    const ids = bad.map(v => v.id).sort()
    t.ok(ids.includes('label'), `unlabelled field found: ${describeViolations(bad)}`)
    t.ok(ids.includes('button-name'), 'nameless button found')

    await page.goto(`https://app.localhost:${trustedPort}/`)
    t.same(await axeViolations(page), [], 'the labelled form has none')
  })

  t.test('a narrow screenshot is 375 px wide and the viewport is restored', async t => {
    const page = await browser.newPage()
    await page.goto(`https://app.localhost:${trustedPort}/`)
    const path = await screenshotNarrow(page, 'narrow', tempDir('cc-shots-'))
    const png = readFileSync(path)
    t.equal(png.subarray(1, 4).toString('latin1'), 'PNG')
    t.equal(png.readUInt32BE(16), NARROW.width, 'IHDR width')
    t.equal(page.viewportSize()?.width, 1280)
  })
}
