/**
 * Receiver index table (WireGuard paper 5.4.1): every in-flight handshake and every keypair of ours
 * is known to the other side by a random 32-bit index that we chose. Incoming responses, cookie
 * replies and transport messages name it, so the lookup is one Map.get.
 */
import { randomFillSync } from 'node:crypto'

/** Source of 32-bit random numbers; tests inject a seeded one. */
export type RandomUint32 = () => number

const pool = new Uint32Array(256)
let poolNext = pool.length

/** Cryptographically random 32-bit integers, drawn from a refilled pool. */
export const cryptoRandomUint32: RandomUint32 = () => {
  if (poolNext === pool.length) {
    randomFillSync(pool)
    poolNext = 0
  }
  return pool[poolNext++]
}

export class IndexTable<T> {
  private readonly entries = new Map<number, T>()
  private readonly random: RandomUint32

  constructor (random: RandomUint32 = cryptoRandomUint32) {
    this.random = random
  }

  /** Reserves a fresh random index for `value`. */
  allocate (value: T): number {
    for (;;) {
      const index = this.random() >>> 0
      if (!this.entries.has(index)) {
        this.entries.set(index, value)
        return index
      }
    }
  }

  /** Points an existing index at a new value (a handshake's index becomes its keypair's). */
  replace (index: number, value: T): void {
    this.entries.set(index, value)
  }

  get (index: number): T | undefined {
    return this.entries.get(index)
  }

  delete (index: number): void {
    this.entries.delete(index)
  }

  get size (): number { return this.entries.size }
}
