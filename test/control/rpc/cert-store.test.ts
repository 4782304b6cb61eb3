/**
 * The certificate store control keeps for a fleet (control/services/cert-store.ts) and its RPC
 * endpoints: records replace atomically and keep their private key encrypted at rest; locks have
 * one holder at a time, are taken over after expiry, are released only by their holder, and a
 * crowd of holders racing for one lock (on separate connections) gets exactly one winner.
 */
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, rmSync, statSync, readFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { CERT_STORE_KEY_FILE, CertStoreKeyError, CertStoreService, keyId, loadCertStoreKey } from '../../../control/services/cert-store.ts'
import { RpcService } from '../../../control/rpc/service.ts'
import { RPC_PATHS, RpcError } from '../../../proto/rpc/index.ts'
import { LocalCa } from '../../../gateway/edge/local-ca.ts'
import { forEachDatabase } from '../harness.ts'
import { SECRET, startRpc } from './fixtures.ts'

const START = Date.parse('2026-03-01T12:00:00Z')

const caDir = mkdtempSync(join(tmpdir(), 'cc-cs-ca-'))
t.teardown(() => { rmSync(caDir, { recursive: true, force: true }) })
const ca = await LocalCa.open({ directory: caDir })

/** A real certificate and key (the local CA issues them), so PEM checks see real input. */
async function certificate (name: string): Promise<{ certificatePem: string, privateKeyPem: string }> {
  return await ca.issue(name)
}

t.test('loadCertStoreKey: generated once (0600) and reused; a configured key wins; a damaged file is an error', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'cc-cs-key-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const first = loadCertStoreKey(undefined, dir)
  t.equal(first.length, 32)
  const path = join(dir, CERT_STORE_KEY_FILE)
  t.equal(statSync(path).mode & 0o777, 0o600)
  t.same(loadCertStoreKey(undefined, dir), first, 'the same key after a restart')
  const configured = randomBytes(32)
  t.same(loadCertStoreKey(configured.toString('base64url'), dir), configured)
  t.equal(readFileSync(path, 'utf8').trim(), first.toString('base64url'), 'the file is untouched by a configured key')
  t.throws(() => loadCertStoreKey('short', dir), /CC_CERT_STORE_KEY does not hold a certificate store key/)
})

