/** Spec "Subdomain Endpoints": GET /v1/subdomains/check. */
import t, { type Test } from 'tap'
import { suggestionCandidates } from '../../../control/services/subdomains.ts'
import type { Db } from '../../../control/db/knex.ts'
import { assertError, bearer, forEachDatabase, type TestApp } from '../harness.ts'
import { Clock, createInstance, mustCreate, newUser, startInstanceApp } from './tunnel-fixtures.ts'

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

/** An app on its own clock whose subdomain quarantine is `seconds` (access tokens outlive it), with two users. */
async function quarantineApp (t: Test, db: Db, seconds: number): Promise<{ clock: Clock, h: TestApp, owner: { id: string, token: string }, stranger: { id: string, token: string } }> {
  const clock = new Clock()
  const h = await startInstanceApp(t, db, { clock, env: { CC_SUBDOMAIN_QUARANTINE: String(seconds), CC_ACCESS_TOKEN_TTL: '86400' } })
  return { clock, h, owner: await newUser(h), stranger: await newUser(h) }
}

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

  t.test('renamed away: the old subdomain stays its owner\'s for the quarantine; others get 409 and unavailable', async t => {
    const { clock, h, owner, stranger } = await quarantineApp(t, db, 3600)
    const inst = await mustCreate(t, h, owner.token, 'sharedlinks')
    const moved = await h.request('PATCH', `/v1/instances/${inst.id}`, { subdomain: 'newhome' }, bearer(owner.token))
    t.equal(moved.status, 200)

    const check = await h.request('GET', '/v1/subdomains/check?subdomain=sharedlinks', undefined, bearer(stranger.token))
    t.equal(check.body.available, false, 'unavailable to others right after the rename')
    t.equal(check.body.suggestions.length, 3)
    const grab = await createInstance(h, stranger.token, 'sharedlinks')
    assertError(t, grab, 'SUBDOMAIN_TAKEN', 'create')
    t.same(Object.keys(grab.body.error.details).sort(), ['subdomain', 'suggestions'], 'the 409 names nobody')
    t.notMatch(grab.raw, owner.id)
    const other = await mustCreate(t, h, stranger.token, 'strangerbox')
    assertError(t, await h.request('PATCH', `/v1/instances/${other.id}`, { subdomain: 'sharedlinks' }, bearer(stranger.token)), 'SUBDOMAIN_TAKEN', 'rename onto it')

    clock.advance(3599)
    assertError(t, await createInstance(h, stranger.token, 'sharedlinks'), 'SUBDOMAIN_TAKEN', 'still held a second before the end')
    t.same((await h.request('GET', '/v1/subdomains/check?subdomain=sharedlinks', undefined, bearer(owner.token))).body, { subdomain: 'sharedlinks', available: true }, 'available to its owner')
    const back = await h.request('PATCH', `/v1/instances/${inst.id}`, { subdomain: 'sharedlinks' }, bearer(owner.token))
    t.equal(back.status, 200, 'the owner takes it back during the quarantine')
    t.equal(back.body.subdomain, 'sharedlinks')
    t.equal((await h.request('GET', '/v1/subdomains/check?subdomain=newhome', undefined, bearer(stranger.token))).body.available, false, 'and the name it left is quarantined in turn')
  })

  t.test('deleted: the subdomain is held for the quarantine, then free for anyone', async t => {
    const { clock, h, owner, stranger } = await quarantineApp(t, db, 7200)
    const inst = await mustCreate(t, h, owner.token, 'gonebox')
    t.equal((await h.request('DELETE', `/v1/instances/${inst.id}`, undefined, bearer(owner.token))).status, 204)

    assertError(t, await createInstance(h, stranger.token, 'gonebox'), 'SUBDOMAIN_TAKEN', 'right after the delete')
    t.equal((await h.request('GET', '/v1/subdomains/check?subdomain=gonebox', undefined, bearer(stranger.token))).body.available, false)
    const taken = await createInstance(h, (await newUser(h)).token, 'popularname')
    t.equal(taken.status, 201)
    const suggestions = (await h.request('GET', '/v1/subdomains/check?subdomain=popularname', undefined, bearer(owner.token))).body.suggestions as string[]
    t.notOk(suggestions.includes('gonebox'), 'never suggested to others either')

    clock.advance(7200)
    t.same((await h.request('GET', '/v1/subdomains/check?subdomain=gonebox', undefined, bearer(stranger.token))).body, { subdomain: 'gonebox', available: true }, 'free once the quarantine is over')
    t.equal((await createInstance(h, stranger.token, 'gonebox')).status, 201)
  })

  t.test('deleted and re-created by the same owner during the quarantine', async t => {
    const h = await startInstanceApp(t, db)
    const owner = await newUser(h)
    const inst = await mustCreate(t, h, owner.token, 'myshare')
    await h.request('DELETE', `/v1/instances/${inst.id}`, undefined, bearer(owner.token))
    t.equal((await createInstance(h, owner.token, 'myshare')).status, 201, 'default quarantine: the owner gets it back at once')
    assertError(t, await createInstance(h, (await newUser(h)).token, 'myshare'), 'SUBDOMAIN_TAKEN', 'held by the new instance')
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
