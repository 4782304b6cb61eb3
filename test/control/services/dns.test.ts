/**
 * services/dns.ts DnsVerifier against real DNS servers on loopback: pebble-challtestsrv for the
 * record paths (CNAME, chains, the apex TXT + A/AAAA path), TinyDns for NXDOMAIN, SERVFAIL and
 * timeouts (challtestsrv never answers NXDOMAIN).
 */
import t from 'tap'
import { DnsVerifier, type DnsCheck } from '../../../control/services/dns.ts'
import { ChallTestSrv, TinyDns } from '../../helpers/dns-server.ts'

const TARGET = 'inst_7Hq2mZ4xNc8Rv1Tb6Ws3Yd.tunnel.erugo.test'
const GATEWAY_V4 = '203.0.113.10'
const GATEWAY_V6 = '2001:db8::10'

function verifier (server: string, options: { gatewayAddresses?: string[], timeoutMs?: number } = {}): DnsVerifier {
  return new DnsVerifier({ servers: [server], timeoutMs: options.timeoutMs ?? 2000, tries: 1, gatewayAddresses: options.gatewayAddresses ?? [GATEWAY_V4, GATEWAY_V6] })
}

function failure (check: DnsCheck): { reason: string, message: string, definitive: boolean } | undefined {
  return check.ok ? undefined : { reason: check.reason, message: check.message, definitive: check.definitive }
}

t.test('against pebble-challtestsrv', async t => {
  const dns = await ChallTestSrv.start(t)
  const v = verifier(dns.server)

  t.test('CNAME to the instance target: verified', async t => {
    await dns.setCname('share.cname-ok.example.com', TARGET)
    t.same(await v.checkCname('share.cname-ok.example.com', TARGET), { ok: true, method: 'cname' })
    t.same(await v.check({ domain: 'share.cname-ok.example.com', apex: false, token: 'x', target: TARGET }), { ok: true, method: 'cname' })
  })

  t.test('CNAME compared without case or trailing dot', async t => {
    await dns.setCname('files.case.example.com', TARGET.toUpperCase())
    t.same(await v.checkCname('files.case.example.com', TARGET), { ok: true, method: 'cname' })
  })

  t.test('CNAME chain ending at the target: verified', async t => {
    await dns.setCname('share.chain.example.com', 'alias.provider.example.net')
    await dns.setCname('alias.provider.example.net', TARGET)
    t.same(await v.checkCname('share.chain.example.com', TARGET), { ok: true, method: 'cname' })
  })

  t.test('CNAME to somewhere else: wrong target, definitive', async t => {
    await dns.setCname('share.wrong.example.com', 'inst_other.tunnel.erugo.test')
    const f = failure(await v.checkCname('share.wrong.example.com', TARGET))
    t.same(f, { reason: 'wrong_target', message: `CNAME record points to inst_other.tunnel.erugo.test, expected ${TARGET}`, definitive: true })
  })

  t.test('no CNAME at all: the spec\'s "CNAME record not found"', async t => {
    const f = failure(await v.check({ domain: 'share.missing.example.com', apex: false, token: 'x', target: TARGET }))
    t.same(f, { reason: 'record_not_found', message: 'CNAME record not found', definitive: true })
  })

  t.test('apex: TXT ownership + A/AAAA at the gateway: verified', async t => {
    await dns.setTxt('_erugo-verify.apex-ok.example', 'erugo-verify=tok123')
    await dns.addA('apex-ok.example', [GATEWAY_V4])
    await dns.addAaaa('apex-ok.example', ['2001:0db8:0:0::10'])
    t.same(await v.check({ domain: 'apex-ok.example', apex: true, token: 'tok123', target: TARGET }), { ok: true, method: 'ownership' }, 'AAAA compared in canonical form')
  })

  t.test('apex: other TXT records beside ours are fine', async t => {
    await dns.setTxt('_erugo-verify.apex-many.example', 'v=spf1 -all')
    await dns.setTxt('_erugo-verify.apex-many.example', 'erugo-verify=tok456')
    await dns.addA('apex-many.example', [GATEWAY_V4])
    t.same(await v.check({ domain: 'apex-many.example', apex: true, token: 'tok456', target: TARGET }), { ok: true, method: 'ownership' })
  })

  t.test('apex: no TXT record', async t => {
    await dns.addA('apex-notxt.example', [GATEWAY_V4])
    t.same(failure(await v.check({ domain: 'apex-notxt.example', apex: true, token: 'tok', target: TARGET })), { reason: 'ownership_not_found', message: 'TXT record _erugo-verify.apex-notxt.example not found', definitive: true })
  })

  t.test('apex: TXT with another token', async t => {
    await dns.setTxt('_erugo-verify.apex-other.example', 'erugo-verify=someone-else')
    await dns.addA('apex-other.example', [GATEWAY_V4])
    t.match(failure(await v.check({ domain: 'apex-other.example', apex: true, token: 'mine', target: TARGET })), { reason: 'ownership_mismatch', definitive: true })
  })

  t.test('apex: an A record elsewhere (traffic would split)', async t => {
    await dns.setTxt('_erugo-verify.apex-split.example', 'erugo-verify=tok')
    await dns.addA('apex-split.example', [GATEWAY_V4, '198.51.100.7'])
    const f = failure(await v.check({ domain: 'apex-split.example', apex: true, token: 'tok', target: TARGET }))
    t.match(f, { reason: 'wrong_address', definitive: true })
    t.match(f?.message, /198\.51\.100\.7 is not a gateway address/)
  })

  t.test('apex: TXT but no A/AAAA', async t => {
    await dns.setTxt('_erugo-verify.apex-noaddr.example', 'erugo-verify=tok')
    t.match(failure(await v.check({ domain: 'apex-noaddr.example', apex: true, token: 'tok', target: TARGET })), { reason: 'record_not_found', message: 'No A or AAAA record found for apex-noaddr.example' })
  })

  t.test('apex without configured gateway addresses: compared with what the target resolves to', async t => {
    const unconfigured = verifier(dns.server, { gatewayAddresses: [] })
    // challtestsrv matches names case-sensitively (real servers do not); we query lower case.
    await dns.addA(TARGET.toLowerCase(), ['192.0.2.44'])
    await dns.setTxt('_erugo-verify.apex-resolved.example', 'erugo-verify=tok')
    await dns.addA('apex-resolved.example', ['192.0.2.44'])
    t.same(await unconfigured.check({ domain: 'apex-resolved.example', apex: true, token: 'tok', target: TARGET }), { ok: true, method: 'ownership' })
    await dns.setTxt('_erugo-verify.apex-elsewhere.example', 'erugo-verify=tok')
    await dns.addA('apex-elsewhere.example', ['192.0.2.45'])
    t.match(failure(await unconfigured.check({ domain: 'apex-elsewhere.example', apex: true, token: 'tok', target: TARGET })), { reason: 'wrong_address' })
  })

  t.test('a name below the zone may use the ownership path too (CNAME flattening)', async t => {
    await dns.setTxt('_erugo-verify.flat.sub.example', 'erugo-verify=tok')
    await dns.addA('flat.sub.example', [GATEWAY_V4])
    t.same(await v.check({ domain: 'flat.sub.example', apex: false, token: 'tok', target: TARGET }), { ok: true, method: 'ownership' })
  })

  t.test('a record that disappears', async t => {
    await dns.setCname('share.gone.example.com', TARGET)
    t.ok((await v.checkCname('share.gone.example.com', TARGET)).ok)
    await dns.clearCname('share.gone.example.com')
    t.match(failure(await v.checkCname('share.gone.example.com', TARGET)), { reason: 'record_not_found' })
  })
})

