/**
 * Anti-replay sliding window of RFC 6479 as WireGuard uses it (paper 5.4.6; wireguard-go
 * replay/replay.go): a ring of 128 64-bit blocks of which one is always being recycled, so the
 * window spans (128 - 1) * 64 = 8128 counters behind the highest one seen. Each 64-bit block is kept
 * as two 32-bit words because JavaScript bitwise operators work on 32 bits. Counters below 2^53 take a
 * number-only path; larger ones (never reached in practice) take an equivalent bigint path.
 */
const BLOCK_BITS = 64
const RING_BLOCKS = 128
const BLOCK_MASK = RING_BLOCKS - 1
export const REPLAY_WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS // 8128

const SAFE = BigInt(Number.MAX_SAFE_INTEGER)

export class ReplayWindow {
  // ring[2 * block] holds bits 0..31 of that block, ring[2 * block + 1] bits 32..63.
  private readonly ring = new Uint32Array(RING_BLOCKS * 2)
  /** Highest accepted counter; `lastNumber` mirrors it while it is below 2^53. */
  private last = 0n
  private lastNumber = 0

  reset (): void {
    this.ring.fill(0)
    this.last = 0n
    this.lastNumber = 0
  }

  /**
   * True if `counter` is below `limit`, not older than the window and not seen before; marks it seen.
   * Call only after the packet authenticated, so forged counters cannot move the window (paper 5.4.6).
   */
  checkAndUpdate (counter: bigint, limit: bigint): boolean {
    if (counter >= limit || counter < 0n) return false
    if (counter <= SAFE && this.last <= SAFE) return this.checkNumber(Number(counter), counter)
    return this.checkBig(counter)
  }

  private checkNumber (counter: number, counterBig: bigint): boolean {
    const block = Math.floor(counter / BLOCK_BITS)
    const last = this.lastNumber
    if (counter > last) {
      const current = Math.floor(last / BLOCK_BITS)
      const diff = Math.min(block - current, RING_BLOCKS) // past a full turn, clearing everything is enough
      for (let i = 1; i <= diff; i++) this.clearBlock((current + i) & BLOCK_MASK)
      this.lastNumber = counter
      this.last = counterBig
    } else if (last - counter > REPLAY_WINDOW_SIZE) {
      return false
    }
    return this.setBit(block & BLOCK_MASK, counter % BLOCK_BITS)
  }

  private checkBig (counter: bigint): boolean {
    const block = counter / 64n
    if (counter > this.last) {
      const current = this.last / 64n
      let diff = block - current
      if (diff > BigInt(RING_BLOCKS)) diff = BigInt(RING_BLOCKS)
      for (let i = 1n; i <= diff; i++) this.clearBlock(Number((current + i) & BigInt(BLOCK_MASK)))
      this.last = counter
      this.lastNumber = Number(counter)
    } else if (this.last - counter > BigInt(REPLAY_WINDOW_SIZE)) {
      return false
    }
    return this.setBit(Number(block & BigInt(BLOCK_MASK)), Number(counter % 64n))
  }

  private clearBlock (block: number): void {
    this.ring[2 * block] = 0
    this.ring[2 * block + 1] = 0
  }

  /** Sets bit `bit` (0..63) of ring block `block`; false when it was already set (a replay). */
  private setBit (block: number, bit: number): boolean {
    const word = 2 * block + (bit >>> 5)
    const mask = 1 << (bit & 31)
    const old = this.ring[word]
    if ((old & mask) !== 0) return false
    this.ring[word] = old | mask
    return true
  }
}
