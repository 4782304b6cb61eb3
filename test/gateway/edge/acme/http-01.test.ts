/**
 * HTTP-01 issuance against pebble through the edge's certificate store and manager, and the
 * "only listed hostnames, one order per name" policy.
 */
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { startAcmeLab, handshake, pool } from './lab.ts'
import { request } from '../helpers.ts'
import { accountRecordName } from '../../../../gateway/edge/acme/account.ts'

t.test('HTTP-01: an instance hostname gets a certificate from pebble, served by SNI and verified against pebble\'s root', async t => {
  const lab = await startAcmeLab(t, { hostnames: ['app.example.test'] })
  const [state] = lab.te.edge.certificateStates()
  t.equal(state?.hostname, 'app.example.test')
  t.equal(state?.status, 'active', `state: ${JSON.stringify(state)}`)
  t.equal(state?.issuer, `acme:${lab.pebble.directoryUrl}`)
  t.equal(lab.issuer.ordersPlaced, 1)
  t.equal(lab.http.size, 0, 'challenge answers removed after validation')

  const root = await lab.pebble.root()
  const hs = await handshake(lab.te.port, 'app.example.test', root)
  t.ok(hs.ok, hs.error ?? '')
  t.ok(hs.authorized, `verifies against pebble's root: ${hs.error ?? ''}`)
  t.match(hs.peerCertificate?.subjectaltname, /DNS:app\.example\.test/)
  const reply = await request({ ...lab.te, ca: Buffer.from(root) }, 'app.example.test')
  t.equal(reply.status, 200)
  t.equal(reply.body.toString(), `hello app.example.test:${lab.te.port}\n`)

  // Private keys at rest: the leaf's and the account's, both 0600.
  const tlsDir = path.join(lab.te.dataDir, 'tls', 'certificates')
  t.equal(fs.statSync(path.join(tlsDir, 'app.example.test', 'private-key.pem')).mode & 0o777, 0o600)
  t.equal(fs.statSync(path.join(tlsDir, accountRecordName(lab.pebble.directoryUrl), 'private-key.pem')).mode & 0o777, 0o600)
})

t.test('handshakes with 1,000 random unknown names place zero orders', async t => {
  const lab = await startAcmeLab(t, { hostnames: ['listed.example.test'] })
  t.equal(lab.issuer.ordersPlaced, 1)
  const root = await lab.pebble.root()
  const names = Array.from({ length: 1000 }, () => `${randomBytes(6).toString('hex')}.example.test`)
  const results = await pool(names, 50, name => handshake(lab.te.port, name, root))
  t.equal(results.filter(r => r.ok).length, 0, 'no handshake for an unknown name succeeds')
  await lab.te.edge.certificatesSettled()
  t.equal(lab.issuer.ordersPlaced, 1, 'still only the listed hostname\'s order')
  t.equal(lab.te.edge.certificateStates().length, 1)
})

t.test('500 parallel handshakes for one newly listed hostname place one order and all get the certificate', async t => {
  // 500 clients, all from 127.0.0.1 here: above the per-client connection cap's default.
  const lab = await startAcmeLab(t, { edge: { limits: { maxConnectionsPerClient: 1000 } } })
  t.equal(lab.issuer.ordersPlaced, 0)
  const root = await lab.pebble.root()
  lab.te.edge.updateRoutes([lab.route('inst-2', ['burst.example.test'])])
  const results = await Promise.all(Array.from({ length: 500 }, () => handshake(lab.te.port, 'burst.example.test', root, 60_000)))
  await lab.te.edge.certificatesSettled()
  t.equal(lab.issuer.ordersPlaced, 1, 'one order')
  const failed = results.filter(r => !r.ok || !r.authorized)
  t.equal(failed.length, 0, `failed: ${JSON.stringify(failed.slice(0, 3).map(f => f.error))}`)
})