await forEachDatabase(t, async (t, db, kind) => {
  let time = START
  const now = (): Date => new Date(time)
  const key = randomBytes(32)
  const store = new CertStoreService({ db, key, now })
  const name = (label: string): string => `${label}-${kind}-${randomBytes(4).toString('hex')}.example.test`

  t.test('put, get, list, delete; put replaces the record whole', async t => {
    const host = name('cert')
    t.equal(await store.get(host), null, 'never stored')
    const first = await certificate(host)
    await store.put({ name: host, ...first, issuer: 'acme:https://ca.example.test/dir' })
    t.match(await store.get(host), { name: host, ...first, issuer: 'acme:https://ca.example.test/dir', updatedAt: new Date(START).toISOString() })
    t.ok((await store.list()).includes(host))
    time += 1000
    const second = await certificate(host)
    await store.put({ name: host, ...second, issuer: 'local-ca' })
    const got = await store.get(host)
    t.equal(got?.certificatePem, second.certificatePem)
    t.equal(got?.privateKeyPem, second.privateKeyPem, 'key and certificate from the same put')
    t.equal(got?.issuer, 'local-ca')
    t.equal(await store.delete(host), true)
    t.equal(await store.delete(host), false, 'a second delete finds nothing')
    t.equal(await store.get(host), null)
    t.notOk((await store.list()).includes(host))
  })

  t.test('private keys are encrypted at rest; another key or a moved ciphertext is a clear error', async t => {
    const host = name('rest')
    const other = name('other')
    const issued = await certificate(host)
    await store.put({ name: host, ...issued, issuer: 'local-ca' })
    await store.put({ name: other, ...issued, issuer: 'local-ca' })
    const row = await db('stored_certificates').where({ name: host }).first()
    const body = issued.privateKeyPem.split('\n')[1]!
    t.notMatch(row.private_key_ciphertext, 'PRIVATE KEY', 'no PEM in the row')
    t.notOk(JSON.stringify(row).includes(body), 'no key material in the row')
    t.equal(row.key_id, keyId(key))

    const wrongKey = new CertStoreService({ db, key: randomBytes(32), now })
    await t.rejects(wrongKey.get(host), CertStoreKeyError)
    await t.rejects(wrongKey.get(host), /stored under certificate store key [0-9a-f]{16}, control has [0-9a-f]{16}/)

    // The name is the additional data: a ciphertext copied onto another row does not decrypt.
    await db('stored_certificates').where({ name: other }).update({ private_key_ciphertext: row.private_key_ciphertext })
    await t.rejects(store.get(other), /does not decrypt/)
    t.equal((await store.get(host))?.privateKeyPem, issued.privateKeyPem, 'the original still reads')
  })

  t.test('locks: one holder; the same holder extends; expiry hands it over; only the holder releases', async t => {
    const lock = name('lock')
    const a = await store.lock(lock, 'gw-a/1', 60_000)
    t.same(a, { acquired: true, expiresAt: new Date(time + 60_000) }, 'A takes it')
    const b = await store.lock(lock, 'gw-b/1', 60_000)
    t.same(b, { acquired: false, expiresAt: new Date(time + 60_000) }, 'B is refused and told when it expires')
    time += 10_000
    t.same(await store.lock(lock, 'gw-a/1', 60_000), { acquired: true, expiresAt: new Date(time + 60_000) }, 'A asking again extends it')
    t.equal(await store.unlock(lock, 'gw-b/1'), false, 'B cannot release A\'s lock')
    t.equal((await store.lock(lock, 'gw-b/1', 60_000)).acquired, false, 'still A\'s')

    time += 59_999
    t.equal((await store.lock(lock, 'gw-b/1', 60_000)).acquired, false, 'one millisecond before expiry: still A\'s')
    time += 1
    t.equal((await store.lock(lock, 'gw-b/1', 30_000)).acquired, true, 'at expiry B takes it over (A died)')
    t.equal(await store.unlock(lock, 'gw-a/1'), false, 'A, back late, cannot release B\'s lock')
    t.equal((await store.lock(lock, 'gw-c/1', 30_000)).acquired, false, 'B still holds it')
    t.equal(await store.unlock(lock, 'gw-b/1'), true, 'B releases')
    t.equal(await store.unlock(lock, 'gw-b/1'), false, 'twice is a no-op')
    t.equal((await store.lock(lock, 'gw-c/1', 30_000)).acquired, true, 'free again: C takes it at once')
  })

  t.test('holders racing for one lock: exactly one wins, fresh or expired', async t => {
    for (let round = 0; round < 10; round++) {
      const lock = name(`race${round}`)
      if (round % 2 === 1) {
        // An expired holder's row: the racers must take it over, still one of them only.
        await store.lock(lock, 'gw-dead/1', 1_000)
        time += 1_000
      }
      const holders = Array.from({ length: 12 }, (_, i) => `gw-${i}/${round}`)
      const results = await Promise.all(holders.map(async h => ({ h, ...(await store.lock(lock, h, 60_000)) })))
      const winners = results.filter(r => r.acquired)
      t.equal(winners.length, 1, `round ${round}: one winner of ${holders.length}`)
      const row = await db('certificate_locks').where({ name: lock }).first()
      t.equal(row.holder, winners[0]?.h, 'the row names the winner')
    }
  })

  t.test('RPC: secret required, validation, lock semantics and NOT_FOUND without a store', async t => {
    const rpc = await startRpc(t, db, { certificates: store })
    const host = name('rpc')
    const issued = await certificate(host)
    const post = async (path: string, body: unknown, secret: string | null = SECRET): Promise<{ status: number, body: any }> => { // eslint-disable-line @typescript-eslint/no-explicit-any
      const res = await rpc.call('POST', path, body, secret)
      return { status: res.status, body: await res.json() }
    }
    t.equal((await post(RPC_PATHS.certificateGet, { name: host }, null)).status, 401, 'no secret, no answer')
    t.equal((await post(RPC_PATHS.certificatePut, { certificate: { name: host, ...issued, issuer: 'x' } }, 'y'.repeat(SECRET.length))).status, 401)
    t.equal(await store.get(host), null, 'an unauthenticated put stored nothing')

    t.same((await post(RPC_PATHS.certificateGet, { name: host })).body, { certificate: null })
    t.same((await post(RPC_PATHS.certificatePut, { certificate: { name: host, ...issued, issuer: 'acme:x' } })).body, { stored: true })
    t.match((await post(RPC_PATHS.certificateGet, { name: host })).body, { certificate: { name: host, ...issued, issuer: 'acme:x' } })
    t.ok((await post(RPC_PATHS.certificateList, {})).body.names.includes(host))

    const bad = await post(RPC_PATHS.certificateGet, { name: '../etc/passwd' })
    t.equal(bad.status, 422)
    t.match(bad.body.error, { code: 'VALIDATION_ERROR', details: { field: 'name' } })
    t.equal((await post(RPC_PATHS.certificatePut, { certificate: { name: host, certificatePem: 'nope', privateKeyPem: issued.privateKeyPem, issuer: 'x' } })).status, 422)
    t.equal((await post(RPC_PATHS.certificateLock, { name: host, holder: 'gw a', ttlMs: 1000 })).status, 422, 'holder with a space')
    t.equal((await post(RPC_PATHS.certificateLock, { name: host, holder: 'gw-a/1', ttlMs: 5 })).status, 422, 'ttl below the minimum')

    t.match((await post(RPC_PATHS.certificateLock, { name: `*.${host}`, holder: 'gw-a/1', ttlMs: 60_000 })).body, { acquired: true })
    t.match((await post(RPC_PATHS.certificateLock, { name: `*.${host}`, holder: 'gw-b/1', ttlMs: 60_000 })).body, { acquired: false })
    t.same((await post(RPC_PATHS.certificateUnlock, { name: `*.${host}`, holder: 'gw-b/1' })).body, { released: false })
    t.same((await post(RPC_PATHS.certificateUnlock, { name: `*.${host}`, holder: 'gw-a/1' })).body, { released: true })
    t.same((await post(RPC_PATHS.certificateDelete, { name: host })).body, { deleted: true })

    const bare = new RpcService({ db, tunnel: rpc.services.tunnel, ipam: rpc.services.ipam, registry: rpc.registry, waitMs: 100, reportIntervalMs: 5000, now, logger: pino({ level: 'silent' }) })
    const refused = await bare.getCertificate(host).then(() => null, (err: unknown) => err)
    t.ok(refused instanceof RpcError && refused.code === 'NOT_FOUND', 'a control plane without the store answers NOT_FOUND')
  })
})
