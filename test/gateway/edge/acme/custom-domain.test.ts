/**
 * A custom domain through the whole chain: control (PGlite, RPC listener, DNS checks against
 * pebble's challtestsrv) verifies it, `ssl_status` reads `provisioning`; the gateway, run by
 * control over HTTP exactly as `cloud-connect gateway --control` with CC_ACME_* set, gets the
 * hostname in its snapshot, orders the certificate from pebble (HTTP-01, control-backed store)
 * and reports it; control then shows `ssl_status` `active` on GET /v1/instances/{id}/domains and
 * GET /v1/tunnel/status, and the gateway serves the domain with a certificate from pebble's root.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import pino from 'pino'
import { CertStoreService } from '../../../../control/services/cert-store.ts'
import type { Subscription } from '../../../../control/services/plans.ts'
import { loadGatewayEnv } from '../../../../gateway/control/env.ts'
import { HttpControlPlane } from '../../../../gateway/control/http-client.ts'
import { startGatewayWithControl } from '../../../../gateway/control/run.ts'
import { SnapshotStore } from '../../../../gateway/control/store.ts'
import { ControlCertStore } from '../../../../gateway/control/cert-store.ts'
import { startPebble } from '../../../helpers/pebble.ts'
import { freePort } from '../../../helpers/ports.ts'
import { bearer, openTestDatabase } from '../../../control/harness.ts'
import { mustCreate, newPublicKey, newUser } from '../../../control/routes/tunnel-fixtures.ts'
import { SECRET, startRpc } from '../../../control/rpc/fixtures.ts'
import { acmeGatewayEnv, handshake } from './lab.ts'

const PRO: Subscription = { plan: 'pro', status: 'active' }

t.test('custom domain: verified -> ssl_status provisioning -> active, the certificate from pebble through the gateway', async t => {
  const [httpsPort, httpPort] = await Promise.all([freePort(), freePort()])
  const pebble = await startPebble(t, { httpPort, tlsPort: httpsPort })
  const db = await openTestDatabase(t, 'pglite')
  const plans = new Map<string, Subscription>()
  const h = await startRpc(t, db, {
    waitMs: 25_000,
    certificates: new CertStoreService({ db, key: randomBytes(32), now: () => new Date() }),
    // challtestsrv answers every A query with 127.0.0.1: the "gateway address" of this set-up.
    env: { CC_DNS_RESOLVERS: pebble.dnsAddress, CC_DNS_GATEWAY_ADDRESSES: '127.0.0.1', CC_DNS_TIMEOUT_MS: '1000', CC_DNS_TRIES: '2' },
    deps: { subscriptions: async (_db, userId) => plans.get(userId) ?? { plan: 'free', status: 'none' } },
  })

  const settings = loadGatewayEnv(acmeGatewayEnv(t, pebble, { https: httpsPort, http: httpPort }, {
    CC_GATEWAY_ID: 'gw-domains',
    CC_ACME_CHALLENGES: 'http-01',
  }))
  const running = await startGatewayWithControl({
    plane: new HttpControlPlane({ url: h.server!.url, secret: SECRET }),
    settings,
    logger: pino({ level: 'silent' }),
    store: new SnapshotStore(settings.snapshotFile),
    reportIntervalMs: 200,
  })
  if (running === null) throw new Error('the gateway did not start')
  t.teardown(() => running.stop(0))
  const edge = running.gateway.edge!
  // The wiring under test: with ACME against control, certificates live in control's store.
  t.ok((edge.certificates as unknown as { store: unknown }).store instanceof ControlCertStore, 'the gateway uses the control-backed store')

  const user = await newUser(h, 'domains')
  plans.set(user.id, PRO)
  const instance = await mustCreate(t, h, user.token, `files${process.pid}`)
  const registered = await h.request('POST', '/v1/tunnel/register', { public_key: newPublicKey() }, bearer(instance.token))
  t.equal(registered.status, 200)

  const domain = `files${process.pid}x${randomBytes(3).toString('hex')}.com`
  const added = await h.request('POST', `/v1/instances/${instance.id}/domains`, { domain }, bearer(user.token))
  t.equal(added.status, 201, added.raw)
  const list = async (): Promise<{ status: string, ssl_status: string }> =>
    (await h.request('GET', `/v1/instances/${instance.id}/domains`, undefined, bearer(user.token))).body.domains.find((d: { domain: string }) => d.domain === domain)
  t.match(await list(), { status: 'pending_verification', ssl_status: 'none' }, 'not served before verification')
  t.notOk(running.gateway.routes.some(r => r.hostnames.includes(domain)), 'the gateway does not route it yet')

  // The apex path: the ownership TXT record, and A records (challtestsrv: 127.0.0.1) at the gateway.
  const txt = await fetch(new URL('/set-txt', pebble.challtestsrvUrl), { method: 'POST', body: JSON.stringify({ host: `_erugo-verify.${domain}.`, value: added.body.verification.value }) })
  t.equal(txt.status, 200)
  const verified = await h.request('POST', `/v1/instances/${instance.id}/domains/${domain}/verify`, undefined, bearer(user.token))
  t.same(verified.body, { domain, status: 'verified', ssl_status: 'provisioning' })

  const seen: string[] = []
  const deadline = Date.now() + 90_000
  while (Date.now() < deadline) {
    const status = (await list()).ssl_status
    if (seen.at(-1) !== status) seen.push(status)
    if (status === 'active' || status === 'failed') break
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  t.same(seen, ['provisioning', 'active'], 'GET /v1/instances/{id}/domains: provisioning, then active')
  t.ok(running.gateway.routes.some(r => r.hostnames.includes(domain)), 'the gateway routes the domain')
  const tunnel = await h.request('GET', '/v1/tunnel/status', undefined, bearer(instance.token))
  t.same(tunnel.body.domains.custom_domains, [{ domain, status: 'active', ssl_status: 'active' }], 'GET /v1/tunnel/status agrees')

  const state = await db('certificate_states').where({ hostname: domain }).first()
  t.match(state, { gateway_id: 'gw-domains', state: 'active' })
  t.ok(new Date(state.not_after).getTime() > Date.now(), 'with the certificate\'s expiry')
  t.ok(await db('stored_certificates').where({ name: domain }).first(), 'the certificate is in control\'s store')
  const served = await handshake(httpsPort, domain, await pebble.root())
  t.ok(served.authorized, served.error ?? 'served with a certificate from pebble')
  t.match(served.peerCertificate?.subjectaltname, `DNS:${domain}`)
})
