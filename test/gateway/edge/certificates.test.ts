/**
 * The certificate manager with an injected clock: issuance only for managed names, renewal when a
 * third of the lifetime remains, wildcard coverage, failure backoff, one issuance per name across
 * two managers sharing a store.
 */
import t from 'tap'
import pino from 'pino'
import { X509Certificate } from 'node:crypto'
import { CertificateManager } from '../../../gateway/edge/certificates.ts'
import { FileCertStore } from '../../../gateway/edge/cert-store.ts'
import { LocalCa } from '../../../gateway/edge/local-ca.ts'
import { IssuerError, type Issuer, type IssuedCertificate } from '../../../gateway/edge/issuer.ts'
import { tempDir, delay } from './helpers.ts'

const DAY = 86_400_000
const logger = pino({ level: 'silent' })

/** An issuer that records every name it is asked for and can be told to fail. */
class SpyIssuer implements Issuer {
  readonly id = 'spy'
  readonly asked: string[] = []
  failWith: Error | undefined
  slowMs = 0
  constructor (private readonly ca: LocalCa) {}
  async issue (name: string): Promise<IssuedCertificate> {
    this.asked.push(name)
    if (this.slowMs > 0) await delay(this.slowMs)
    if (this.failWith !== undefined) throw this.failWith
    return this.ca.issue(name)
  }
}

async function setup (t: Parameters<typeof tempDir>[0], options: { wildcards?: string[], storeDir?: string } = {}) {
  const clock = { now: Date.parse('2026-05-01T00:00:00Z') }
  const now = (): number => clock.now
  const ca = await LocalCa.open({ directory: tempDir(t), now })
  const issuer = new SpyIssuer(ca)
  const store = new FileCertStore({ directory: options.storeDir ?? tempDir(t), now, lockPollMs: 10 })
  const manager = new CertificateManager({ store, issuer, logger, now, wildcards: options.wildcards })
  return { clock, ca, issuer, store, manager }
}

function serialOf (pem: string): string {
  return new X509Certificate(pem).serialNumber
}

t.test('managed names get a certificate; state goes pending -> active', async t => {
  const { manager, issuer, store } = await setup(t)
  manager.setHostnames(['a.example.test', 'B.Example.Test'])
  t.same(manager.certificateStates().map(s => s.status), ['pending', 'pending'])
  await manager.settled()
  t.same(issuer.asked.sort(), ['a.example.test', 'b.example.test'])
  const states = manager.certificateStates()
  t.same(states.map(s => [s.hostname, s.status, s.certificateName]), [
    ['a.example.test', 'active', 'a.example.test'], ['b.example.test', 'active', 'b.example.test']])
  t.equal(new Date(states[0].notAfter!).getTime() - new Date(states[0].notBefore!).getTime(), 90 * DAY + 3_600_000)
  t.same(await store.list(), ['a.example.test', 'b.example.test'])
  t.ok(await manager.secureContext('A.EXAMPLE.TEST.'), 'served for the name in any case')
})

t.test('a name that is not managed never causes issuance', async t => {
  const { manager, issuer, store } = await setup(t)
  manager.setHostnames(['a.example.test'])
  await manager.settled()
  for (const name of ['evil.example.test', 'x.a.example.test', 'example.test', '', '127.0.0.1', 'a.example.test.evil']) {
    t.equal(await manager.secureContext(name), undefined, name)
  }
  await manager.maintain()
  t.same(issuer.asked, ['a.example.test'])
  t.same(await store.list(), ['a.example.test'])
})

t.test('renewal happens once a third of the lifetime remains, not before', async t => {
  const { manager, issuer, store, clock } = await setup(t)
  manager.setHostnames(['a.example.test'])
  await manager.settled()
  const first = serialOf((await store.get('a.example.test'))!.certificatePem)
  clock.now += 59 * DAY // 31 days + 1 h left of 90 days + 1 h: more than a third
  await manager.maintain()
  t.equal(issuer.asked.length, 1, 'not yet')
  clock.now += 2 * DAY // 29 days left: less than a third
  await manager.maintain()
  t.equal(issuer.asked.length, 2, 'renewed')
  const second = (await store.get('a.example.test'))!
  t.not(serialOf(second.certificatePem), first, 'new certificate stored')
  const state = manager.certificateStates()[0]
  t.equal(state.status, 'active')
  t.equal(state.notAfter, new Date(clock.now + 90 * DAY).toISOString().replace(/\.\d{3}Z$/, '.000Z'))
  await manager.maintain()
  t.equal(issuer.asked.length, 2, 'the fresh certificate is not renewed again')
})

