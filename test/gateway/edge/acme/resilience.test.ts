/**
 * Renewal at a third of the lifetime (injected clock), the CA down (existing certificates keep
 * serving, failures back off, issuance resumes), the orders budget, and pebble's chaos.
 */
import t from 'tap'
import { startAcmeLab, handshake } from './lab.ts'
import type { CertificateState } from '../../../../gateway/edge/index.ts'

const HOUR = 3_600_000

function stateOf (states: CertificateState[], hostname: string): CertificateState {
  const s = states.find(x => x.hostname === hostname)
  if (s === undefined) throw new Error(`no state for ${hostname}`)
  return s
}

t.test('renewal: once a third of the lifetime remains, a new order replaces the certificate and it is served', async t => {
  let offset = 0
  const lab = await startAcmeLab(t, { hostnames: ['renew.example.test'], edge: { now: () => Date.now() + offset } })
  const root = await lab.pebble.root()
  const first = await handshake(lab.te.port, 'renew.example.test', root)
  t.ok(first.authorized, first.error ?? '')
  const state = stateOf(lab.te.edge.certificateStates(), 'renew.example.test')
  const notBefore = Date.parse(state.notBefore!)
  const notAfter = Date.parse(state.notAfter!)
  const renewAt = notAfter - (notAfter - notBefore) / 3

  offset = renewAt - Date.now() - HOUR // an hour before: nothing to do
  await lab.te.edge.certificates.maintain()
  t.equal(lab.issuer.ordersPlaced, 1, 'not renewed before a third remains')

  offset = renewAt - Date.now() + HOUR
  await lab.te.edge.certificates.maintain()
  t.equal(lab.issuer.ordersPlaced, 2, 'renewed')
  const second = await handshake(lab.te.port, 'renew.example.test', root)
  t.ok(second.authorized, second.error ?? '')
  t.not(second.peerCertificate?.serialNumber, first.peerCertificate?.serialNumber, 'the new certificate is served')
  t.equal(stateOf(lab.te.edge.certificateStates(), 'renew.example.test').status, 'active')
})

t.test('CA unreachable: existing certificates keep serving, new names fail with backoff, issuance resumes after', async t => {
  let offset = 0
  const lab = await startAcmeLab(t, { hostnames: ['up.example.test'], edge: { now: () => Date.now() + offset } })
  const oldRoot = await lab.pebble.root()
  await lab.pebble.stop()

  lab.te.edge.updateRoutes([lab.route('inst-1', ['up.example.test', 'later.example.test'])])
  await lab.te.edge.certificatesSettled()
  const served = await handshake(lab.te.port, 'up.example.test', oldRoot)
  t.ok(served.authorized, 'the existing certificate is still served while the CA is down')
  const failing = stateOf(lab.te.edge.certificateStates(), 'later.example.test')
  t.equal(failing.status, 'failing')
  t.match(failing.lastError, /unreachable.*ECONNREFUSED/, `last error reported: ${failing.lastError}`)
  const firstAttempt = Date.parse(failing.lastAttemptAt!)
  const firstRetry = Date.parse(failing.nextAttemptAt!)
  t.ok(firstRetry > firstAttempt, 'a next attempt is scheduled')

  await lab.te.edge.certificates.maintain()
  t.equal(stateOf(lab.te.edge.certificateStates(), 'later.example.test').lastAttemptAt, failing.lastAttemptAt, 'no retry before the backoff is over')

  offset += firstRetry - firstAttempt + 1000
  await lab.te.edge.certificates.maintain()
  const again = stateOf(lab.te.edge.certificateStates(), 'later.example.test')
  t.equal(again.status, 'failing')
  t.ok(Date.parse(again.nextAttemptAt!) - Date.parse(again.lastAttemptAt!) > firstRetry - firstAttempt, 'the second wait is longer (exponential backoff)')

  await lab.pebble.start() // a fresh pebble: new root, our account unknown to it
  offset += 7 * HOUR // past the backoff cap
  await lab.te.edge.certificates.maintain()
  const recovered = stateOf(lab.te.edge.certificateStates(), 'later.example.test')
  t.equal(recovered.status, 'active', JSON.stringify(recovered))
  const newRoot = await lab.pebble.root()
  const hs = await handshake(lab.te.port, 'later.example.test', newRoot)
  t.ok(hs.authorized, hs.error ?? '')
})

t.test('orders budget: past it, a name waits for a free slot instead of ordering', async t => {
  let offset = 0
  const now = (): number => Date.now() + offset
  const lab = await startAcmeLab(t, {
    hostnames: ['one.example.test', 'two.example.test'],
    edge: { now },
    issuer: { budget: { limit: 1, windowMs: 2 * HOUR, now } },
  })
  t.equal(lab.issuer.ordersPlaced, 1, 'only one order within the budget')
  const states = lab.te.edge.certificateStates()
  const waiting = states.find(s => s.status !== 'active')!
  t.match(waiting.lastError, /budget/)
  const wait = Date.parse(waiting.nextAttemptAt!) - Date.parse(waiting.lastAttemptAt!)
  t.ok(wait > HOUR && wait <= 2 * HOUR, `waits for the window (${wait} ms)`)
  offset += 2 * HOUR + 1000
  await lab.te.edge.certificates.maintain()
  t.equal(lab.issuer.ordersPlaced, 2)
  t.same(lab.te.edge.certificateStates().map(s => s.status), ['active', 'active'])
})

t.test('pebble chaos (rejected nonces, slow validation, authz reuse) survived: every name ends active, failures get a next attempt', async t => {
  let offset = 0
  const names = ['c1.example.test', 'c2.example.test', 'c3.example.test']
  const lab = await startAcmeLab(t, {
    hostnames: names,
    edge: { now: () => Date.now() + offset },
    // Defaults otherwise (VA sleep 0-15 s, authz reuse 50 %); nonce rejection raised from 5 % so
    // that some attempts fail beyond acme-client's badNonce retries.
    pebble: { chaos: true, env: { PEBBLE_WFE_NONCEREJECT: '40' } },
  })
  let rounds = 0
  let sawFailure = false
  while (rounds < 8 && lab.te.edge.certificateStates().some(s => s.status !== 'active')) {
    for (const s of lab.te.edge.certificateStates()) {
      if (s.status === 'failing') {
        sawFailure = true
        t.ok(s.nextAttemptAt !== undefined, `${s.hostname} has a next attempt after: ${s.lastError}`)
      }
    }
    offset += 7 * HOUR
    await lab.te.edge.certificates.maintain()
    rounds++
  }
  t.same(lab.te.edge.certificateStates().map(s => s.status), ['active', 'active', 'active'], `after ${rounds} retry rounds (failures seen: ${sawFailure})`)
  const root = await lab.pebble.root()
  for (const name of names) t.ok((await handshake(lab.te.port, name, root)).authorized, name)
})
