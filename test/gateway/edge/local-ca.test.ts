import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { X509Certificate } from 'node:crypto'
import { LocalCa, LEAF_LIFETIME_MS, CA_LIFETIME_MS, LocalCaError } from '../../../gateway/edge/local-ca.ts'
import { tempDir } from './helpers.ts'

const DAY = 86_400_000

t.test('the CA is created once (key 0600) and reused on the next open', async t => {
  const dir = tempDir(t)
  const first = await LocalCa.open({ directory: dir })
  t.equal(first.certificatePath, path.join(dir, 'ca.crt'))
  t.equal(fs.statSync(path.join(dir, 'ca.key')).mode & 0o777, 0o600)
  const keyBefore = fs.readFileSync(path.join(dir, 'ca.key'), 'utf8')
  const second = await LocalCa.open({ directory: dir })
  t.equal(second.certificatePem, first.certificatePem, 'same CA certificate')
  t.equal(fs.readFileSync(path.join(dir, 'ca.key'), 'utf8'), keyBefore, 'same key')
  // A leaf from the reopened CA verifies against the first CA's certificate.
  const leaf = new X509Certificate((await second.issue('a.example.test')).certificatePem)
  t.ok(leaf.verify(new X509Certificate(first.certificatePem).publicKey))
})

t.test('two processes opening an empty directory at once agree on one CA', async t => {
  const dir = tempDir(t)
  const [a, b] = await Promise.all([LocalCa.open({ directory: dir }), LocalCa.open({ directory: dir })])
  t.equal(a.certificatePem, b.certificatePem)
  t.equal(fs.readFileSync(path.join(dir, 'ca.crt'), 'utf8'), a.certificatePem)
  t.same(fs.readdirSync(dir).sort(), ['ca.crt', 'ca.key'], 'no temporary files left')
})

t.test('CA certificate: ECDSA P-256, CA:TRUE, 10 years', async t => {
  const now = Date.parse('2026-01-01T00:00:00Z')
  const ca = await LocalCa.open({ directory: tempDir(t), now: () => now })
  const c = new X509Certificate(ca.certificatePem)
  t.ok(c.ca)
  t.equal(c.publicKey.asymmetricKeyDetails?.namedCurve, 'prime256v1')
  t.ok(c.checkIssued(c), 'self-signed')
  t.ok(c.verify(c.publicKey))
  const lifetime = Date.parse(c.validTo) - now
  t.ok(Math.abs(lifetime - CA_LIFETIME_MS) < DAY, `~10 years (${lifetime / DAY} days)`)
})

t.test('leaf: SAN is the name only, ~90 days, serverAuth, signed by the CA', async t => {
  const now = Date.parse('2026-03-01T00:00:00Z')
  const ca = await LocalCa.open({ directory: tempDir(t), now: () => now })
  const issued = await ca.issue('share.example.test')
  const leaf = new X509Certificate(issued.certificatePem)
  const caCert = new X509Certificate(ca.certificatePem)
  t.equal(leaf.subjectAltName, 'DNS:share.example.test')
  t.notOk(leaf.ca)
  t.ok(leaf.checkIssued(caCert))
  t.ok(leaf.verify(caCert.publicKey))
  t.equal(leaf.checkHost('share.example.test'), 'share.example.test')
  t.equal(leaf.checkHost('other.example.test'), undefined)
  t.same(leaf.keyUsage, ['1.3.6.1.5.5.7.3.1'], 'extended key usage: serverAuth')
  t.ok(Date.parse(leaf.validFrom) <= now, 'valid from now (backdated a little)')
  t.ok(Math.abs(Date.parse(leaf.validTo) - now - LEAF_LIFETIME_MS) < 60_000, 'valid for 90 days')
  t.ok(leaf.checkPrivateKey((await import('node:crypto')).createPrivateKey(issued.privateKeyPem)))
  const again = new X509Certificate((await ca.issue('share.example.test')).certificatePem)
  t.not(again.serialNumber, leaf.serialNumber, 'fresh serial per issuance')
})

t.test('a wildcard and a name too long for a common name are issued in the SAN', async t => {
  const ca = await LocalCa.open({ directory: tempDir(t) })
  const wild = new X509Certificate((await ca.issue('*.example.test')).certificatePem)
  t.equal(wild.checkHost('a.example.test'), '*.example.test')
  t.equal(wild.checkHost('a.b.example.test'), undefined, 'one label only')
  const long = `${'a'.repeat(60)}.${'b'.repeat(60)}.example.test`
  const leaf = new X509Certificate((await ca.issue(long)).certificatePem)
  t.equal(leaf.checkHost(long), long)
  t.notOk(leaf.subject, 'no CN beyond 64 characters (RFC 5280 ub-common-name)')
})

t.test('a key without its certificate (or a mismatched pair) is refused, not overwritten', async t => {
  const dir = tempDir(t)
  await LocalCa.open({ directory: dir })
  fs.rmSync(path.join(dir, 'ca.crt'))
  await t.rejects(LocalCa.open({ directory: dir }), LocalCaError)
  t.ok(fs.existsSync(path.join(dir, 'ca.key')), 'key kept')
  const other = tempDir(t)
  await LocalCa.open({ directory: other })
  fs.copyFileSync(path.join(other, 'ca.crt'), path.join(dir, 'ca.crt'))
  await t.rejects(LocalCa.open({ directory: dir }), LocalCaError)
})
