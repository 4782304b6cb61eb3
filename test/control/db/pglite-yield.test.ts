/**
 * The embedded database shares its thread with the gateway in `cloud-connect start`: between two
 * queries the event loop polls for I/O, so a run of queries (one transaction of many statements)
 * does not hold back a datagram that arrived meanwhile.
 */
import t from 'tap'
import dgram from 'node:dgram'
import { once } from 'node:events'
import { createDb } from '../../../control/db/knex.ts'

t.test('PGlite: a datagram that arrives during a run of queries is read before the run ends', async t => {
  const db = createDb({})
  t.teardown(async () => { await db.destroy() })
  await db.raw('create table t (n integer)')
  const receiver = dgram.createSocket('udp4')
  const sender = dgram.createSocket('udp4')
  t.teardown(() => { receiver.close(); sender.close() })
  receiver.bind(0, '127.0.0.1')
  await once(receiver, 'listening')
  let readAtQuery = -1
  let query = 0
  receiver.on('message', () => { readAtQuery = query })

  const QUERIES = 200
  await db.transaction(async trx => {
    for (; query < QUERIES; query++) {
      if (query === 10) {
        // Sent from this thread, so it is in the receiver's buffer at once; only a poll reads it.
        sender.send('x', receiver.address().port, '127.0.0.1')
      }
      await trx.raw('insert into t values (?)', [query])
    }
  })
  t.equal(Number((await db('t').count('* as c'))[0].c), QUERIES, 'every insert landed')
  t.ok(readAtQuery >= 10 && readAtQuery < QUERIES, `read during the run (at query ${readAtQuery} of ${QUERIES}), not after it`)
})
