/**
 * Two gateways sharing one store (here two FileCertStore instances over one directory, as on a
 * shared volume): the store's lock gives one order for a hostname both list at once.
 */
import t from 'tap'
import path from 'node:path'
import pino from 'pino'
import { startAcmeLab, handshake } from './lab.ts'
import { startEdge } from '../helpers.ts'
import { FileCertStore } from '../../../../gateway/edge/cert-store.ts'
import { AcmeIssuer } from '../../../../gateway/edge/acme/acme-issuer.ts'

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
