/**
 * Writes to an accepted TLS socket kept below 16 KiB each. For one write of 16 KiB or more node's
 * TLSWrap allocates an output block for all of that write's records and keeps it at the head of
 * its ring for the connection's life (`NodeBIO::set_allocate_tls_hint`): an idle connection that
 * has carried a download held 80-280 KB instead of 16. Larger writes are split, and chunks queued
 * behind a slow reader (node's `writev`, one TLS write of their total) are written in groups.
 * Writes at or under the bound, and small batches, go through unchanged (EdgeOptions.tlsWriteMax;
 * the CPU per GB downloaded was the same within noise, bench/tls-writes.ts).
 *
 * HTTP/2 sessions write their frames from C++ straight into TLSWrap, not through these methods.
 */
import net from 'node:net'
import type tls from 'node:tls'

/** Plaintext per TLS write: one record (16,384 B at most, RFC 8446 5.1) with its header, tag and padding fits node's 16 KiB output block. */
export const TLS_WRITE_MAX = 16_000

type Callback = (err?: Error | null) => void
interface Queued { chunk: unknown, encoding: BufferEncoding }

const socketWrite = net.Socket.prototype._write
const socketWritev = net.Socket.prototype._writev as (this: net.Socket, chunks: Queued[], cb: Callback) => void

function asBuffer (chunk: unknown, encoding: BufferEncoding): Buffer {
  return typeof chunk === 'string' ? Buffer.from(chunk, encoding) : chunk as Buffer
}

/** The chunks cut and grouped into writes of at most `max` bytes, in order, without copying. */
function groups (buffers: Buffer[], max: number): Buffer[][] {
  const out: Buffer[][] = []
  let group: Buffer[] = []
  let size = 0
  for (const buffer of buffers) {
    let at = 0
    while (at < buffer.length) {
      const take = Math.min(buffer.length - at, max - size)
      group.push(at === 0 && take === buffer.length ? buffer : buffer.subarray(at, at + take))
      at += take
      size += take
      if (size === max) { out.push(group); group = []; size = 0 }
    }
  }
  if (group.length > 0) out.push(group)
  return out
}

/** One write at a time: TLSWrap takes the next once the last has gone to the socket beneath. */
function writeInTurn (socket: net.Socket, parts: Buffer[][], cb: Callback): void {
  let i = 0
  const next = (err?: Error | null): void => {
    if (err != null) { cb(err); return }
    if (i === parts.length) { cb(); return }
    const part = parts[i++]
    if (part.length === 1) socketWrite.call(socket, part[0], 'buffer' as BufferEncoding, next)
    else socketWritev.call(socket, part.map(chunk => ({ chunk, encoding: 'buffer' as BufferEncoding })), next)
  }
  next()
}

function byteLength (chunk: unknown, encoding: BufferEncoding): number {
  return typeof chunk === 'string' ? Buffer.byteLength(chunk, encoding) : (chunk as Buffer).length
}

/** Bounds every later write on this socket to `max` bytes (own-instance methods; the prototype is untouched). */
export function boundTlsWrites (socket: tls.TLSSocket, max = TLS_WRITE_MAX): void {
  socket._write = function (this: net.Socket, chunk: unknown, encoding: BufferEncoding, cb: Callback): void {
    if (byteLength(chunk, encoding) <= max) { socketWrite.call(this, chunk, encoding, cb); return }
    writeInTurn(this, groups([asBuffer(chunk, encoding)], max), cb)
  }
  socket._writev = function (this: net.Socket, chunks: Queued[], cb: Callback): void {
    let total = 0
    for (const { chunk, encoding } of chunks) total += byteLength(chunk, encoding)
    if (total <= max) { socketWritev.call(this, chunks, cb); return }
    writeInTurn(this, groups(chunks.map(({ chunk, encoding }) => asBuffer(chunk, encoding)), max), cb)
  }
}
