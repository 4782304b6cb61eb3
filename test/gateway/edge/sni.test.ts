/**
 * TLS at the edge with real handshakes: certificate chosen by SNI (exact, then one-label
 * wildcard), handshake failure for unknown or missing SNI (no default certificate), no issuance
 * for names outside the route table, and the local CA reused across restarts.
 */
import t from 'tap'
import tls from 'node:tls'
import fs from 'node:fs'
import path from 'node:path'
import net from 'node:net'
import { X509Certificate } from 'node:crypto'
import pino from 'pino'
import { startEdge, route, tempDir, request, type TestEdge } from './helpers.ts'
import { LocalCa } from '../../../gateway/edge/local-ca.ts'
import { FileCertStore } from '../../../gateway/edge/cert-store.ts'
import { Edge, netConnector } from '../../../gateway/edge/index.ts'
import { freePort } from '../../helpers/ports.ts'

interface Handshake { ok: boolean, subjectAltName?: string, error?: string, alpn?: string | false | null }

function handshake (te: TestEdge, servername: string | undefined, alpn = ['http/1.1']): Promise<Handshake> {
  return new Promise(resolve => {
    const socket = tls.connect({
      host: '127.0.0.1',
      port: te.port,
      ca: te.ca,
      ...(servername !== undefined ? { servername } : {}),
      ALPNProtocols: alpn,
      // With no servername node would check the certificate against 127.0.0.1: check only the chain.
      checkServerIdentity: servername === undefined ? () => undefined : tls.checkServerIdentity,
    }, () => {
      const peer = socket.getPeerX509Certificate()
      resolve({ ok: true, subjectAltName: peer?.subjectAltName, alpn: socket.alpnProtocol })
      socket.destroy()
    })
    socket.on('error', err => resolve({ ok: false, error: (err as NodeJS.ErrnoException).code ?? err.message }))
  })
}

t.test('exact names get their own certificate; unknown names and no SNI fail the handshake', async t => {
  const te = await startEdge(t, [route('a', 9, ['a.example.test', 'b.example.test'])], { http: false })
  const a = await handshake(te, 'a.example.test')
  t.ok(a.ok, 'verified against the local CA')
  t.equal(a.subjectAltName, 'DNS:a.example.test')
  t.equal((await handshake(te, 'B.EXAMPLE.TEST')).subjectAltName, 'DNS:b.example.test', 'SNI matched case-insensitively')
  const unknown = await handshake(te, 'unknown.example.test')
  t.notOk(unknown.ok)
  t.match(unknown.error, /HANDSHAKE_FAILURE/, 'a handshake_failure alert, not a default certificate')
  const none = await handshake(te, undefined)
  t.notOk(none.ok, 'no SNI: no certificate')
  t.match(none.error, /HANDSHAKE_FAILURE/)
  t.same((await new FileCertStore({ directory: path.join(te.dataDir, 'tls') }).list()), ['a.example.test', 'b.example.test'],
    'nothing issued for the unknown name')
})

t.test('ALPN offers h2 and http/1.1', async t => {
  const te = await startEdge(t, [route('a', 9, ['a.example.test'])], { http: false })
  t.equal((await handshake(te, 'a.example.test', ['h2', 'http/1.1'])).alpn, 'h2')
  t.equal((await handshake(te, 'a.example.test', ['http/1.1'])).alpn, 'http/1.1')
  const noH2 = await startEdge(t, [route('a', 9, ['a.example.test'])], { http: false, http2: false })
  const r = await handshake(noH2, 'a.example.test', ['h2', 'http/1.1'])
  t.ok(r.ok)
  t.not(r.alpn, 'h2', 'http2: false never negotiates h2')
})

/** A TLS 1.2 handshake offering only `ciphers` (OpenSSL names): the suite agreed on, or the error. */
function tls12Handshake (te: TestEdge, ciphers: string): Promise<string> {
  return new Promise(resolve => {
    const socket = tls.connect({ host: '127.0.0.1', port: te.port, ca: te.ca, servername: 'a.example.test', maxVersion: 'TLSv1.2', ciphers }, () => {
      resolve(socket.getCipher().standardName)
      socket.destroy()
    })
    socket.on('error', err => resolve(`failed: ${(err as NodeJS.ErrnoException).code ?? err.message}`))
  })
}

