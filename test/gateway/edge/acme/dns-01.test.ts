/**
 * DNS-01 through the challtestsrv provider: a wildcard for the base domain, after which new
 * subdomains are served at once with no new order.
 */
import t from 'tap'
import { startAcmeLab, handshake } from './lab.ts'
import { DnsChallenges, ChalltestsrvDnsProvider } from '../../../../gateway/edge/acme/dns-provider.ts'

t.test('DNS-01 wildcard for the base domain; a new subdomain is served at once with no new order', async t => {
  const lab = await startAcmeLab(t, {
    hostnames: ['a.apps.example.test'],
    edge: { wildcards: ['*.apps.example.test'] },
    solvers: ({ pebble }) => [new DnsChallenges(new ChalltestsrvDnsProvider(pebble.challtestsrvUrl))],
  })
  t.equal(lab.issuer.ordersPlaced, 1, 'one order: the wildcard')
  const wildcard = lab.te.edge.certificateStates().find(s => s.hostname === '*.apps.example.test')
  t.equal(wildcard?.status, 'active', JSON.stringify(wildcard))
  const root = await lab.pebble.root()
  const a = await handshake(lab.te.port, 'a.apps.example.test', root)
  t.ok(a.authorized, a.error ?? '')
  t.match(a.peerCertificate?.subjectaltname, /DNS:\*\.apps\.example\.test/)

  lab.te.edge.updateRoutes([lab.route('inst-1', ['a.apps.example.test']), lab.route('inst-2', ['b.apps.example.test'])])
  const b = await handshake(lab.te.port, 'b.apps.example.test', root)
  t.ok(b.authorized, b.error ?? '')
  await lab.te.edge.certificatesSettled()
  t.equal(lab.issuer.ordersPlaced, 1, 'no new order for the new subdomain')
  t.equal(lab.te.edge.certificateStates().find(s => s.hostname === 'b.apps.example.test')?.status, 'active')
})
