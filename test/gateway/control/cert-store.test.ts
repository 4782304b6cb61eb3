/**
 * ControlCertStore over the real RPC listener (control on PGlite): the CertStore contract through
 * control, a second gateway waiting for a lock and taking it on release or expiry, callers of one
 * process queueing locally, bounded retries with clear errors, the ACME account key shared, and
 * the choice between the control-backed and the file store.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { CertStoreService } from '../../../control/services/cert-store.ts'
import { ControlCertStore, hasCertificateStore } from '../../../gateway/control/cert-store.ts'
import { loadGatewayEnv } from '../../../gateway/control/env.ts'
import { HttpControlPlane } from '../../../gateway/control/http-client.ts'
import { acmeStartOptions } from '../../../gateway/control/run.ts'
import { StaticControlPlane } from '../../../gateway/control/static-file.ts'
import { ChalltestsrvDnsProvider } from '../../../gateway/edge/acme/dns-provider.ts'
import { loadOrCreateAccountKey } from '../../../gateway/edge/acme/account.ts'
import { CertStoreError } from '../../../gateway/edge/cert-store.ts'
import { LocalCa } from '../../../gateway/edge/local-ca.ts'
import { freePort } from '../../helpers/ports.ts'
import { validateConfig } from '../../../gateway/config/schema.ts'
import { encodeKey, generatePrivateKey } from '../../../proto/noise/keys.ts'
import type { CertificateStorePlane } from '../../../proto/rpc/index.ts'
import { openTestDatabase } from '../../control/harness.ts'
import { SECRET, startRpc } from '../../control/rpc/fixtures.ts'

const silent = pino({ level: 'silent' })
const dir = mkdtempSync(join(tmpdir(), 'cc-ccs-'))
t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
const ca = await LocalCa.open({ directory: join(dir, 'ca') })
const db = await openTestDatabase(t, 'pglite')
const rpc = await startRpc(t, db, { certificates: new CertStoreService({ db, key: randomBytes(32), now: () => new Date() }) })
const plane = (secret = SECRET): HttpControlPlane => new HttpControlPlane({ url: rpc.server!.url, secret, requestTimeoutMs: 2_000 })
let counter = 0
const fresh = (label: string): string => `${label}-${++counter}.example.test`

async function rejection (p: Promise<unknown>): Promise<CertStoreError> {
  const err = await p.then(() => null, (e: unknown) => e)
  if (!(err instanceof CertStoreError)) throw new Error(`expected a CertStoreError, got ${String(err)}`)
  return err
}

/** Counts calls to the plane's lock method (what reached, or tried to reach, control). */
function counting (inner: CertificateStorePlane): CertificateStorePlane & { calls: number } {
  const counted = {
    calls: 0,
    getCertificate: async (name: string) => { counted.calls++; return await inner.getCertificate(name) },
    putCertificate: async (c: Parameters<CertificateStorePlane['putCertificate']>[0]) => { counted.calls++; await inner.putCertificate(c) },
    deleteCertificate: async (name: string) => { counted.calls++; return await inner.deleteCertificate(name) },
    listCertificates: async () => { counted.calls++; return await inner.listCertificates() },
    lockCertificate: async (r: Parameters<CertificateStorePlane['lockCertificate']>[0]) => { counted.calls++; return await inner.lockCertificate(r) },
    unlockCertificate: async (r: Parameters<CertificateStorePlane['unlockCertificate']>[0]) => { counted.calls++; return await inner.unlockCertificate(r) },
  }
  return counted
}

t.test('the CertStore contract through control', async t => {
  const store = new ControlCertStore({ plane: plane(), gatewayId: 'gw-a' })
  t.match(store.holder, /^gw-a\/[A-Za-z0-9_-]{12}$/, 'holder = gateway id / per-process id')
  t.not(new ControlCertStore({ plane: plane(), gatewayId: 'gw-a' }).holder, store.holder, 'each process is its own holder')
  const name = fresh('contract')
  t.equal(await store.get(name), undefined)
  const issued = await ca.issue(name)
  await store.put({ name, ...issued, issuer: 'local-ca' })
  t.same(await store.get(name), { name, ...issued, issuer: 'local-ca' })
  t.ok((await store.list()).includes(name))
  await store.delete(name)
  t.equal(await store.get(name), undefined)
  t.equal((await rejection(store.get('../x'))).code, 'INVALID_NAME', 'names checked before any request')
})

