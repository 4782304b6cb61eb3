/**
 * TLS contexts at scale, with real handshakes on loopback: none is built before a client needs
 * it, at most the configured number stay in memory, an evicted name is served again with the same
 * certificate, renewal scans build none, and an edge with hundreds of names answers HTTPS while
 * most of their certificates are still being issued.
 */
import t from 'tap'
import tls from 'node:tls'
import pino from 'pino'
import { TlsContextCache } from '../../../gateway/edge/tls-contexts.ts'
import { CertificateManager } from '../../../gateway/edge/certificates.ts'
import { FileCertStore } from '../../../gateway/edge/cert-store.ts'
import { LocalCa } from '../../../gateway/edge/local-ca.ts'
import { Edge, netConnector } from '../../../gateway/edge/index.ts'
import type { Issuer, IssuedCertificate } from '../../../gateway/edge/issuer.ts'
import { delay, route, startEdge, tempDir } from './helpers.ts'

const DAY = 86_400_000
const logger = pino({ level: 'silent' })

interface Presented { ok: boolean, fingerprint?: string, subjectAltName?: string, error?: string }

/** A verified handshake for `servername`: the certificate the edge presented. */
function presented (port: number, ca: Buffer, servername: string): Promise<Presented> {
  return new Promise(resolve => {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername, ALPNProtocols: ['http/1.1'] }, () => {
      const peer = socket.getPeerX509Certificate()
      resolve({ ok: true, fingerprint: peer?.fingerprint256, subjectAltName: peer?.subjectAltName })
      socket.destroy()
    })
    socket.on('error', err => resolve({ ok: false, error: (err as NodeJS.ErrnoException).code ?? err.message }))
  })
}

t.test('the cache keeps the most recently used contexts and never serves one of another serial', async t => {
  const cache = new TlsContextCache(2)
  const [a, b, c] = [tls.createSecureContext(), tls.createSecureContext(), tls.createSecureContext()]
  cache.set('a', '01', a)
  cache.set('b', '02', b)
  t.equal(cache.get('a', '01'), a, 'a used: b is now the least recently used')
  cache.set('c', '03', c)
  t.equal(cache.size, 2)
  t.equal(cache.get('b', '02'), undefined, 'b evicted')
  t.equal(cache.get('a', '01'), a)
  t.equal(cache.get('c', '03'), c)
  t.equal(cache.evicted, 1)
  t.equal(cache.get('a', '99'), undefined, 'a renewed certificate never gets the old context')
  t.throws(() => new TlsContextCache(0), /positive integer/)
})

t.test('contexts are built at the first handshake, at most tlsContextCache are kept, and an evicted name gets the same certificate again', async t => {
  const names = Array.from({ length: 6 }, (_, i) => `n${i}.example.test`)
  const te = await startEdge(t, [route('a', 9, names)], { http: false, limits: { tlsContextCache: 2 } })
  const manager = te.edge.certificates
  t.equal(manager.certificateStates().filter(s => s.status === 'active').length, 6, 'every name has its certificate')
  t.equal(manager.contexts.size, 0, 'no context before any handshake')

  const first: Record<string, string> = {}
  for (const name of names) {
    const p = await presented(te.port, te.ca, name)
    t.ok(p.ok, `${name} handshake`)
    t.equal(p.subjectAltName, `DNS:${name}`)
    first[name] = p.fingerprint!
    t.ok(manager.contexts.size <= 2, `at most two contexts after ${name}`)
  }
  t.equal(manager.contexts.size, 2)
  t.equal(manager.contexts.evicted, 4, 'the four least recently used were evicted')
  t.notOk(manager.contexts.has(names[0]), `${names[0]} is no longer in memory`)

  for (const name of [names[0], names[1], names[0]]) {
    const again = await presented(te.port, te.ca, name)
    t.ok(again.ok, `${name} again`)
    t.equal(again.fingerprint, first[name], `${name}: the same certificate as before its eviction`)
  }
  t.ok(manager.contexts.has(names[0]) && manager.contexts.has(names[1]), 'the two just used are the two kept')
  t.equal(new Set(Object.values(first)).size, names.length, 'one certificate per name (no wildcard configured)')
})

t.test('renewal scans read no context: only the names handshaken since have one', async t => {
  const clock = { now: Date.parse('2026-05-01T00:00:00Z') }
  const now = (): number => clock.now
  const ca = await LocalCa.open({ directory: tempDir(t), now })
  const store = new FileCertStore({ directory: tempDir(t), now })
  const manager = new CertificateManager({ store, issuer: ca, logger, now, contextCacheSize: 10 })
  const names = Array.from({ length: 20 }, (_, i) => `r${i}.example.test`)
  manager.setHostnames(names)
  await manager.settled()
  t.ok(await manager.secureContext(names[0]), 'one name handshaken')
  const before = (await store.get(names[5]))!.certificatePem
  clock.now += 70 * DAY // past two thirds of 90 days
  await manager.maintain()
  t.not((await store.get(names[5]))!.certificatePem, before, 'renewed and stored')
  t.equal(manager.certificateStates().filter(s => s.status === 'active').length, 20)
  t.equal(manager.contexts.size, 1, 'the renewal of twenty names built only the context already in use')
})

/** The real local CA, each issuance held back a while: issuing hundreds of names takes seconds. */
class SlowLocalCa implements Issuer {
  readonly id = 'local-ca'
  issued = 0
  constructor (private readonly ca: LocalCa, private readonly delayMs: number) {}
  async issue (name: string): Promise<IssuedCertificate> {
    await delay(this.delayMs)
    const cert = await this.ca.issue(name)
    this.issued++
    return cert
  }
}

t.test('an edge with hundreds of names answers HTTPS for the last of them while most are still being issued', async t => {
  const dataDir = tempDir(t)
  const ca = await LocalCa.open({ directory: tempDir(t) })
  const issuer = new SlowLocalCa(ca, 100)
  const names = Array.from({ length: 300 }, (_, i) => `s${i}.custom${i}.test`)
  const edge = new Edge({ dataDir, logger, connector: netConnector, https: { host: '127.0.0.1', port: 0 }, http: false, issuer })
  edge.updateRoutes([route('a', 9, names)])
  t.teardown(() => edge.close(0))
  await edge.start()
  const last = names[names.length - 1]
  const p = await presented(edge.addresses().https.port, Buffer.from(ca.certificatePem), last)
  t.ok(p.ok, `${last} handshake: ${p.error ?? 'ok'}`)
  t.equal(p.subjectAltName, `DNS:${last}`)
  const pending = edge.certificateStates().filter(s => s.status === 'pending').length
  t.ok(pending > 100, `the first answer did not wait for the others: ${pending} of ${names.length} still pending`)
  t.ok(issuer.issued < names.length / 2, `${issuer.issued} issued so far`)
})
