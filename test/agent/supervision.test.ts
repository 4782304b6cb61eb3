/**
 * The connected state's Supervisor (agent/supervision.ts) fed probe rounds and the time: answers
 * keep it quiet, a gateway silent past dead-after gets its own handshake, all silent past it starts
 * a recovery repeated with growing waits, kernel mode checks for blocked UDP once.
 */
import t from 'tap'
import { Supervisor, type SupervisorAction } from '../../agent/supervision.ts'

const DEAD_AFTER = 1_000
const A = 'key-a'
const B = 'key-b'

function supervisor (udpCheckAfterMs: number | null = null): { s: Supervisor, answeredAt: Map<string, number> } {
  const answeredAt = new Map<string, number>()
  const s = new Supervisor({ deadAfterMs: DEAD_AFTER, backoff: { initialMs: 1_000, maxMs: 8_000 }, udpCheckAfterMs, answeredAt, now: 0 })
  return { s, answeredAt }
}

/** One round at `now` (started 10 ms before): `rtts` per key, null for no answer. */
function round (s: Supervisor, now: number, rtts: Record<string, number | null>, heardAt: number | null = null): SupervisorAction[] {
  return s.observe({ started: now - 10, now, probes: Object.entries(rtts).map(([publicKey, rttMs]) => ({ publicKey, rttMs })), heardAt })
}

t.test('answers: the fastest round trip, the time recorded per gateway, nothing else', async t => {
  const { s, answeredAt } = supervisor()
  t.same(round(s, 100, { [A]: 3, [B]: 2 }), [{ kind: 'answered', rttMs: 2 }])
  t.same([...answeredAt], [[A, 100], [B, 100]])
  t.same(round(s, 600, { [A]: 4, [B]: null }), [{ kind: 'answered', rttMs: 4 }], 'one silent for less than dead-after: no nudge')
})

t.test('every gateway silent past dead-after: recover, then not again before the recovery wait, which grows to its cap', async t => {
  const { s } = supervisor()
  round(s, 0, { [A]: 1 })
  t.same(round(s, DEAD_AFTER, { [A]: null }), [], 'silent for exactly dead-after: not yet')
  t.same(round(s, DEAD_AFTER + 1, { [A]: null }), [{ kind: 'recover', silentForMs: DEAD_AFTER + 1 }])
  const waits: number[] = []
  let now = DEAD_AFTER + 1
  for (let i = 0; i < 6; i++) {
    const wait = s.recovered(now, 0.999999)
    waits.push(wait)
    t.same(round(s, now + wait - 1, { [A]: null }), [], 'not before the wait is over')
    now += wait
    t.match(round(s, now, { [A]: null }), [{ kind: 'recover' }])
  }
  t.same(waits, [1_000, 2_000, 4_000, 8_000, 8_000, 8_000])
  t.equal(supervisor().s.recovered(0, 0), DEAD_AFTER, 'at least dead-after, though half the first ceiling is less')
})

t.test('an answer ends the recovery series: the next silence starts from the first wait', async t => {
  const { s } = supervisor()
  round(s, 0, { [A]: 1 })
  round(s, 2_000, { [A]: null })
  s.recovered(2_000, 0.999999)
  s.recovered(3_000, 0.999999)
  t.same(round(s, 10_000, { [A]: 1 }), [{ kind: 'answered', rttMs: 1 }])
  t.match(round(s, 11_001, { [A]: null }), [{ kind: 'recover', silentForMs: 1_001 }], 'no wait left over from before')
  t.equal(s.recovered(11_001, 0.999999), 1_000)
})

t.test('packets heard from the tunnel count as life while probes go unanswered', async t => {
  const { s } = supervisor()
  round(s, 0, { [A]: 1 })
  t.same(round(s, 1_500, { [A]: null }, 1_200), [], 'heard 300 ms ago')
  t.match(round(s, 2_201, { [A]: null }, 1_200), [{ kind: 'recover', silentForMs: 1_001 }])
})

t.test('one gateway silent past dead-after while another answers: a handshake for it, once per dead-after', async t => {
  const { s } = supervisor()
  round(s, 0, { [A]: 1, [B]: 1 })
  t.same(round(s, 500, { [A]: null, [B]: 1 }), [{ kind: 'answered', rttMs: 1 }])
  t.same(round(s, 1_001, { [A]: null, [B]: 1 }), [{ kind: 'answered', rttMs: 1 }, { kind: 'nudge', publicKey: A, silentForMs: 1_001 }], 'silent since its last answer')
  t.same(round(s, 1_500, { [A]: null, [B]: 1 }), [{ kind: 'answered', rttMs: 1 }], 'not again within dead-after')
  t.same(round(s, 2_001, { [A]: null, [B]: 1 }), [{ kind: 'answered', rttMs: 1 }, { kind: 'nudge', publicKey: A, silentForMs: 2_001 }])
  t.same(round(s, 2_100, { [A]: 1, [B]: 1 }), [{ kind: 'answered', rttMs: 1 }], 'it answers again')
  t.same(round(s, 3_000, { [B]: 1 }), [{ kind: 'answered', rttMs: 1 }], 'a gateway no longer placed is forgotten')
})

t.test('kernel mode, no answer ever: one UDP check after its delay; none once a gateway answered, none in userspace', async t => {
  const { s } = supervisor(3_000)
  t.same(round(s, 2_999, { [A]: null }).filter(a => a.kind === 'check-udp'), [])
  t.same(round(s, 3_000, { [A]: null })[0], { kind: 'check-udp' })
  t.same(round(s, 4_000, { [A]: null }).filter(a => a.kind === 'check-udp'), [], 'once')
  const answered = supervisor(3_000).s
  round(answered, 100, { [A]: 1 })
  t.same(round(answered, 5_000, { [A]: null }).filter(a => a.kind === 'check-udp'), [])
  const userspace = supervisor(null).s
  t.same(round(userspace, 60_000, { [A]: null }).filter(a => a.kind === 'check-udp'), [])
})