t.test('a second gateway waits for the lock and gets it on release', async t => {
  const a = new ControlCertStore({ plane: plane(), gatewayId: 'gw-a' })
  const b = new ControlCertStore({ plane: plane(), gatewayId: 'gw-b', lockPollMs: 25 })
  const name = fresh('wait')
  await a.lock(name, 60_000)
  let bHolds = false
  const waiting = b.lock(name, 60_000).then(() => { bHolds = true })
  await new Promise(resolve => setTimeout(resolve, 300))
  t.equal(bHolds, false, 'B waits while A holds it')
  await a.unlock(name)
  await waiting
  t.equal(bHolds, true, 'B holds it after A released it')
  t.match(await db('certificate_locks').where({ name }).first(), { holder: b.holder })
  await b.unlock(name)
  t.equal(await db('certificate_locks').where({ name }).first(), undefined, 'released')
})

t.test('a dead holder\'s lock is taken over after its expiry; a waiter gives up at lockWaitMs', async t => {
  const dead = new ControlCertStore({ plane: plane(), gatewayId: 'gw-dead' })
  const b = new ControlCertStore({ plane: plane(), gatewayId: 'gw-b', lockPollMs: 25 })
  const name = fresh('expiry')
  await dead.lock(name, 400) // and never unlocks
  const started = Date.now()
  await b.lock(name, 60_000)
  const waited = Date.now() - started
  t.ok(waited >= 300, `B waited for the expiry (${waited} ms)`)
  t.match(await db('certificate_locks').where({ name }).first(), { holder: b.holder })
  await dead.unlock(name) // the dead holder coming back cannot free B's lock
  t.match(await db('certificate_locks').where({ name }).first(), { holder: b.holder }, 'still B\'s')

  const c = new ControlCertStore({ plane: plane(), gatewayId: 'gw-c', lockPollMs: 25, lockWaitMs: 200 })
  const err = await rejection(c.lock(name, 60_000))
  t.equal(err.code, 'LOCK_TIMEOUT')
  t.match(err.message, `lock ${name} still held by another gateway after 200 ms`)
  await b.unlock(name)
})

t.test('callers in one process queue locally (control sees one holder)', async t => {
  const store = new ControlCertStore({ plane: plane(), gatewayId: 'gw-a' })
  const name = fresh('local')
  const order: string[] = []
  await store.lock(name, 60_000)
  const second = store.lock(name, 60_000).then(() => { order.push('second locked') })
  await new Promise(resolve => setTimeout(resolve, 200))
  order.push('first unlocking')
  await store.unlock(name)
  await second
  t.same(order, ['first unlocking', 'second locked'])
  await store.unlock(name)
  t.equal(await db('certificate_locks').where({ name }).first(), undefined)
})

t.test('bounded retries: unreachable control fails after the attempts, with the operation named', async t => {
  const closedPort = await freePort()
  const unreachable = counting(new HttpControlPlane({ url: `http://127.0.0.1:${closedPort}`, secret: SECRET, requestTimeoutMs: 1_000 }))
  const store = new ControlCertStore({ plane: unreachable, gatewayId: 'gw-a', attempts: 3, retryDelayMs: 10 })
  const err = await rejection(store.get('down.example.test'))
  t.equal(err.code, 'UNAVAILABLE')
  t.match(err.message, /^certificate store \(control\): get down\.example\.test: control unreachable: ECONNREFUSED \(after 3 attempts\)$/)
  t.equal(unreachable.calls, 3, 'three attempts, no more')

  const wrongSecret = counting(plane('w'.repeat(SECRET.length)))
  const refused = await rejection(new ControlCertStore({ plane: wrongSecret, gatewayId: 'gw-a', attempts: 3, retryDelayMs: 10 }).list())
  t.equal(wrongSecret.calls, 1, 'a refusal is not retried')
  t.match(refused.message, /^certificate store \(control\): list: control answered 401: a valid gateway secret is required$/)

  // A control plane without the store (an older control) says so, and how to do without.
  const bare = await startRpc(t, db)
  const old = await rejection(new ControlCertStore({ plane: new HttpControlPlane({ url: bare.server!.url, secret: SECRET }), gatewayId: 'gw-a' }).get('x.example.test'))
  t.match(old.message, /control offers no certificate store .* set CC_CERT_STORE=file/)
})

t.test('retried lock whose first answer was lost: granted again to its sender', async t => {
  const name = fresh('lost')
  let lose = true
  const inner = plane()
  const lossy: CertificateStorePlane = {
    ...counting(inner),
    lockCertificate: async r => {
      const reply = await inner.lockCertificate(r)
      if (lose) {
        lose = false
        throw new Error('connection reset after control answered')
      }
      return reply
    },
  }
  const store = new ControlCertStore({ plane: lossy, gatewayId: 'gw-a', retryDelayMs: 10 })
  await store.lock(name, 60_000)
  t.match(await db('certificate_locks').where({ name }).first(), { holder: store.holder })
  await store.unlock(name)
})

