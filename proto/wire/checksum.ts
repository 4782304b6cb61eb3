/** RFC 1071 Internet checksum, with helpers for incremental sums (pseudo-headers). */

/** Adds the 16-bit big-endian words of buf[start, end) to `sum` (not folded). */
export function sumWords (buf: Uint8Array, start: number, end: number, sum = 0): number {
  let i = start
  const even = end - ((end - start) & 1)
  for (; i < even; i += 2) sum += (buf[i] << 8) | buf[i + 1]
  if (i < end) sum += buf[i] << 8
  return sum
}

/** Folds a 32-bit running sum to 16 bits and returns its ones' complement. */
export function finishChecksum (sum: number): number {
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return (~sum) & 0xffff
}

/** Checksum of buf[start, end). A region that already holds a correct checksum sums to 0. */
export function internetChecksum (buf: Uint8Array, start = 0, end = buf.length): number {
  return finishChecksum(sumWords(buf, start, end))
}

/** Sum of the IPv4 pseudo-header used by TCP and UDP (RFC 9293 3.1, RFC 768). */
export function pseudoHeaderSum (src: number, dst: number, protocol: number, length: number): number {
  return (src >>> 16) + (src & 0xffff) + (dst >>> 16) + (dst & 0xffff) + protocol + length
}
