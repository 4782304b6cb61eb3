/**
 * The sender's SACK scoreboard (RFC 6675 2-4): which bytes above SND.UNA the receiver reported
 * holding. Kept as sorted, disjoint [start, end) ranges. Holes between them are what loss recovery
 * retransmits; a hole is "lost" (RFC 6675 4 IsLost) once more than (DupThresh - 1) * SMSS bytes,
 * or DupThresh separate ranges, are SACKed above it.
 */
import { seqLt, seqLe, seqGt, seqGe, seqDiff, seqMax, seqMin } from './seq.ts'
import { DUP_THRESH, MAX_SCOREBOARD_RANGES } from './constants.ts'

export class SackScoreboard {
  starts: number[] = []
  ends: number[] = []
  /** Total SACKed bytes. */
  sacked = 0

  get empty (): boolean {
    return this.starts.length === 0
  }

  /** End of the highest SACKed range (only meaningful when not empty). */
  get highest (): number {
    return this.ends[this.ends.length - 1]
  }

  /**
   * Merges received SACK blocks. Blocks not inside (sndUna, sndMax] are ignored (RFC 2018 and
   * RFC 6675 5: stale blocks and D-SACKs below the cumulative ACK carry no new information).
   * Returns the number of newly SACKed bytes.
   */
  update (blocks: number[], sndUna: number, sndMax: number): number {
    let added = 0
    for (let b = 0; b + 1 < blocks.length; b += 2) {
      let left = blocks[b]
      const right = seqMin(blocks[b + 1], sndMax)
      if (seqLe(right, sndUna) || seqGe(left, right) || seqGt(blocks[b + 1], sndMax)) continue
      if (seqLt(left, sndUna)) left = sndUna
      added += this.add(left, right)
    }
    return added
  }

  private add (left: number, right: number): number {
    const starts = this.starts
    const ends = this.ends
    let i = 0
    while (i < starts.length && seqLt(ends[i], left)) i++
    let j = i
    while (j < starts.length && seqLe(starts[j], right)) j++
    if (i === j) {
      starts.splice(i, 0, left)
      ends.splice(i, 0, right)
      const len = seqDiff(right, left)
      this.sacked += len
      if (starts.length > MAX_SCOREBOARD_RANGES) {
        // Forget the highest range: less SACK information only makes recovery more conservative.
        this.sacked -= seqDiff(ends.pop()!, starts.pop()!)
        if (i >= starts.length) return 0
      }
      return len
    }
    const newStart = seqMin(left, starts[i])
    const newEnd = seqMax(right, ends[j - 1])
    let before = 0
    for (let k = i; k < j; k++) before += seqDiff(ends[k], starts[k])
    starts.splice(i, j - i, newStart)
    ends.splice(i, j - i, newEnd)
    const after = seqDiff(newEnd, newStart)
    this.sacked += after - before
    return after - before
  }

  /** Forgets everything at or below the new cumulative ACK. */
  advance (sndUna: number): void {
    const starts = this.starts
    const ends = this.ends
    let drop = 0
    while (drop < starts.length && seqLe(ends[drop], sndUna)) {
      this.sacked -= seqDiff(ends[drop], starts[drop])
      drop++
    }
    if (drop > 0) {
      starts.splice(0, drop)
      ends.splice(0, drop)
    }
    if (starts.length > 0 && seqLt(starts[0], sndUna)) {
      this.sacked -= seqDiff(sndUna, starts[0])
      starts[0] = sndUna
    }
  }

  clear (): void {
    this.starts = []
    this.ends = []
    this.sacked = 0
  }

  /** End of the SACKed range containing `seq`, or -1. */
  sackedRangeEnd (seq: number): number {
    const starts = this.starts
    for (let i = 0; i < starts.length; i++) {
      if (seqGt(starts[i], seq)) return -1
      if (seqLt(seq, this.ends[i])) return this.ends[i]
    }
    return -1
  }

  /** SACKed bytes in [from, to). */
  sackedBetween (from: number, to: number): number {
    let total = 0
    for (let i = 0; i < this.starts.length; i++) {
      const s = seqMax(this.starts[i], from)
      const e = seqMin(this.ends[i], to)
      if (seqLt(s, e)) total += seqDiff(e, s)
    }
    return total
  }

  /** RFC 6675 4 IsLost(seq): enough SACKed above `seq` to presume it lost. */
  isLost (seq: number, smss: number): boolean {
    let bytes = 0
    let ranges = 0
    for (let i = this.starts.length - 1; i >= 0 && seqGt(this.ends[i], seq); i--) {
      bytes += seqDiff(this.ends[i], seqMax(this.starts[i], seq))
      ranges++
    }
    return ranges >= DUP_THRESH || bytes > (DUP_THRESH - 1) * smss
  }

  /**
   * RFC 6675 4 SetPipe: octets presumed in the network between sndUna and sndMax. Holes that are
   * not lost count once, retransmitted octets (below highRxt) count once more; SACKed octets never.
   * Holes starting below `lostBelow` (-1: none) are lost whatever IsLost says.
   */
  pipe (sndUna: number, sndMax: number, highRxt: number, smss: number, lostBelow = -1): number {
    const starts = this.starts
    const ends = this.ends
    const threshold = (DUP_THRESH - 1) * smss
    let above = this.sacked
    let cursor = sndUna
    let pipe = 0
    for (let k = 0; k < starts.length; k++) {
      if (seqLt(cursor, starts[k])) {
        const lost = starts.length - k >= DUP_THRESH || above > threshold || (lostBelow !== -1 && seqLt(cursor, lostBelow))
        if (!lost) pipe += seqDiff(starts[k], cursor)
        if (seqLt(cursor, highRxt)) pipe += seqDiff(seqMin(starts[k], highRxt), cursor)
      }
      above -= seqDiff(ends[k], starts[k])
      cursor = ends[k]
    }
    if (seqLt(cursor, sndMax)) {
      pipe += seqDiff(sndMax, cursor)
      if (seqLt(cursor, highRxt)) pipe += seqDiff(seqMin(sndMax, highRxt), cursor)
    }
    return pipe
  }

  /**
   * RFC 6675 4 NextSeg rule (1) (`lostOnly`) or rule (3): the first hole octet at or above highRxt
   * and below the highest SACKed octet. Returns its sequence number and writes the hole's end to
   * `holeEnd[0]`, or returns -1. Holes starting below `lostBelow` (-1: none) count as lost.
   */
  nextHole (sndUna: number, highRxt: number, smss: number, lostOnly: boolean, holeEnd: number[], lostBelow = -1): number {
    const starts = this.starts
    const ends = this.ends
    const threshold = (DUP_THRESH - 1) * smss
    let above = this.sacked
    let cursor = sndUna
    for (let k = 0; k < starts.length; k++) {
      if (seqLt(cursor, starts[k])) {
        const from = seqMax(cursor, highRxt)
        if (seqLt(from, starts[k])) {
          const lost = starts.length - k >= DUP_THRESH || above > threshold || (lostBelow !== -1 && seqLt(cursor, lostBelow))
          if (lost || !lostOnly) {
            holeEnd[0] = starts[k]
            return from
          }
        }
      }
      above -= seqDiff(ends[k], starts[k])
      cursor = ends[k]
    }
    return -1
  }
}