t.test('TLS 1.2 offers ECDHE with AEAD suites only: a CBC-only client fails the handshake', async t => {
  const te = await startEdge(t, [route('a', 9, ['a.example.test'])], { http: false })
  // The local CA issues ECDSA P-256 keys: the ECDHE-ECDSA suites are the ones that can agree.
  t.equal(new X509Certificate((await handshakePeer(te, 'a.example.test')).raw).publicKey.asymmetricKeyType, 'ec')
  for (const cbc of ['ECDHE-ECDSA-AES128-SHA256', 'ECDHE-ECDSA-AES256-SHA384', 'ECDHE-ECDSA-AES128-SHA', 'AES128-SHA']) {
    t.match(await tls12Handshake(te, cbc), /^failed: .*HANDSHAKE_FAILURE/, `${cbc} refused`)
  }
  t.equal(await tls12Handshake(te, 'ECDHE-ECDSA-AES128-GCM-SHA256'), 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256')
  t.equal(await tls12Handshake(te, 'ECDHE-ECDSA-AES256-GCM-SHA384'), 'TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384')
  t.equal(await tls12Handshake(te, 'ECDHE-ECDSA-CHACHA20-POLY1305'), 'TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256')
  t.equal(await tls12Handshake(te, 'ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-GCM-SHA256'), 'TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256',
    'a client offering both gets the AEAD suite')
  const tls13 = await new Promise<string>(resolve => {
    const socket = tls.connect({ host: '127.0.0.1', port: te.port, ca: te.ca, servername: 'a.example.test', minVersion: 'TLSv1.3' }, () => {
      resolve(`${socket.getProtocol() ?? ''} ${socket.getCipher().standardName}`)
      socket.destroy()
    })
    socket.on('error', err => resolve(`failed: ${err.message}`))
  })
  t.match(tls13, /^TLSv1\.3 TLS_(AES_\d+_GCM|CHACHA20_POLY1305)_SHA\d+$/, 'TLS 1.3 still works')
})

t.test('wildcard selection: exact certificate first, then the one-label wildcard', async t => {
  const dataDir = tempDir(t)
  // Put certificates in place before start, as an ACME DNS-01 issuer or an operator would.
  const ca = await LocalCa.open({ directory: path.join(dataDir, 'tls', 'local-ca') })
  const store = new FileCertStore({ directory: path.join(dataDir, 'tls') })
  await store.put({ name: '*.example.test', ...(await ca.issue('*.example.test')), issuer: 'manual' })
  await store.put({ name: 'exact.example.test', ...(await ca.issue('exact.example.test')), issuer: 'manual' })
  const te = await startEdge(t, [route('a', 9, ['exact.example.test', 'w.example.test', 'deep.w.example.test'])], {
    dataDir, http: false, wildcards: ['*.example.test'],
  })
  t.equal((await handshake(te, 'exact.example.test')).subjectAltName, 'DNS:exact.example.test', 'exact wins')
  t.equal((await handshake(te, 'w.example.test')).subjectAltName, 'DNS:*.example.test', 'wildcard covers one label')
  t.equal((await handshake(te, 'deep.w.example.test')).subjectAltName, 'DNS:deep.w.example.test',
    'two labels below: not covered, so it got its own')
  t.notOk((await handshake(te, 'other.example.test')).ok, 'a name under the wildcard but not routed still fails')
  t.same(await store.list(), ['*.example.test', 'deep.w.example.test', 'exact.example.test'], 'no certificate for w.example.test itself')
})

t.test('a handshake for a name outside the route table never issues anything', async t => {
  const te = await startEdge(t, [route('a', 9, ['a.example.test'])], { http: false })
  const before = await new FileCertStore({ directory: path.join(te.dataDir, 'tls') }).list()
  const names = Array.from({ length: 50 }, (_, i) => `random${i}.example.test`)
  const results = await Promise.all(names.map(n => handshake(te, n)))
  t.ok(results.every(r => !r.ok), 'all 50 failed')
  await te.edge.certificatesSettled()
  t.same(await new FileCertStore({ directory: path.join(te.dataDir, 'tls') }).list(), before)
  t.same(te.edge.certificateStates().map(s => s.hostname), ['a.example.test'])
})

t.test('a hostname added by updateRoutes is served after issuance; a removed one fails', async t => {
  const te = await startEdge(t, [route('a', 9, ['a.example.test'])], { http: false })
  t.notOk((await handshake(te, 'new.example.test')).ok)
  te.edge.updateRoutes([route('a', 9, ['a.example.test', 'new.example.test'])])
  t.ok((await handshake(te, 'new.example.test')).ok, 'handshake waits for the new certificate')
  te.edge.updateRoutes([route('a', 9, ['new.example.test'])])
  t.notOk((await handshake(te, 'a.example.test')).ok, 'removed name no longer served')
  t.same(te.edge.certificateStates().map(s => [s.hostname, s.status]), [['new.example.test', 'active']])
})

t.test('the local CA is created once and reused across restarts; certificates too', async t => {
  const dataDir = tempDir(t)
  const first = await startEdge(t, [route('a', 9, ['a.example.test'])], { dataDir, http: false })
  const caPath = first.edge.caCertificatePath!
  t.equal(caPath, path.join(dataDir, 'tls', 'local-ca', 'ca.crt'))
  const serial = new X509Certificate((await new FileCertStore({ directory: path.join(dataDir, 'tls') }).get('a.example.test'))!.certificatePem).serialNumber
  await first.edge.close(0)
  const second = await startEdge(t, [route('a', 9, ['a.example.test'])], { dataDir, http: false })
  t.equal(second.ca.toString(), first.ca.toString(), 'same CA certificate after restart')
  // A client that trusted the CA before the restart still verifies the edge after it.
  const r = await handshake({ ...second, ca: first.ca }, 'a.example.test')
  t.ok(r.ok)
  const again = new X509Certificate((await new FileCertStore({ directory: path.join(dataDir, 'tls') }).get('a.example.test'))!.certificatePem).serialNumber
  t.equal(again, serial, 'leaf reused, not reissued')
  t.equal(fs.statSync(path.join(dataDir, 'tls', 'local-ca', 'ca.key')).mode & 0o777, 0o600)
  t.equal(fs.statSync(path.join(dataDir, 'tls', 'certificates', 'a.example.test', 'private-key.pem')).mode & 0o777, 0o600)
})

t.test('renewal through the edge: a certificate past 2/3 of its life is replaced and served', async t => {
  const dataDir = tempDir(t)
  const clock = { now: Date.now() - 61 * 86_400_000 }
  // Issue with a clock 61 days in the past: 29 of 90 days remain today.
  const old = await startEdge(t, [route('a', 9, ['a.example.test'])], { dataDir, http: false, now: () => clock.now })
  const oldSerial = (await handshakePeer(old, 'a.example.test')).serialNumber
  await old.edge.close(0)
  clock.now = Date.now()
  const te = await startEdge(t, [route('a', 9, ['a.example.test'])], { dataDir, http: false, now: () => clock.now })
  const peer = await handshakePeer(te, 'a.example.test')
  t.not(peer.serialNumber, oldSerial, 'renewed at start-up')
  t.ok(Date.parse(peer.validTo) > Date.now() + 89 * 86_400_000)
  const r = await request(te, 'a.example.test').catch(err => ({ status: 0, err }))
  t.equal(r.status, 502, 'and serves requests with it (no origin: 502)')
})

function handshakePeer (te: TestEdge, servername: string): Promise<X509Certificate> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host: '127.0.0.1', port: te.port, ca: te.ca, servername }, () => {
      resolve(socket.getPeerX509Certificate()!)
      socket.destroy()
    })
    socket.on('error', reject)
  })
}

