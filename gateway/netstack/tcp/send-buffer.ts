/**
 * The send buffer: bytes from SND.UNA (the first unacknowledged data byte) to the end of what the
 * application wrote, kept in fixed-size blocks so a segment's payload is found by arithmetic and
 * copied once, straight into the outgoing datagram. Writes are copied in: the application may
 * reuse its buffers as soon as its write callback runs. Emptied blocks go back to a small pool.
 */

const BLOCK_SIZE = 16 * 1024
const BLOCK_SHIFT = 14
const BLOCK_MASK = BLOCK_SIZE - 1
/** Free blocks kept for reuse across connections (4 MiB). */
const POOL_LIMIT = 256
const pool: Buffer[] = []

function takeBlock (): Buffer {
  return pool.pop() ?? Buffer.allocUnsafeSlow(BLOCK_SIZE)
}

function giveBlock (block: Buffer): void {
  if (pool.length < POOL_LIMIT) pool.push(block)
}

export class SendBuffer {
  /** Buffered bytes. */
  length = 0
  private blocks: Buffer[] = []
  /** Offset of the first buffered byte in blocks[0]. */
  private head = 0

  /** Copies src[start, end) to the end of the buffer. */
  append (src: Uint8Array, start = 0, end = src.length): void {
    let from = start
    while (from < end) {
      const tail = this.head + this.length
      const within = tail & BLOCK_MASK
      if (within === 0 && (tail >> BLOCK_SHIFT) >= this.blocks.length) this.blocks.push(takeBlock())
      const block = this.blocks[tail >> BLOCK_SHIFT]
      const n = Math.min(end - from, BLOCK_SIZE - within)
      block.set(src.subarray(from, from + n), within)
      from += n
      this.length += n
    }
  }

  /** Copies buffered bytes [offset, offset + len) into dest at destOffset. */
  copyOut (offset: number, len: number, dest: Uint8Array, destOffset: number): void {
    if (offset < 0 || len < 0 || offset + len > this.length) throw new RangeError('send buffer range out of bounds')
    let pos = this.head + offset
    let out = destOffset
    let left = len
    while (left > 0) {
      const block = this.blocks[pos >> BLOCK_SHIFT]
      const within = pos & BLOCK_MASK
      const n = Math.min(left, BLOCK_SIZE - within)
      dest.set(block.subarray(within, within + n), out)
      out += n
      pos += n
      left -= n
    }
  }

  /** Drops `n` acknowledged bytes from the front. */
  consume (n: number): void {
    if (n <= 0) return
    if (n > this.length) n = this.length
    this.length -= n
    this.head += n
    while (this.head >= BLOCK_SIZE || (this.length === 0 && this.blocks.length > 0)) {
      giveBlock(this.blocks.shift()!)
      this.head = this.head >= BLOCK_SIZE ? this.head - BLOCK_SIZE : 0
    }
    if (this.length === 0) this.head = 0
  }

  clear (): void {
    for (const block of this.blocks) giveBlock(block)
    this.blocks = []
    this.head = 0
    this.length = 0
  }
}
