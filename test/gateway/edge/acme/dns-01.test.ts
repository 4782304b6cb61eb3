/**
 * DNS-01 through the challtestsrv provider: a wildcard for the base domain, after which new
 * subdomains are served at once with no new order. Second, the same configured from the
 * environment (CC_WILDCARDS, CC_ACME_DNS_PROVIDER) on a gateway run by control: the wildcard's
 * state reaches control under its own name, and an instance's subdomain needs no order.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import pino from 'pino'
import { acmeGatewayEnv, startAcmeLab, handshake } from './lab.ts'
import { DnsChallenges, ChalltestsrvDnsProvider } from '../../../../gateway/edge/acme/dns-provider.ts'
import { CertStoreService } from '../../../../control/services/cert-store.ts'
import { loadGatewayEnv } from '../../../../gateway/control/env.ts'
import { HttpControlPlane } from '../../../../gateway/control/http-client.ts'
import { startGatewayWithControl } from '../../../../gateway/control/run.ts'
import { accountRecordName } from '../../../../gateway/edge/acme/account.ts'
import { startPebble } from '../../../helpers/pebble.ts'
import { freePort } from '../../../helpers/ports.ts'
import { bearer, openTestDatabase } from '../../../control/harness.ts'
import { BASE_DOMAIN, mustCreate, newPublicKey, newUser } from '../../../control/routes/tunnel-fixtures.ts'
import { SECRET, startRpc } from '../../../control/rpc/fixtures.ts'
import { until } from '../../../helpers/until.ts'

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

t.test('from the environment, run by control: the wildcard is reported to control and covers a new subdomain', async t => {
  const [httpsPort, httpPort] = await Promise.all([freePort(), freePort()])
  const pebble = await startPebble(t, { httpPort, tlsPort: httpsPort })
  const db = await openTestDatabase(t, 'pglite')
  const h = await startRpc(t, db, { waitMs: 25_000, certificates: new CertStoreService({ db, key: randomBytes(32), now: () => new Date() }) })
  const wildcard = `*.${BASE_DOMAIN}`
  const settings = loadGatewayEnv(acmeGatewayEnv(t, pebble, { https: httpsPort, http: httpPort }, {
    CC_GATEWAY_ID: 'gw-wildcard',
    CC_WILDCARDS: wildcard,
    CC_ACME_DNS_PROVIDER: 'challtestsrv',
    CC_ACME_DNS_CHALLTESTSRV_URL: pebble.challtestsrvUrl,
  }))
  const running = await startGatewayWithControl({ plane: new HttpControlPlane({ url: h.server!.url, secret: SECRET }), settings, logger: pino({ level: 'silent' }), store: null, reportIntervalMs: 200 })
  if (running === null) throw new Error('the gateway did not start')
  t.teardown(() => running.stop(0))
  await running.gateway.edge!.certificatesSettled()

  const state = async (hostname: string): Promise<{ state: string } | undefined> => await db('certificate_states').where({ hostname }).first()
  await until('the wildcard reported active', async () => (await state(wildcard))?.state === 'active', 30_000, 100)
  t.match(await state(wildcard), { gateway_id: 'gw-wildcard', state: 'active' }, 'control accepted the wildcard\'s report')

  const user = await newUser(h, 'wild')
  const instance = await mustCreate(t, h, user.token, `wild${process.pid}`)
  t.equal((await h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(instance.token))).status, 200)
  const subdomain = `wild${process.pid}.${BASE_DOMAIN}`
  await until('the subdomain routed', async () => running.gateway.routes.some(r => r.hostnames.includes(subdomain)), 30_000, 100)
  const served = await handshake(httpsPort, subdomain, await pebble.root())
  t.ok(served.authorized, served.error ?? 'the new subdomain is served at once')
  t.match(served.peerCertificate?.subjectaltname, `DNS:${wildcard}`)
  await until('the subdomain reported active', async () => (await state(subdomain))?.state === 'active', 30_000, 100)
  await running.gateway.edge!.certificatesSettled()
  const stored = (await db('stored_certificates').select('name') as Array<{ name: string }>).map(r => r.name).sort()
  t.same(stored, [wildcard, accountRecordName(pebble.directoryUrl)].sort(), 'no certificate of its own for the subdomain: no order')
})