t.test('a stored certificate is reused on restart instead of issuing again', async t => {
  const storeDir = tempDir(t)
  const one = await setup(t, { storeDir })
  one.manager.setHostnames(['a.example.test'])
  await one.manager.settled()
  const two = await setup(t, { storeDir })
  two.manager.setHostnames(['a.example.test'])
  await two.manager.settled()
  t.same(two.issuer.asked, [], 'second manager loaded it from the store')
  t.equal(two.manager.certificateStates()[0].status, 'active')
})

t.test('a hostname under a managed wildcard uses it; an exact certificate wins over the wildcard', async t => {
  const { manager, issuer, store, ca } = await setup(t, { wildcards: ['*.example.test'] })
  const exact = await ca.issue('exact.example.test')
  await store.put({ name: 'exact.example.test', ...exact, issuer: 'manual' })
  manager.setHostnames(['a.example.test', 'exact.example.test'])
  await manager.settled()
  t.same(issuer.asked, ['*.example.test'], 'only the wildcard was issued')
  const states = Object.fromEntries(manager.certificateStates().map(s => [s.hostname, s]))
  t.equal(states['a.example.test'].certificateName, '*.example.test')
  t.equal(states['a.example.test'].status, 'active')
  t.equal(states['exact.example.test'].certificateName, 'exact.example.test')
  t.equal(states['exact.example.test'].issuer, 'manual')
  const wildCtx = await manager.secureContext('a.example.test')
  t.equal(wildCtx, await manager.secureContext('*.example.test'.replace('*', 'a')))
  t.not(await manager.secureContext('exact.example.test'), wildCtx)
  t.equal(await manager.secureContext('a.b.example.test'), undefined, 'wildcards cover one label')
})

t.test('failures are reported and retried with backoff', async t => {
  const { manager, issuer, clock } = await setup(t)
  issuer.failWith = new Error('rate limited')
  manager.setHostnames(['a.example.test'])
  await manager.settled()
  let state = manager.certificateStates()[0]
  t.equal(state.status, 'failing')
  t.equal(state.lastError, 'rate limited')
  t.equal(state.nextAttemptAt, new Date(clock.now + 60_000).toISOString())
  await manager.maintain()
  t.equal(issuer.asked.length, 1, 'no retry before the backoff elapsed')
  clock.now += 61_000
  await manager.maintain()
  t.equal(issuer.asked.length, 2, 'retried')
  t.equal(manager.certificateStates()[0].nextAttemptAt, new Date(clock.now + 120_000).toISOString(), 'second delay is longer')
  issuer.failWith = undefined
  clock.now += 121_000
  await manager.maintain()
  state = manager.certificateStates()[0]
  t.equal(state.status, 'active')
  t.equal(state.lastError, undefined)
})

t.test('an IssuerError with retry=false stops retries', async t => {
  const { manager, issuer, clock } = await setup(t)
  issuer.failWith = new IssuerError('REJECTED', 'name not allowed', false)
  manager.setHostnames(['a.example.test'])
  await manager.settled()
  clock.now += 30 * DAY
  await manager.maintain()
  t.equal(issuer.asked.length, 1)
  t.equal(manager.certificateStates()[0].status, 'failing')
})

t.test('two managers on one store issue a name once', async t => {
  const storeDir = tempDir(t)
  const one = await setup(t, { storeDir })
  const two = await setup(t, { storeDir })
  one.issuer.slowMs = 200
  two.issuer.slowMs = 200
  one.manager.setHostnames(['a.example.test'])
  two.manager.setHostnames(['a.example.test'])
  await Promise.all([one.manager.settled(), two.manager.settled()])
  t.equal(one.issuer.asked.length + two.issuer.asked.length, 1, 'one issuance between them')
  t.equal(one.manager.certificateStates()[0].status, 'active')
  t.equal(two.manager.certificateStates()[0].status, 'active')
})

t.test('a handshake for a name being issued waits for it', async t => {
  const { manager, issuer } = await setup(t)
  issuer.slowMs = 150
  manager.setHostnames(['a.example.test'])
  t.ok(await manager.secureContext('a.example.test'), 'context once issued')
})

t.test('removed hostnames stop being served at once', async t => {
  const { manager } = await setup(t)
  manager.setHostnames(['a.example.test'])
  await manager.settled()
  t.ok(await manager.secureContext('a.example.test'))
  manager.setHostnames([])
  t.equal(await manager.secureContext('a.example.test'), undefined)
  t.same(manager.certificateStates(), [])
})

t.test('a managed wildcard does not make unrouted names under it servable', async t => {
  const { manager } = await setup(t, { wildcards: ['*.example.test'] })
  manager.setHostnames(['a.example.test'])
  await manager.settled()
  t.ok(await manager.secureContext('a.example.test'))
  t.equal(await manager.secureContext('other.example.test'), undefined)
})
