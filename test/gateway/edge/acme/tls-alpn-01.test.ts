/**
 * TLS-ALPN-01 answered on the edge's HTTPS listener; ordinary handshakes keep working meanwhile.
 */
import t from 'tap'
import { startAcmeLab, handshake } from './lab.ts'
import { TlsAlpnChallenges } from '../../../../gateway/edge/acme/tls-alpn.ts'

t.test('TLS-ALPN-01: an instance hostname gets a certificate validated on the HTTPS listener, then served by SNI', async t => {
  const alpn = new TlsAlpnChallenges()
  const lab = await startAcmeLab(t, {
    hostnames: ['alpn.example.test'],
    edge: { tlsAlpnChallenges: alpn },
    // TLS-ALPN-01 only: the HTTP-01 solver is not offered to the issuer.
    issuer: { solvers: [alpn] },
  })
  t.equal(lab.issuer.ordersPlaced, 1)
  const state = lab.te.edge.certificateStates()[0]
  t.equal(state?.status, 'active', JSON.stringify(state))
  t.equal(lab.http.size, 0)
  const root = await lab.pebble.root()
  const hs = await handshake(lab.te.port, 'alpn.example.test', root)
  t.ok(hs.authorized, hs.error ?? '')
  t.match(hs.peerCertificate?.subjectaltname, /DNS:alpn\.example\.test/)
})
