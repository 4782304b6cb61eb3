/**
 * Deterministic test data: the ChaCha20 keystream for a seed, as a Readable stream or in chunks,
 * hashed (SHA-256) as it is produced. Fast (GB/s) and the same on every run and in every process,
 * so two namespaces can agree on bytes without shipping them.
 */
import { createCipheriv, createHash, type Hash } from 'node:crypto'
import { Readable } from 'node:stream'
import { closeSync, openSync, writeSync } from 'node:fs'

const CHUNK = 64 * 1024

export class Generator extends Readable {
  private left: number
  private readonly cipher
  private readonly zeros = Buffer.alloc(CHUNK)
  /** SHA-256 of every byte produced so far. */
  readonly hash: Hash = createHash('sha256')

  constructor (bytes: number, seed: number) {
    super({ highWaterMark: 256 * 1024 })
    this.left = bytes
    const key = Buffer.alloc(32)
    key.writeUInt32LE(seed >>> 0, 0)
    key.writeUInt32LE(Math.floor(seed / 0x1_0000_0000) >>> 0, 4)
    this.cipher = createCipheriv('chacha20', key, Buffer.alloc(16))
  }

  /** The next `n` bytes (at most 64 KiB), or null at the end. Do not mix with stream reads. */
  nextChunk (n = CHUNK): Buffer | null {
    if (this.left <= 0) return null
    const len = Math.min(n, this.left, CHUNK)
    this.left -= len
    const out = this.cipher.update(this.zeros.subarray(0, len))
    this.hash.update(out)
    return out
  }

  /**
   * Writes every chunk to `socket` as fast as it drains, then ends it (call once it is connected).
   * For sockets that are not streams (our TCP's); do not mix with stream reads.
   */
  writeTo (socket: { write (chunk: Buffer): boolean, end (): unknown, once (event: 'drain', listener: () => void): unknown }): void {
    const pump = (): void => {
      for (;;) {
        const chunk = this.nextChunk()
        if (chunk === null) { socket.end(); return }
        if (!socket.write(chunk)) { socket.once('drain', pump); return }
      }
    }
    pump()
  }

  override _read (): void {
    for (;;) {
      const chunk = this.nextChunk()
      if (chunk === null) { this.push(null); return }
      if (!this.push(chunk)) return
    }
  }
}

/** SHA-256 (hex) of the `bytes` bytes that Generator(bytes, seed) produces. */
export function generatedSha256 (bytes: number, seed: number): string {
  const g = new Generator(bytes, seed)
  while (g.nextChunk() !== null) { /* hashing as it goes */ }
  return g.hash.digest('hex')
}

/** Writes Generator(bytes, seed) to `path` (64 KiB at a time) and returns its SHA-256 (hex). */
export function writeGeneratedFile (path: string, bytes: number, seed: number): string {
  const g = new Generator(bytes, seed)
  const fd = openSync(path, 'w')
  try {
    for (let chunk = g.nextChunk(); chunk !== null; chunk = g.nextChunk()) writeSync(fd, chunk)
  } finally {
    closeSync(fd)
  }
  return g.hash.digest('hex')
}
