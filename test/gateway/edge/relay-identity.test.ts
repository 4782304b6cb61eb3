/** The relay identity (gateway/edge/relay-identity.ts): generated once, private key 0600, fingerprint of the DER. */
import t from 'tap'
import fs from 'node:fs'
import path from 'node:path'
import { createHash, X509Certificate } from 'node:crypto'
import { loadOrCreateRelayIdentity } from '../../../gateway/edge/relay-identity.ts'
import { tempDir } from './helpers.ts'

t.test('first start creates the key (0600) and certificate; later starts reuse them', async t => {
  const dir = tempDir(t)
  const first = await loadOrCreateRelayIdentity(dir)
  const keyPath = path.join(dir, 'relay', 'relay.key')
  t.equal(fs.statSync(keyPath).mode & 0o777, 0o600, 'private key readable by us alone')
  t.equal(first.fingerprint, createHash('sha256').update(new X509Certificate(first.certificatePem).raw).digest('hex'))
  t.match(first.fingerprint, /^[0-9a-f]{64}$/)
  fs.chmodSync(keyPath, 0o644)
  const again = await loadOrCreateRelayIdentity(dir)
  t.equal(again.fingerprint, first.fingerprint, 'same identity after a restart')
  t.equal(fs.statSync(keyPath).mode & 0o777, 0o600, 'a widened mode is narrowed again')
  const [x, y] = await Promise.all([loadOrCreateRelayIdentity(tempDir(t)), loadOrCreateRelayIdentity(tempDir(t))])
  t.not(x.fingerprint, y.fingerprint, 'each gateway its own')
})

t.test('a key that does not match the certificate stops start-up', async t => {
  const dir = tempDir(t)
  await loadOrCreateRelayIdentity(dir)
  const other = tempDir(t)
  await loadOrCreateRelayIdentity(other)
  fs.copyFileSync(path.join(other, 'relay', 'relay.key'), path.join(dir, 'relay', 'relay.key'))
  await t.rejects(loadOrCreateRelayIdentity(dir), { code: 'RELAY_IDENTITY_INVALID' })
})
