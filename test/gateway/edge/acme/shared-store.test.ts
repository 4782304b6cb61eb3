/**
 * Two gateways sharing one store: two FileCertStore instances over one directory (as on a shared
 * volume), and two ControlCertStores of different gateways over control's RPC listener (the fleet
 * set-up). The store's lock gives one order for a hostname both list at once, and both serve it.
 */
import t from 'tap'
import path from 'node:path'
import pino from 'pino'
import { startAcmeLab, handshake } from './lab.ts'
import { startEdge } from '../helpers.ts'
import { randomBytes } from 'node:crypto'
import { FileCertStore } from '../../../../gateway/edge/cert-store.ts'
import { AcmeIssuer } from '../../../../gateway/edge/acme/acme-issuer.ts'
import { accountRecordName } from '../../../../gateway/edge/acme/account.ts'
import { ControlCertStore } from '../../../../gateway/control/cert-store.ts'
import { HttpControlPlane } from '../../../../gateway/control/http-client.ts'
import { CertStoreService } from '../../../../control/services/cert-store.ts'
import { openTestDatabase } from '../../../control/harness.ts'
import { SECRET, startRpc } from '../../../control/rpc/fixtures.ts'

t.test('two gateways on one store: one order for a shared hostname, both serve it', async t => {
  const lab = await startAcmeLab(t)
  const storeB = new FileCertStore({ directory: path.join(lab.te.dataDir, 'tls') })
  // Both answer HTTP-01 from one responder (pebble's VA reaches gateway A's port whichever orders).
  const httpB = lab.http
  const issuerB = new AcmeIssuer({ directoryUrl: lab.pebble.directoryUrl, caBundlePem: lab.pebble.listenerCaPem, store: storeB, solvers: [httpB], logger: pino({ level: 'silent' }) })
  const teB = await startEdge(t, [], { issuer: issuerB, certStore: storeB, challenges: httpB })

  const routes = [lab.route('inst-1', ['shared.example.test'])]
  lab.te.edge.updateRoutes(routes)
  teB.edge.updateRoutes(routes)
  await Promise.all([lab.te.edge.certificatesSettled(), teB.edge.certificatesSettled()])
  t.equal(lab.issuer.ordersPlaced + issuerB.ordersPlaced, 1, 'one order across both gateways')
  const root = await lab.pebble.root()
  t.ok((await handshake(lab.te.port, 'shared.example.test', root)).authorized, 'gateway A serves it')
  t.ok((await handshake(teB.port, 'shared.example.test', root)).authorized, 'gateway B serves it')
})

t.test('two gateways on the control-backed store: one order for a shared hostname, one account, both serve it', async t => {
  const db = await openTestDatabase(t, 'pglite')
  const rpc = await startRpc(t, db, { certificates: new CertStoreService({ db, key: randomBytes(32), now: () => new Date() }) })
  const controlStore = (gatewayId: string): ControlCertStore =>
    new ControlCertStore({ plane: new HttpControlPlane({ url: rpc.server!.url, secret: SECRET }), gatewayId, lockPollMs: 100 })
  const storeA = controlStore('gw-a')
  const storeB = controlStore('gw-b')
  const lab = await startAcmeLab(t, { edge: { certStore: storeA } })
  const issuerB = new AcmeIssuer({ directoryUrl: lab.pebble.directoryUrl, caBundlePem: lab.pebble.listenerCaPem, store: storeB, solvers: [lab.http], logger: pino({ level: 'silent' }) })
  const teB = await startEdge(t, [], { issuer: issuerB, certStore: storeB, challenges: lab.http })

  const routes = [lab.route('inst-1', ['fleet.example.test'])]
  lab.te.edge.updateRoutes(routes)
  teB.edge.updateRoutes(routes)
  await Promise.all([lab.te.edge.certificatesSettled(), teB.edge.certificatesSettled()])
  t.equal(lab.issuer.ordersPlaced + issuerB.ordersPlaced, 1, 'one order across both gateways')
  t.same(lab.te.edge.certificateStates().map(s => s.status), ['active'], 'gateway A: active')
  t.same(teB.edge.certificateStates().map(s => s.status), ['active'], 'gateway B: active')

  const stored = await db('stored_certificates').orderBy('name').select('name', 'issuer') as Array<{ name: string, issuer: string }>
  t.same(stored.map(r => r.name), ['fleet.example.test', accountRecordName(lab.pebble.directoryUrl)].sort(), 'the certificate and one account key, in control')
  t.equal(await db('certificate_locks').count('* as n').first().then(r => Number(r!.n)), 0, 'every lock released')
  const root = await lab.pebble.root()
  t.ok((await handshake(lab.te.port, 'fleet.example.test', root)).authorized, 'gateway A serves it')
  t.ok((await handshake(teB.port, 'fleet.example.test', root)).authorized, 'gateway B serves it')
})
