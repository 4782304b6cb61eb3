/** Spec "Subdomain Endpoints": GET /v1/subdomains/check. */
import t from 'tap'
import { suggestionCandidates } from '../../../control/services/subdomains.ts'
import { assertError, bearer, forEachDatabase } from '../harness.ts'
import { mustCreate, newUser, startInstanceApp } from './tunnel-fixtures.ts'

const LABEL = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/

t.test('suggestion candidates are valid labels of at most 63 characters', async t => {
  for (const base of ['myfiles', 'a', 'a'.repeat(63), `${'b'.repeat(61)}-x`, 'ends-with-hyphen-cut'.padEnd(63, 'z')]) {
    const candidates = suggestionCandidates(base, 2026)
    t.ok(candidates.length >= 3, `${base.slice(0, 10)}...: enough candidates`)
    for (const c of candidates) {
      t.ok(c.length <= 63 && LABEL.test(c), `${c} is a valid label`)
      t.not(c, base)
    }
  }
  t.same(suggestionCandidates('myfiles', 2025).slice(0, 3), ['myfiles1', 'myfiles-share', 'myfiles2025'], 'the spec\'s example suggestions first')
})

await forEachDatabase(t, async (t, db) => {
  t.test('available: {subdomain, available: true} only', async t => {
    const h = await startInstanceApp(t, db)
    const user = await newUser(h)
    const res = await h.request('GET', '/v1/subdomains/check?subdomain=FreshName', undefined, bearer(user.token))
    t.equal(res.status, 200)
    t.same(res.body, { subdomain: 'freshname', available: true }, 'normalised to lower case, no suggestions key')
  })

  t.test('taken: available false with three suggestions that are themselves available', async t => {
    const h = await startInstanceApp(t, db)
    const owner = await newUser(h)
    const asker = await newUser(h)
    await mustCreate(t, h, owner.token, 'popular')
    // Take the first preferred candidates too, so suggestions must skip them.
    for (const taken of ['popular1', 'popular-share']) await mustCreate(t, h, (await newUser(h)).token, taken)
    const res = await h.request('GET', '/v1/subdomains/check?subdomain=popular', undefined, bearer(asker.token))
    t.equal(res.status, 200)
    t.same(Object.keys(res.body).sort(), ['available', 'subdomain', 'suggestions'])
    t.equal(res.body.subdomain, 'popular')
    t.equal(res.body.available, false)
    t.equal(res.body.suggestions.length, 3)
    t.equal(new Set(res.body.suggestions).size, 3, 'distinct')
    for (const s of res.body.suggestions as string[]) {
      t.notOk(['popular', 'popular1', 'popular-share'].includes(s), `${s} is not a taken name`)
      const check = await h.request('GET', `/v1/subdomains/check?subdomain=${s}`, undefined, bearer(asker.token))
      t.same(check.body, { subdomain: s, available: true }, `${s} is available`)
    }
    const own = await h.request('GET', '/v1/subdomains/check?subdomain=popular', undefined, bearer(owner.token))
    t.equal(own.body.available, false, 'taken for its owner too')
  })

  t.test('reserved names: not available, with suggestions', async t => {
    const h = await startInstanceApp(t, db)
    const user = await newUser(h)
    for (const name of ['www', 'api', 'dashboard', 'connect', 'tunnel', 'mail', 'admin', 'Admin', 'app', 'openpgpkey', 'mta-sts', 'autoconfig', 'autodiscover', 'wpad', 'isatap']) {
      const res = await h.request('GET', `/v1/subdomains/check?subdomain=${name}`, undefined, bearer(user.token))
      t.equal(res.status, 200, name)
      t.equal(res.body.subdomain, name.toLowerCase())
      t.equal(res.body.available, false, `${name} is reserved`)
      t.equal(res.body.suggestions.length, 3)
    }
  })

  t.test('names mail and web clients trust: an instance cannot take them', async t => {
    const h = await startInstanceApp(t, db)
    const user = await newUser(h)
    for (const name of ['openpgpkey', 'mta-sts', 'autoconfig', 'autodiscover', 'wpad', 'isatap', 'app', 'api']) {
      const res = await h.request('POST', '/v1/instances', { name: 'x', subdomain: name }, bearer(user.token))
      assertError(t, res, 'VALIDATION_ERROR', name)
      t.same(res.body.error.details.fields, { subdomain: ['is reserved'] }, `${name} is reserved`)
    }
    for (const name of ['_dmarc', '_acme-challenge', '_mta-sts', '_openpgpkey']) {
      const create = await h.request('POST', '/v1/instances', { name: 'x', subdomain: name }, bearer(user.token))
      assertError(t, create, 'VALIDATION_ERROR', name)
      const check = await h.request('GET', `/v1/subdomains/check?subdomain=${name}`, undefined, bearer(user.token))
      assertError(t, check, 'VALIDATION_ERROR', `check ${name}`)
    }
    t.same((await h.request('GET', '/v1/instances', undefined, bearer(user.token))).body.instances, [], 'none was created')
  })

  t.test('invalid labels -> 422 VALIDATION_ERROR on subdomain', async t => {
    const h = await startInstanceApp(t, db)
    const user = await newUser(h)
    for (const [label, query] of [
      ['missing', ''],
      ['empty', 'subdomain='],
      ['leading hyphen', 'subdomain=-abc'],
      ['trailing hyphen', 'subdomain=abc-'],
      ['dot', 'subdomain=a.b'],
      ['space', 'subdomain=a%20b'],
      ['64 chars', `subdomain=${'a'.repeat(64)}`],
      ['punycode', 'subdomain=xn--nxasmq6b'],
      ['percent-encoded unicode', 'subdomain=b%C3%BCcher'],
      ['unknown parameter', 'subdomain=ok&x=1'],
    ]) {
      const res = await h.request('GET', `/v1/subdomains/check?${query}`, undefined, bearer(user.token))
      assertError(t, res, 'VALIDATION_ERROR', label)
    }
  })

  t.test('needs an access token', async t => {
    const h = await startInstanceApp(t, db)
    assertError(t, await h.request('GET', '/v1/subdomains/check?subdomain=abc'), 'UNAUTHORIZED')
    assertError(t, await h.request('GET', '/v1/subdomains/check?subdomain=abc', undefined, bearer('garbage')), 'UNAUTHORIZED')
  })
})
