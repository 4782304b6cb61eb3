/** services/dns-names.ts: what users type -> the stored form, or a refusal with its reason. */
import t from 'tap'
import { normalizeDomain, scriptsOf } from '../../../control/services/dns-names.ts'

const BASE = 'erugo.test'

t.test('normalised', async t => {
  const cases: Array<[string, string, string, boolean]> = [
    // input, stored, relative name, apex
    ['Example.COM.', 'example.com', '@', true],
    ['  Share.Example.com  ', 'share.example.com', 'share', false],
    ['share.example.com.', 'share.example.com', 'share', false],
    ['a.b.example.co.uk', 'a.b.example.co.uk', 'a.b', false],
    ['example.co.uk', 'example.co.uk', '@', true],
    ['bücher.de', 'xn--bcher-kva.de', '@', true],
    ['files.BÜCHER.de', 'files.xn--bcher-kva.de', 'files', false],
    ['xn--bcher-kva.de', 'xn--bcher-kva.de', '@', true],
    ['ＥＸＡＭＰＬＥ．ｃｏｍ', 'example.com', '@', true], // full-width forms (UTS #46 mapping)
    ['пример.рф', 'xn--e1afmkfd.xn--p1ai', '@', true], // one script per label: fine
    ['παράδειγμα.gr', 'xn--hxajbheg2az3al.gr', '@', true],
    ['日本語ドメイン.jp', 'xn--eckwd4c7c5976acvb2w6i.jp', '@', true], // Han + Katakana: an allowed mix
    ['share.erugo.testing', 'share.erugo.testing', 'share', false], // not our base domain, only similar
    ['x.github.io', 'x.github.io', '@', true], // private registry suffix: x.github.io is the zone
    [`${'a'.repeat(63)}.example.com`, `${'a'.repeat(63)}.example.com`, 'a'.repeat(63), false],
    [`${['a'.repeat(63), 'b'.repeat(63), 'c'.repeat(63), 'd'.repeat(57)].join('.')}.com`, `${['a'.repeat(63), 'b'.repeat(63), 'c'.repeat(63), 'd'.repeat(57)].join('.')}.com`, `${['a'.repeat(63), 'b'.repeat(63), 'c'.repeat(63)].join('.')}`, false], // 253 characters
    ['nas.mylocal.com', 'nas.mylocal.com', 'nas', false], // special-use suffixes match whole labels only
    ['test.example.com', 'test.example.com', 'test', false],
  ]
  for (const [input, domain, relativeName, apex] of cases) {
    const n = normalizeDomain(input, BASE)
    t.same({ domain: n.domain, relativeName: n.relativeName, apex: n.apex }, { domain, relativeName, apex }, JSON.stringify(input))
  }
  t.equal(normalizeDomain(cases[15][0], BASE).domain.length, 253)
})

t.test('refused, each with its reason', async t => {
  const cases: Array<[string, RegExp]> = [
    ['', /empty/],
    ['   ', /empty/],
    ['*.x.com', /wildcard/],
    ['*', /wildcard/],
    ['a.*.example.com', /wildcard/],
    ['1.2.3.4', /IP address/],
    ['1.2.3.4.', /IP address/],
    ['127.1', /IP address/], // WHATWG reads it as 127.0.0.1
    ['0x7f.1', /IP address/],
    ['::1', /IP address/],
    ['2001:db8::1', /IP address/],
    ['[::1]', /IP address/],
    ['a..b', /empty label/],
    ['.example.com', /empty label/],
    ['example.com..', /empty label/],
    [`${'a'.repeat(63)}.${'b'.repeat(63)}.${'c'.repeat(63)}.${'d'.repeat(58)}.com`, /longer than 253/], // 254 characters
    [`${'a'.repeat(64)}.example.com`, /label longer than 63/],
    ['pаypal.com', /mixes writing systems/], // Cyrillic а among Latin letters
    ['gооgle.com', /mixes writing systems/], // two Cyrillic о
    ['erugo.test', /erugo\.test or a name below it/],
    ['myfiles.erugo.test', /erugo\.test or a name below it/],
    ['X.ERUGO.TEST.', /erugo\.test or a name below it/],
    ['co.uk', /public suffix/],
    ['github.io', /public suffix/],
    ['com', /top-level domain|public suffix/],
    ['localhost', /top-level domain/],
    ['a_b.example.com', /letters, digits and hyphens/],
    ['-a.example.com', /hyphen/],
    ['a-.example.com', /hyphen/],
    ['ab--cd.example.com', /third and fourth/],
    ['xn--zz.com', /not a valid domain name|invalid internationalised/],
    ['ex ample.com', /letters, digits, hyphens and dots/],
    ['example.123', /not a valid domain name|numeric/],
    ['user@example.com', /not a valid domain name|letters/],
    ['http://example.com', /not a valid domain name|letters/],
    ['example.com/path', /letters, digits, hyphens and dots/],
    ['example.com#frag', /letters, digits, hyphens and dots/],
    ['example.com?x', /letters, digits, hyphens and dots/],
    ['exa%6Dple.com', /letters, digits, hyphens and dots/],
    ['a\\b.com', /letters, digits, hyphens and dots/],
    ['share.example.com:443', /letters, digits, hyphens and dots/],
    ['share\u0000.example.com', /letters, digits, hyphens and dots/],
    ['nas.local', /special-use/],
    ['files.corp.internal', /special-use/],
    ['duckduckgogg42xjoc72x3sjasowoarfbgcmvfimaftt6twagswzczad.onion', /special-use/],
    ['x.invalid', /special-use/],
    ['share.example', /special-use/],
    ['other.test', /special-use/], // .test, but not below the base domain erugo.test
    ['app.localhost', /special-use/],
    ['NAS.Home.Arpa.', /special-use/],
    ['files.alt', /special-use/],
  ]
  for (const [input, reason] of cases) {
    t.throws(() => normalizeDomain(input, BASE), { name: 'DomainNameError' }, JSON.stringify(input))
    try {
      normalizeDomain(input, BASE)
    } catch (err) {
      t.match((err as Error).message, reason, `${JSON.stringify(input).slice(0, 40)}: ${(err as Error).message}`)
    }
  }
})

t.test('scripts of a label (UTS #39 Highly Restrictive)', async t => {
  t.same([...scriptsOf('example')], ['Latin'])
  t.same([...scriptsOf('ex-4mple')], ['Latin'], 'digits and hyphens are neutral')
  t.same([...scriptsOf('pаypal')].sort(), ['Cyrillic', 'Latin'])
  t.same([...scriptsOf('日本語ドメイン')].sort(), ['Han', 'Katakana'])
})
