import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { decodeProtectedHeader, decodeJwt } from 'jose'
import { isApiError } from '../../../control/errors.ts'
import { loadTokenKeys } from '../../../control/services/keys.ts'
import { TokenService } from '../../../control/services/tokens.ts'

const keys = { access: randomBytes(32), refresh: randomBytes(32), instance: randomBytes(32) }
const tokens = new TokenService({ keys, issuer: 'test-issuer', accessTtlSeconds: 900, refreshTtlSeconds: 604800 })

async function rejects (t: Test, promise: Promise<unknown>, label: string): Promise<void> {
  const err = await promise.then(() => undefined, (e: unknown) => e)
  t.ok(isApiError(err) && err.data!.code === 'UNAUTHORIZED', `${label}: UNAUTHORIZED`)
}

t.test('instance tokens: spec claims, no expiry, distinct per issue', async t => {
  const a = await tokens.signInstance('inst_AAAAAAAAAAAAAAAAAAAAAA', 'usr_BBBBBBBBBBBBBBBBBBBBBB')
  const b = await tokens.signInstance('inst_AAAAAAAAAAAAAAAAAAAAAA', 'usr_BBBBBBBBBBBBBBBBBBBBBB')
  t.not(a.token, b.token)
  t.not(a.jti, b.jti, 'regeneration yields a new jti to compare against')
  const payload = decodeJwt(a.token)
  t.match(payload, { instance_id: 'inst_AAAAAAAAAAAAAAAAAAAAAA', user_id: 'usr_BBBBBBBBBBBBBBBBBBBBBB', sub: 'inst_AAAAAAAAAAAAAAAAAAAAAA', iss: 'test-issuer', aud: 'erugo-cloud:instance' })
  t.type(payload.iat, 'number')
  t.equal(payload.exp, undefined, 'spec: no expiration')
  t.same(decodeProtectedHeader(a.token), { alg: 'HS256', typ: 'it+jwt' })
  const claims = await tokens.verifyInstance(a.token)
  t.same(claims, { instanceId: 'inst_AAAAAAAAAAAAAAAAAAAAAA', userId: 'usr_BBBBBBBBBBBBBBBBBBBBBB', jti: a.jti, issuedAt: new Date(payload.iat! * 1000) })
})

t.test('each kind verifies only as itself', async t => {
  const access = await tokens.signAccess('usr_A', 0)
  const refresh = await tokens.signRefresh('usr_A', 'rtf_A')
  const instance = await tokens.signInstance('inst_A', 'usr_A')
  t.equal((await tokens.verifyAccess(access)).userId, 'usr_A')
  t.equal((await tokens.verifyRefresh(refresh.token)).familyId, 'rtf_A')
  await rejects(t, tokens.verifyAccess(refresh.token), 'refresh as access')
  await rejects(t, tokens.verifyAccess(instance.token), 'instance as access')
  await rejects(t, tokens.verifyRefresh(access), 'access as refresh')
  await rejects(t, tokens.verifyInstance(access), 'access as instance')
  await rejects(t, tokens.verifyInstance(refresh.token), 'refresh as instance')
  const otherIssuer = new TokenService({ keys, issuer: 'someone-else', accessTtlSeconds: 900, refreshTtlSeconds: 60 })
  await rejects(t, otherIssuer.verifyAccess(access), 'issuer checked')
  await rejects(t, tokens.verifyAccess(undefined), 'not a string')
  await rejects(t, tokens.verifyAccess('x'.repeat(5000)), 'too long')
})

t.test('expiry follows the injected clock', async t => {
  let now = new Date('2030-01-01T00:00:00Z')
  const clocked = new TokenService({ keys, issuer: 'i', accessTtlSeconds: 900, refreshTtlSeconds: 3600, now: () => now })
  const access = await clocked.signAccess('usr_A', 0)
  now = new Date(now.getTime() + 899_000)
  t.equal((await clocked.verifyAccess(access)).userId, 'usr_A', 'valid at 14:59')
  now = new Date(now.getTime() + 2_000)
  await rejects(t, clocked.verifyAccess(access), 'expired at 15:01')
})

t.test('keys: configured, or generated once into the data dir', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'cc-keys-'))
  t.teardown(() => { rmSync(dir, { recursive: true, force: true }) })
  const first = loadTokenKeys({}, dir)
  const second = loadTokenKeys({}, dir)
  t.same(first, second, 'reused on the next start')
  t.equal(statSync(join(dir, 'token-keys.json')).mode & 0o777, 0o600, 'file readable by its owner only')
  t.not(Buffer.from(first.access).toString('hex'), Buffer.from(first.refresh).toString('hex'), 'one key per kind')
  t.equal(first.access.length, 32)
  const configured = randomBytes(32).toString('base64url')
  const mixed = loadTokenKeys({ access: configured }, dir)
  t.same(Buffer.from(mixed.access), Buffer.from(configured, 'base64url'), 'configured key wins')
  t.same(mixed.refresh, first.refresh)
  t.ok(JSON.parse(readFileSync(join(dir, 'token-keys.json'), 'utf8')).instance)
})
