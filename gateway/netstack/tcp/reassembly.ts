/**
 * Out-of-order receive queue (RFC 9293 3.10.7.4: segments beyond RCV.NXT but inside the window are
 * kept, not dropped). Data is held as views of the received datagrams in contiguous blocks sorted
 * by sequence number; the blocks are also what this side reports in SACK options (RFC 2018 4:
 * the block holding the most recent segment first, then the most recently changed others).
 * Bounded by a segment count (bytes are bounded by the advertised window).
 */
import { seqLt, seqLe, seqGt, seqDiff, seqAdd } from './seq.ts'

interface Block {
  start: number
  end: number
  chunks: Buffer[]
  /** Larger is more recent. */
  touched: number
}

export class Reassembly {
  /** Bytes held. */
  bytes = 0
  /** Chunks held. */
  segments = 0
  private blocks: Block[] = []
  private clock = 0
  private readonly maxSegments: number

  constructor (maxSegments: number) {
    this.maxSegments = maxSegments
  }

  get empty (): boolean {
    return this.blocks.length === 0
  }

  get blockCount (): number {
    return this.blocks.length
  }

  /**
   * Stores `data` at `seq` (which the caller has trimmed to start after RCV.NXT and to end inside
   * the window). Returns the number of new bytes stored, or -1 when the segment limit refused it.
   */
  insert (seq: number, data: Buffer): number {
    const len = data.length
    if (len === 0) return 0
    const s = seq
    const e = seqAdd(seq, len)
    const blocks = this.blocks
    // First block that ends at or after s (touching or overlapping).
    let i = 0
    while (i < blocks.length && seqLt(blocks[i].end, s)) i++
    let j = i
    while (j < blocks.length && seqLe(blocks[j].start, e)) j++
    if (i === j) {
      if (this.segments >= this.maxSegments) return -1
      blocks.splice(i, 0, { start: s, end: e, chunks: [data], touched: ++this.clock })
      this.bytes += len
      this.segments++
      return len
    }
    const first = blocks[i]
    const last = blocks[j - 1]
    if (j - i === 1 && seqLe(first.start, s) && seqLe(e, first.end)) {
      // Entirely a duplicate.
      first.touched = ++this.clock
      return 0
    }
    // Merge blocks i..j-1 with the new data; the new data fills every gap between them.
    const start = seqLt(s, first.start) ? s : first.start
    const end = seqGt(e, last.end) ? e : last.end
    const chunks: Buffer[] = []
    let added = 0
    let addedChunks = 0
    let pos = start
    for (let k = i; k < j; k++) {
      const b = blocks[k]
      if (seqLt(pos, b.start)) {
        chunks.push(data.subarray(seqDiff(pos, s), seqDiff(b.start, s)))
        added += seqDiff(b.start, pos)
        addedChunks++
      }
      for (const c of b.chunks) chunks.push(c)
      pos = b.end
    }
    if (seqLt(pos, end)) {
      chunks.push(data.subarray(seqDiff(pos, s)))
      added += seqDiff(end, pos)
      addedChunks++
    }
    if (addedChunks > 0 && this.segments + addedChunks > this.maxSegments) return -1
    blocks.splice(i, j - i, { start, end, chunks, touched: ++this.clock })
    this.bytes += added
    this.segments += addedChunks
    return added
  }

  /**
   * Removes and returns the data that has become in-order at `rcvNxt` (the first block when it
   * starts at or before rcvNxt), trimmed to start at rcvNxt; null when there is none.
   */
  takeInOrder (rcvNxt: number): Buffer[] | null {
    const blocks = this.blocks
    while (blocks.length > 0 && seqLe(blocks[0].start, rcvNxt)) {
      const b = blocks.shift()!
      this.bytes -= seqDiff(b.end, b.start)
      this.segments -= b.chunks.length
      if (seqLe(b.end, rcvNxt)) continue
      let skip = seqDiff(rcvNxt, b.start)
      const out: Buffer[] = []
      for (const c of b.chunks) {
        if (skip >= c.length) {
          skip -= c.length
          continue
        }
        out.push(skip > 0 ? c.subarray(skip) : c)
        skip = 0
      }
      return out
    }
    return null
  }

  /**
   * Writes up to `max` SACK blocks (flat left/right pairs) into `out`, most recently changed first
   * (RFC 2018 4). Returns the number of blocks.
   */
  sackBlocks (out: number[], max: number): number {
    out.length = 0
    const blocks = this.blocks
    if (blocks.length === 0) return 0
    let count = 0
    let lastTouched = Infinity
    while (count < max) {
      let best: Block | null = null
      for (const b of blocks) {
        if (b.touched < lastTouched && (best === null || b.touched > best.touched)) best = b
      }
      if (best === null) break
      out.push(best.start, best.end)
      lastTouched = best.touched
      count++
    }
    return count
  }

  clear (): void {
    this.blocks = []
    this.bytes = 0
    this.segments = 0
  }
}
