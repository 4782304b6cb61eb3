/**
 * The dashboard's static files (control/routes/web.ts): every page path answers the shell with the
 * strict security headers, assets with their content types, nothing outside control/web/assets
 * (traversal in every spelling), and the API under /v1 as before.
 */
import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { CONTENT_SECURITY_POLICY, PAGE_PATHS, WEB_DIR, listAssets } from '../../../control/routes/web.ts'
import { assertError, bearer, forEachDatabase, signUp, startApp, type Reply, type TestApp } from '../harness.ts'

const EXPECTED_CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
const SHELL = readFileSync(join(WEB_DIR, 'index.html'), 'utf8')

/** A concrete URL for each page path (parameters filled in, a query where the page takes one). */
const PAGE_URLS = PAGE_PATHS.map(path => path.replace('{instance_id}', 'ins_4fQ1xY8kLm2Np7Rs9Tv3Wz'))
  .concat(['/verify-email?token=abc', '/reset-password?token=abc', '/billing/success?session_id=cs_test_1', '/instances/'])

function assertSecurityHeaders (t: Test, res: Reply, what: string): void {
  t.equal(res.headers['content-security-policy'], EXPECTED_CSP, `${what}: CSP`)
  t.equal(res.headers['referrer-policy'], 'no-referrer', `${what}: Referrer-Policy`)
  t.equal(res.headers['x-content-type-options'], 'nosniff', `${what}: nosniff`)
  t.equal(res.headers['x-frame-options'], 'DENY', `${what}: X-Frame-Options`)
}