t.test('the ACME account key: created once for gateways sharing control', async t => {
  const a = new ControlCertStore({ plane: plane(), gatewayId: 'gw-a', lockPollMs: 25 })
  const b = new ControlCertStore({ plane: plane(), gatewayId: 'gw-b', lockPollMs: 25 })
  const directory = `https://ca-${++counter}.example.test/dir`
  const [ka, kb] = await Promise.all([loadOrCreateAccountKey(a, directory), loadOrCreateAccountKey(b, directory)])
  t.match(ka, /^-----BEGIN PRIVATE KEY-----/)
  t.equal(ka, kb, 'one account key')
  t.equal(await db('stored_certificates').where('name', 'like', 'acme-account-%').count('* as n').first().then(r => Number(r!.n)), 1)
})

t.test('in-process (cloud-connect start): the same store over control\'s RpcService itself', async t => {
  const a = new ControlCertStore({ plane: rpc.rpc, gatewayId: 'gw-start' })
  const b = new ControlCertStore({ plane: plane(), gatewayId: 'gw-remote', lockPollMs: 25, lockWaitMs: 150 })
  const name = fresh('inprocess')
  const issued = await ca.issue(name)
  await a.put({ name, ...issued, issuer: 'local-ca' })
  t.same(await b.get(name), { name, ...issued, issuer: 'local-ca' }, 'what one stores in-process the other reads over HTTP')
  await a.lock(name, 60_000)
  t.equal((await rejection(b.lock(name, 60_000))).code, 'LOCK_TIMEOUT', 'and the lock excludes the other')
  await a.unlock(name)
  await b.lock(name, 60_000)
  await b.unlock(name)
  t.equal((await rejection(a.put({ name, certificatePem: 'not pem', privateKeyPem: issued.privateKeyPem, issuer: 'x' }))).message,
    'certificate store (control): put ' + name + ': certificate put: certificate.certificatePem: must be PEM (CERTIFICATE)', 'validated in-process too, not retried')
})

t.test('store choice: control-backed with ACME against control, file otherwise', async t => {
  const base = { CC_DATA_DIR: dir, CC_GATEWAY_ID: 'gw-choice' }
  const acme = { ...base, CC_ACME_DIRECTORY: 'https://acme.example.test/dir' }
  const chosen = acmeStartOptions(plane(), loadGatewayEnv(acme), silent)
  t.ok(chosen.certStore instanceof ControlCertStore, 'ACME + control: the control-backed store')
  t.match((chosen.certStore as ControlCertStore).holder, /^gw-choice\//)
  t.equal(chosen.dnsProvider, undefined, 'no DNS provider configured')
  t.equal(acmeStartOptions(plane(), loadGatewayEnv({ ...acme, CC_CERT_STORE: 'file' }), silent).certStore, undefined, 'CC_CERT_STORE=file: the file store')
  t.same(acmeStartOptions(plane(), loadGatewayEnv(base), silent), {}, 'no ACME: the local CA and its file store')
  t.same(acmeStartOptions(plane(), loadGatewayEnv({ ...acme, CC_EDGE: '0' }), silent), {}, 'no edge: nothing')
  const staticPlane = new StaticControlPlane(validateConfig({ privateKey: encodeKey(generatePrivateKey()), listenPort: 0, address: '10.100.0.1' }))
  t.notOk(hasCertificateStore(staticPlane), 'a static file plane keeps no store')
  t.equal(acmeStartOptions(staticPlane, loadGatewayEnv(acme), silent).certStore, undefined, 'a plane without a store: the file store')
  const inProcess = acmeStartOptions(rpc.rpc, loadGatewayEnv(acme), silent)
  t.ok(inProcess.certStore instanceof ControlCertStore, '`cloud-connect start`: control\'s RpcService in-process is the store')
  const dns = acmeStartOptions(plane(), loadGatewayEnv({ ...acme, CC_ACME_DNS_PROVIDER: 'challtestsrv', CC_ACME_DNS_CHALLTESTSRV_URL: 'http://127.0.0.1:8055' }), silent)
  t.ok(dns.dnsProvider instanceof ChalltestsrvDnsProvider, 'CC_ACME_DNS_PROVIDER builds the provider')
})
