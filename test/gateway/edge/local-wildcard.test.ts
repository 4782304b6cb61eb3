/**
 * The local CA's wildcard of the base domain: once control's route names the base domain, every
 * instance subdomain is served by one certificate `*.<base>` issued once, while a custom domain
 * keeps a certificate of its own; a one-label base (localhost) keeps one certificate per name, and
 * another issuer than the local CA never gets a wildcard it was not configured with.
 */
import t from 'tap'
import tls from 'node:tls'
import { readdirSync } from 'node:fs'
import { controlRoute } from '../../../gateway/edge/index.ts'
import { LocalCa } from '../../../gateway/edge/local-ca.ts'
import type { Issuer, IssuedCertificate } from '../../../gateway/edge/issuer.ts'
import { route, startEdge, tempDir, type TestEdge } from './helpers.ts'

const BASE = 'erugo.test'

interface Presented { ok: boolean, fingerprint?: string, subjectAltName?: string, error?: string }

function presented (te: TestEdge, servername: string, ca = te.ca): Promise<Presented> {
  return new Promise(resolve => {
    const socket = tls.connect({ host: '127.0.0.1', port: te.port, ca, servername, ALPNProtocols: ['http/1.1'] }, () => {
      const peer = socket.getPeerX509Certificate()
      resolve({ ok: true, fingerprint: peer?.fingerprint256, subjectAltName: peer?.subjectAltName })
      socket.destroy()
    })
    socket.on('error', err => resolve({ ok: false, error: (err as NodeJS.ErrnoException).code ?? err.message }))
  })
}

/** Issues through a real local CA and records the names asked for. */
class RecordingIssuer implements Issuer {
  readonly asked: string[] = []
  constructor (readonly id: string, private readonly ca: LocalCa) {}
  async issue (name: string): Promise<IssuedCertificate> {
    this.asked.push(name)
    return await this.ca.issue(name)
  }
}

t.test('subdomains of the base share one local wildcard certificate; a custom domain gets its own', async t => {
  const te = await startEdge(t, [
    controlRoute(BASE, null),
    route('one', 9, [`alpha.${BASE}`, 'files.customer.test']),
    route('two', 9, [`bravo.${BASE}`]),
  ], { http: false })
  const alpha = await presented(te, `alpha.${BASE}`)
  const bravo = await presented(te, `bravo.${BASE}`)
  const app = await presented(te, `app.${BASE}`)
  t.ok(alpha.ok && bravo.ok && app.ok, 'verified by the client against the local CA')
  t.equal(alpha.subjectAltName, `DNS:*.${BASE}`)
  t.equal(bravo.fingerprint, alpha.fingerprint, 'the same certificate for both instances')
  t.equal(app.fingerprint, alpha.fingerprint, 'and for control\'s names')
  const custom = await presented(te, 'files.customer.test')
  t.ok(custom.ok)
  t.equal(custom.subjectAltName, 'DNS:files.customer.test', 'a custom domain has its own')
  t.not(custom.fingerprint, alpha.fingerprint)
  t.equal((await presented(te, `charlie.${BASE}`)).ok, false, 'a subdomain no route has is still refused')

  const store = te.edge.certificates
  const served = Object.fromEntries(store.certificateStates().map(s => [s.hostname, s.certificateName]))
  t.same(served, {
    [`*.${BASE}`]: `*.${BASE}`,
    [`app.${BASE}`]: `*.${BASE}`,
    [`api.${BASE}`]: `*.${BASE}`,
    [`alpha.${BASE}`]: `*.${BASE}`,
    [`bravo.${BASE}`]: `*.${BASE}`,
    'files.customer.test': 'files.customer.test',
  })
  t.same(readdirSync(`${te.dataDir}/tls/certificates`).sort(), ['files.customer.test', `wildcard_.${BASE}`], 'two certificates on disk, not six')
})

t.test('a one-label base domain keeps one certificate per name (clients refuse *.localhost)', async t => {
  const te = await startEdge(t, [controlRoute('localhost', null), route('one', 9, ['alpha.localhost'])], { http: false })
  const alpha = await presented(te, 'alpha.localhost')
  t.ok(alpha.ok, `alpha.localhost handshake: ${alpha.error ?? 'ok'}`)
  t.equal(alpha.subjectAltName, 'DNS:alpha.localhost')
  t.notOk(te.edge.certificateStates().some(s => s.hostname.startsWith('*.')), 'no wildcard managed')
})

t.test('another issuer (ACME) gets no wildcard it was not configured with', async t => {
  const ca = await LocalCa.open({ directory: tempDir(t) })
  const issuer = new RecordingIssuer('acme:https://ca.test/directory', ca)
  const te = await startEdge(t, [controlRoute(BASE, null), route('one', 9, [`alpha.${BASE}`])], { http: false, issuer })
  t.same(issuer.asked.sort(), [`alpha.${BASE}`, `api.${BASE}`, `app.${BASE}`], 'one certificate per name')
  const alpha = await presented(te, `alpha.${BASE}`, Buffer.from(ca.certificatePem))
  t.equal(alpha.subjectAltName, `DNS:alpha.${BASE}`)
})