t.test('against TinyDns: NXDOMAIN, SERVFAIL, timeout', async t => {
  const dns = await TinyDns.start(t)
  const v = verifier(dns.server, { timeoutMs: 300 })

  t.test('NXDOMAIN: the domain does not exist, definitive', async t => {
    dns.mode = 'answer'
    const f = failure(await v.check({ domain: 'nope.example.org', apex: false, token: 'x', target: TARGET }))
    t.same(f, { reason: 'nxdomain', message: 'nope.example.org does not exist (NXDOMAIN)', definitive: true })
    t.ok(dns.queries.some(q => q.name === 'nope.example.org' && q.type === 'CNAME'), 'the query reached our server')
  })

  t.test('apex NXDOMAIN', async t => {
    dns.mode = 'answer'
    dns.set('_erugo-verify.ghost.example', { TXT: ['erugo-verify=tok'] })
    t.match(failure(await v.check({ domain: 'ghost.example', apex: true, token: 'tok', target: TARGET })), { reason: 'nxdomain', definitive: true })
  })

  t.test('served records work here too', async t => {
    dns.mode = 'answer'
    dns.set('www.tiny.example', { CNAME: TARGET })
    t.same(await v.check({ domain: 'www.tiny.example', apex: false, token: 'x', target: TARGET }), { ok: true, method: 'cname' })
  })

  t.test('SERVFAIL: not definitive', async t => {
    dns.mode = 'servfail'
    t.same(failure(await v.check({ domain: 'www.tiny.example', apex: false, token: 'x', target: TARGET })), { reason: 'servfail', message: 'DNS server failure (SERVFAIL) looking up www.tiny.example', definitive: false })
  })

  t.test('no answer: DNS timeout within the configured bound, not definitive', async t => {
    dns.mode = 'silent'
    const started = Date.now()
    const f = failure(await v.check({ domain: 'www.tiny.example', apex: false, token: 'x', target: TARGET }))
    t.same(f, { reason: 'timeout', message: 'DNS lookup of www.tiny.example timed out', definitive: false })
    t.ok(Date.now() - started < 10_000, 'bounded')
    dns.mode = 'answer'
  })
})
