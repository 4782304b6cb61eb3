/**
 * A bulk sender for the benches' own origins: `size` bytes of `chunk` repeated, written as fast as
 * the stream drains (waiting on 'drain' when write() says its buffer is full), then end().
 */
import type { Writable } from 'node:stream'

export function sendRepeated (to: Writable, chunk: Buffer, size: number): void {
  let left = size
  const more = (): void => {
    while (left > 0) {
      const n = Math.min(left, chunk.length)
      left -= n
      if (!to.write(n === chunk.length ? chunk : chunk.subarray(0, n))) { to.once('drain', more); return }
    }
    to.end()
  }
  more()
}
