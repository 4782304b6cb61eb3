import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { FileCertStore, CertStoreError, storageKey } from '../../../gateway/edge/cert-store.ts'
import { LocalCa } from '../../../gateway/edge/local-ca.ts'
import { tempDir, delay } from './helpers.ts'

async function issued (t: Parameters<typeof tempDir>[0], name: string): Promise<{ certificatePem: string, privateKeyPem: string }> {
  const ca = await LocalCa.open({ directory: tempDir(t) })
  return ca.issue(name)
}

t.test('put, get, list, delete; the private key file is 0600', async t => {
  const dir = tempDir(t)
  const store = new FileCertStore({ directory: dir })
  t.equal(await store.get('a.example.test'), undefined)
  t.same(await store.list(), [])
  const cert = await issued(t, 'a.example.test')
  const wild = await issued(t, '*.example.test')
  await store.put({ name: 'a.example.test', ...cert, issuer: 'local-ca' })
  await store.put({ name: '*.example.test', ...wild, issuer: 'manual' })
  const got = await store.get('a.example.test')
  t.equal(got?.certificatePem, cert.certificatePem)
  t.equal(got?.privateKeyPem, cert.privateKeyPem)
  t.equal(got?.issuer, 'local-ca')
  t.equal((await store.get('*.example.test'))?.issuer, 'manual')
  t.same(await store.list(), ['*.example.test', 'a.example.test'])
  const keyFile = path.join(dir, 'certificates', 'a.example.test', 'private-key.pem')
  t.equal(fs.statSync(keyFile).mode & 0o777, 0o600, 'key readable by the owner only')
  t.equal(fs.statSync(path.join(dir, 'certificates', 'wildcard_.example.test', 'private-key.pem')).mode & 0o777, 0o600)
  t.equal(fs.statSync(path.join(dir, 'certificates')).mode & 0o077, 0, 'certificate directory closed to others')
  await store.delete('a.example.test')
  t.equal(await store.get('a.example.test'), undefined)
  t.same(await store.list(), ['*.example.test'])
})

t.test('a key that does not belong to the certificate reads as no record', async t => {
  const store = new FileCertStore({ directory: tempDir(t) })
  const one = await issued(t, 'a.example.test')
  const two = await issued(t, 'a.example.test')
  await store.put({ name: 'a.example.test', certificatePem: one.certificatePem, privateKeyPem: two.privateKeyPem, issuer: 'x' })
  t.equal(await store.get('a.example.test'), undefined)
})

t.test('names that could escape the directory are refused', async t => {
  const store = new FileCertStore({ directory: tempDir(t) })
  for (const bad of ['../etc', 'a/b', '*.*.example.test', 'A.example.test', '', '.', 'a..b', '*']) {
    await t.rejects(store.get(bad), CertStoreError, bad)
  }
  t.equal(storageKey('*.example.test'), 'wildcard_.example.test')
})

t.test('lock: a second holder waits until unlock', async t => {
  const dir = tempDir(t)
  const one = new FileCertStore({ directory: dir, lockPollMs: 10 })
  const two = new FileCertStore({ directory: dir, lockPollMs: 10 })
  await one.lock('a.example.test', 60_000)
  let acquired = false
  const waiting = two.lock('a.example.test', 60_000).then(() => { acquired = true })
  await delay(100)
  t.notOk(acquired, 'still held')
  await one.unlock('a.example.test')
  await waiting
  t.ok(acquired, 'acquired after release')
  await two.unlock('a.example.test')
  t.notOk(fs.existsSync(path.join(dir, 'locks', 'a.example.test.lock')))
})

t.test('lock: an expired lock of a dead holder is taken over', async t => {
  const dir = tempDir(t)
  let now = 1_000_000
  const dead = new FileCertStore({ directory: dir, now: () => now })
  const live = new FileCertStore({ directory: dir, now: () => now, lockPollMs: 10, lockWaitMs: 60_000 })
  await dead.lock('a.example.test', 5_000) // never unlocked
  let acquired = false
  const waiting = live.lock('a.example.test', 5_000).then(() => { acquired = true })
  await delay(50)
  t.notOk(acquired)
  now += 5_001
  await waiting
  t.ok(acquired)
})

t.test('lock: gives up with LOCK_TIMEOUT after lockWaitMs', async t => {
  const dir = tempDir(t)
  const one = new FileCertStore({ directory: dir })
  const two = new FileCertStore({ directory: dir, lockWaitMs: 100, lockPollMs: 10 })
  await one.lock('a.example.test', 60_000)
  await t.rejects(two.lock('a.example.test', 60_000), { code: 'LOCK_TIMEOUT' })
})
