import t from 'tap'
import { looksLikeId, newId, randomBase62 } from '../../control/ids.ts'

t.test('prefixed random ids', async t => {
  const ids = new Set(Array.from({ length: 2000 }, () => newId('usr')))
  t.equal(ids.size, 2000, 'no collisions')
  for (const id of [...ids].slice(0, 50)) {
    t.match(id, /^usr_[0-9A-Za-z]{22}$/)
    t.ok(looksLikeId('usr', id))
  }
  t.notOk(looksLikeId('inst', newId('usr')), 'prefix checked')
  t.notOk(looksLikeId('usr', 'usr_' + 'x'.repeat(21)), 'length checked')
  t.notOk(looksLikeId('usr', 'usr_' + '-'.repeat(22)), 'alphabet checked')
})

t.test('base62 is roughly uniform', async t => {
  const counts = new Map<string, number>()
  for (const c of randomBase62(62 * 400)) counts.set(c, (counts.get(c) ?? 0) + 1)
  t.equal(counts.size, 62, 'every character appears')
  for (const [c, n] of counts) t.ok(n > 250 && n < 560, `${c}: ${n} near 400`)
})
