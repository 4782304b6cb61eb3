import t from 'tap'
import { SackScoreboard } from '../../../../gateway/netstack/tcp/sack.ts'

const MSS = 1000

t.test('update merges, ignores stale and invalid blocks, advance trims', async t => {
  const sb = new SackScoreboard()
  t.equal(sb.update([2000, 3000, 5000, 6000], 1000, 10000), 2000)
  t.equal(sb.update([3000, 4000], 1000, 10000), 1000, 'adjacent range merges')
  t.same(sb.starts, [2000, 5000])
  t.same(sb.ends, [4000, 6000])
  t.equal(sb.update([500, 900], 1000, 10000), 0, 'below SND.UNA: stale')
  t.equal(sb.update([9000, 11000], 1000, 10000), 0, 'beyond SND.MAX: invalid')
  t.equal(sb.sacked, 3000)
  sb.advance(2500)
  t.same(sb.starts, [2500, 5000])
  t.equal(sb.sacked, 2500)
  sb.advance(7000)
  t.ok(sb.empty)
  t.equal(sb.sacked, 0)
})

t.test('RFC 6675 IsLost, SetPipe and NextSeg over three holes', async t => {
  // Sent 0..10000 in 1000-byte segments; segments 1, 4 and 6 lost; everything else SACKed.
  const sb = new SackScoreboard()
  sb.update([2000, 4000, 5000, 6000, 7000, 10000], 1000, 10000)
  t.ok(sb.isLost(1000, MSS), 'three ranges above')
  t.ok(sb.isLost(4000, MSS), 'four segments SACKed above')
  t.ok(sb.isLost(6000, MSS), 'one range above, but 3000 bytes > (DupThresh - 1) * SMSS')
  t.notOk(sb.isLost(9500, MSS), 'only 500 bytes above')
  // Holes: [0? no: SND.UNA=1000] [1000,2000) lost, [4000,5000) lost, [6000,7000): 3000 bytes above > 2*MSS -> lost.
  t.equal(sb.pipe(1000, 10000, 1000, MSS), 0, 'all holes lost and none retransmitted: nothing in the pipe')
  const end = [0]
  t.equal(sb.nextHole(1000, 1000, MSS, true, end), 1000)
  t.equal(end[0], 2000)
  t.equal(sb.nextHole(1000, 2000, MSS, true, end), 4000, 'the next hole after HighRxt')
  t.equal(sb.nextHole(1000, 5000, MSS, true, end), 6000)
  t.equal(sb.nextHole(1000, 7000, MSS, true, end), -1, 'every hole retransmitted')
  t.equal(sb.pipe(1000, 10000, 7000, MSS), 3000, 'retransmitted hole octets count once')
})

t.test('a hole not yet lost counts in the pipe; rule 3 still finds it', async t => {
  const sb = new SackScoreboard()
  sb.update([2000, 3000], 1000, 5000)
  t.notOk(sb.isLost(1000, MSS))
  // Hole [1000,2000) counts (not lost), [3000,5000) tail counts.
  t.equal(sb.pipe(1000, 5000, 1000, MSS), 3000)
  const end = [0]
  t.equal(sb.nextHole(1000, 1000, MSS, true, end), -1)
  t.equal(sb.nextHole(1000, 1000, MSS, false, end), 1000)
})

t.test('holes below lostBelow (a SACKed tail loss probe) are lost whatever IsLost says', async t => {
  const sb = new SackScoreboard()
  // Holes [1000,2000) and [3000,9000); only the probe [9000,10000) and [2000,3000) are SACKed.
  sb.update([2000, 3000, 9000, 10000], 1000, 10000)
  t.notOk(sb.isLost(3000, MSS), 'one range above: not lost to RFC 6675')
  t.equal(sb.pipe(1000, 10000, 1000, MSS), 7000, 'without the mark both holes fill the pipe')
  t.equal(sb.pipe(1000, 10000, 1000, MSS, 10000), 0, 'with it neither does')
  t.equal(sb.pipe(1000, 10000, 1000, MSS, 2000), 6000, 'only holes starting below the mark')
  const end = [0]
  t.equal(sb.nextHole(1000, 2000, MSS, true, end), -1, 'rule 1 finds nothing without the mark')
  t.equal(sb.nextHole(1000, 2000, MSS, true, end, 10000), 3000, 'with it, the run below the probe')
  t.equal(end[0], 9000)
})