await forEachDatabase(t, async (t, db) => {
  let h: TestApp
  t.before(async () => { h = await startApp(t, db) })

  t.test('page path requested: the shell, no-store, strict headers', async t => {
    t.equal(CONTENT_SECURITY_POLICY, EXPECTED_CSP)
    for (const url of PAGE_URLS) {
      const res = await h.request('GET', url)
      t.equal(res.status, 200, `${url} 200`)
      t.match(res.headers['content-type'], /^text\/html; charset=utf-8/, `${url} HTML`)
      t.equal(res.raw, SHELL, `${url} is the shell`)
      t.equal(res.headers['cache-control'], 'no-store', `${url} not stored`)
      assertSecurityHeaders(t, res, url)
    }
  })

  t.test('Checkout returns: /billing/success and /billing/cancel answer the dashboard, query not echoed', async t => {
    for (const url of ['/billing/success?session_id={CHECKOUT_SESSION_ID}', '/billing/cancel', '/billing/success?session_id=<script>alert(1)</script>']) {
      const res = await h.request('GET', url)
      t.equal(res.status, 200, url)
      t.equal(res.raw, SHELL, `${url} is the shell`)
      t.notMatch(res.raw, /alert\(1\)/, 'nothing from the query is echoed')
    }
    const billing = readFileSync(join(WEB_DIR, 'assets/pages/billing.js'), 'utf8')
    t.match(billing, "'Payment successful'", 'success page heading')
    t.match(billing, 'Payment successful! You can close this tab and return to your Erugo admin panel', 'success message kept')
    t.match(billing, "'Payment cancelled'", 'cancel page heading')
    t.match(billing, 'Payment cancelled. You can close this tab and try again from your Erugo admin panel', 'cancel message kept')
  })

  t.test('asset requested: its content type, strict headers', async t => {
    const assets = listAssets()
    t.ok(assets.has('app.js') && assets.has('app.css') && assets.has('api.js'), 'the entry, the styles and the API client are listed')
    for (const [name, file] of assets) {
      const res = await h.request('GET', `/assets/${name}`)
      t.equal(res.status, 200, name)
      const type = name.endsWith('.js') ? /^(text|application)\/javascript; charset=utf-8/ : name.endsWith('.css') ? /^text\/css; charset=utf-8/ : /./
      t.match(res.headers['content-type'], type, `${name} content type`)
      t.equal(res.raw, readFileSync(file, 'utf8'), `${name} served as it is`)
      assertSecurityHeaders(t, res, name)
    }
    // Every module the entry imports is served (a relative import that 404s breaks the whole app).
    for (const [name, file] of assets) {
      if (!name.endsWith('.js')) continue
      for (const [, target] of readFileSync(file, 'utf8').matchAll(/from '(\.{1,2}\/[^']+)'/g)) {
        const resolved = new URL(target, `http://x/assets/${name}`).pathname
        t.equal((await h.request('GET', resolved)).status, 200, `${name} imports ${resolved}`)
      }
    }
  })

  t.test('unknown asset requested: 404 in the error shape, strict headers', async t => {
    for (const url of ['/assets/nope.js', '/assets/', '/assets/pages', '/assets/app.js/x', '/assets/APP.JS']) {
      const res = await h.request('GET', url)
      assertError(t, res, 'NOT_FOUND', url)
      assertSecurityHeaders(t, res, url)
    }
  })

  t.test('path traversal: nothing outside control/web/assets', async t => {
    const packageJson = readFileSync('package.json', 'utf8')
    const attempts = [
      '/assets/../../package.json',
      '/assets/..%2f..%2fpackage.json',
      '/assets/%2e%2e/%2e%2e/package.json',
      '/assets/%2e%2e%2f%2e%2e%2fpackage.json',
      '/assets/..%5c..%5cpackage.json',
      '/assets/%252e%252e%252fpackage.json',
      '/assets/../index.html',
      '/assets/..%2findex.html',
      '/assets/%2e%2e/index.html',
      '/assets//etc/passwd',
      '/assets/%2fetc%2fpasswd',
      '/assets/pages/../../../package.json',
      '/assets/app.js%00.css',
    ]
    for (const url of attempts) {
      const res = await h.request('GET', url)
      t.not(res.status, 200, `${url} refused`)
      t.notOk(res.raw.includes('"name"') && res.raw === packageJson, `${url}: not package.json`)
      t.notOk(res.raw.includes('<!doctype html>'), `${url}: not a file outside assets`)
      t.notMatch(res.raw, /root:/, `${url}: not /etc/passwd`)
    }
  })

  t.test('index.html: no inline script or style, only same-origin references', async t => {
    t.notMatch(SHELL, /<script(?![^>]*\bsrc=)[^>]*>/i, 'every script has a src')
    t.notMatch(SHELL, /<style/i, 'no style element')
    t.notMatch(SHELL, /\sstyle=/i, 'no style attribute')
    t.notMatch(SHELL, /\son[a-z]+=/i, 'no event handler attribute')
    t.notMatch(SHELL, /(src|href)="(https?:)?\/\//i, 'nothing from another origin')
    t.match(SHELL, /<script type="module" src="\/assets\/app.js"><\/script>/)
    for (const [name, file] of listAssets()) {
      if (!name.endsWith('.js')) continue
      const source = readFileSync(file, 'utf8')
      t.notMatch(source, /innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function/, `${name}: no markup from strings, no eval`)
      t.notMatch(source, /localStorage|sessionStorage|document\.cookie/, `${name}: tokens stay in memory`)
    }
  })

  t.test('the API under /v1 is unaffected: JSON, its own routes, errors in the contract shape', async t => {
    const login = await signUp(h, `web-${process.pid}@example.com`, { verify: true })
    const user = await h.request('GET', '/v1/user', undefined, bearer(login.access_token))
    t.equal(user.status, 200)
    t.match(user.headers['content-type'], /^application\/json/)
    t.equal(user.body.email, `web-${process.pid}@example.com`)
    const list = await h.request('GET', '/v1/instances', undefined, bearer(login.access_token))
    t.same(list.body, { instances: [] }, '/v1/instances is the API, not the /instances page')
    assertError(t, await h.request('GET', '/v1/instances'), 'UNAUTHORIZED', 'no token')
    assertError(t, await h.request('GET', '/v1/assets/app.js'), 'NOT_FOUND', '/v1/assets')
    assertError(t, await h.request('GET', '/v1/sign-in'), 'NOT_FOUND', '/v1/sign-in')
    assertError(t, await h.request('POST', '/sign-in', {}), 'METHOD_NOT_ALLOWED', 'a page path takes only GET')
    const openapi = await h.request('GET', '/v1/openapi.json')
    t.equal(openapi.status, 200)
    t.notOk(Object.keys(openapi.body.paths).some((p: string) => !p.startsWith('/v1/') && p !== '/health' && p !== '/ready'), 'dashboard paths stay out of the OpenAPI document')
    const health = await h.request('GET', '/health')
    t.equal(health.status, 200)
    t.equal(health.headers['content-security-policy'], undefined, 'the API keeps its own headers')
  })

  t.test('unknown path outside /v1 and /assets: 404 as before', async t => {
    assertError(t, await h.request('GET', '/nope'), 'NOT_FOUND')
    assertError(t, await h.request('GET', '/instances/a/b'), 'NOT_FOUND')
  })

  t.test('unknown path opened by a browser (Accept: text/html): the shell with 404, strict headers; the API keeps JSON', async t => {
    const browser = { accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8' }
    for (const url of ['/nope', '/instances/a/b', '/sign-in/extra', '/typo?x=<script>']) {
      const res = await h.request('GET', url, undefined, browser)
      t.equal(res.status, 404, `${url}: 404`)
      t.match(res.headers['content-type'], /^text\/html; charset=utf-8/, `${url}: HTML`)
      t.equal(res.raw, SHELL, `${url}: the shell (it says "Page not found")`)
      t.equal(res.headers['cache-control'], 'no-store', `${url}: not stored`)
      assertSecurityHeaders(t, res, url)
    }
    for (const url of ['/v1/nope', '/v1', '/assets/nope.js']) assertError(t, await h.request('GET', url, undefined, browser), 'NOT_FOUND', `${url}: JSON even for a browser`)
    assertError(t, await h.request('POST', '/nope', {}, browser), 'NOT_FOUND', 'POST: JSON')
    assertError(t, await h.request('GET', '/nope', undefined, { accept: 'application/json' }), 'NOT_FOUND', 'an API client: JSON')
  })
})