t.test('a listener port already taken: start() fails with EADDRINUSE and leaves nothing open or issued', async t => {
  const [httpsPort, httpPort] = [await freePort(), await freePort()]
  const blocker = net.createServer()
  await new Promise<void>(resolve => blocker.listen(httpPort, '127.0.0.1', resolve))
  t.teardown(() => new Promise<void>(resolve => blocker.close(() => resolve())))
  const dataDir = tempDir(t)
  const edge = new Edge({
    dataDir,
    logger: pino({ level: 'silent' }),
    connector: netConnector,
    https: { host: '127.0.0.1', port: httpsPort },
    http: { host: '127.0.0.1', port: httpPort },
  })
  edge.updateRoutes([route('a', 9, ['a.example.test'])])
  await t.rejects(edge.start(), { code: 'EADDRINUSE', port: httpPort })
  t.same(edge.certificateStates(), [], 'no certificate manager was started')
  t.notOk(fs.existsSync(path.join(dataDir, 'tls')), 'nothing issued or created in the data directory')
  const again = net.createServer()
  await t.resolves(new Promise<void>((resolve, reject) => { again.once('error', reject); again.listen(httpsPort, '127.0.0.1', resolve) }), 'the HTTPS port that did open was closed again')
  await new Promise<void>(resolve => again.close(() => resolve()))
})
