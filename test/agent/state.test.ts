import t, { type Test } from 'tap'
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadOrCreateState, readState, writeState } from '../../agent/state.ts'
import { decodeKey, encodeKey, publicKeyFromPrivate } from '../../proto/noise/keys.ts'

function dir (t: Test): string {
  const d = mkdtempSync(join(tmpdir(), 'cc-agent-state-'))
  t.teardown(() => { rmSync(d, { recursive: true, force: true }) })
  return d
}

t.test('a new state has a fresh key pair, is written 0600 in a 0700 directory, and is reused', async t => {
  const path = join(dir(t), 'nested', 'agent.json')
  const first = loadOrCreateState(path)
  t.equal(first.public_key, encodeKey(publicKeyFromPrivate(decodeKey(first.private_key))))
  t.equal(first.status, 'disconnected')
  t.equal(statSync(path).mode & 0o777, 0o600)
  t.equal(statSync(join(path, '..')).mode & 0o777, 0o700)
  const again = loadOrCreateState(path)
  t.equal(again.private_key, first.private_key, 'same key on restart')
  t.not(loadOrCreateState(join(dir(t), 'other.json')).private_key, first.private_key, 'another file, another key')
})

t.test('loose permissions are tightened; the public key is always derived', async t => {
  const path = join(dir(t), 'agent.json')
  const state = loadOrCreateState(path)
  writeFileSync(path, JSON.stringify({ ...state, public_key: 'forged', status: 'connected' }))
  chmodSync(path, 0o644)
  const loaded = loadOrCreateState(path)
  t.equal(statSync(path).mode & 0o777, 0o600)
  t.equal(loaded.public_key, state.public_key)
  t.equal(loaded.status, 'connected')
})

t.test('an unusable file is moved aside and replaced', async t => {
  const d = dir(t)
  const path = join(d, 'agent.json')
  writeFileSync(path, '{not json')
  t.throws(() => readState(path), /not JSON/)
  let reason = ''
  const state = loadOrCreateState(path, r => { reason = r })
  t.match(reason, /not JSON/)
  t.ok(readdirSync(d).some(f => f.startsWith('agent.json.unusable-')), 'kept for inspection')
  t.equal(JSON.parse(readFileSync(path, 'utf8')).private_key, state.private_key)
  writeFileSync(path, JSON.stringify({ version: 1, private_key: 'short' }))
  t.throws(() => readState(path), /no valid private key/)
  t.equal(readState(join(d, 'missing.json')), null)
})

t.test('writes are atomic: no temporary file left behind', async t => {
  const d = dir(t)
  const path = join(d, 'agent.json')
  const state = loadOrCreateState(path)
  for (let i = 0; i < 5; i++) writeState(path, { ...state, last_error: `n${i}` })
  t.same(readdirSync(d), ['agent.json'])
  t.equal(readState(path)?.last_error, 'n4')
})
