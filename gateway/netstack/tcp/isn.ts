/**
 * Initial sequence numbers per RFC 6528 3: ISN = M + F(localip, localport, remoteip, remoteport,
 * secretkey), M a 4-microsecond clock and F a keyed hash. The same hash gives each connection a
 * random timestamp offset (RFC 7323 5.4 / 7.1) so TSval does not leak the host clock.
 */
import { createHash, randomBytes } from 'node:crypto'

export class IsnGenerator {
  private readonly secret: Buffer
  private readonly tuple = Buffer.alloc(12)

  /** `secret` makes sequences reproducible in tests; production uses a random 32-byte key. */
  constructor (secret?: Uint8Array) {
    this.secret = secret === undefined ? randomBytes(32) : Buffer.from(secret)
  }

  /** Returns [isn, timestamp offset] for a connection; `now` in milliseconds. */
  generate (localAddress: number, localPort: number, remoteAddress: number, remotePort: number, now: number): [number, number] {
    const t = this.tuple
    t.writeUInt32BE(localAddress >>> 0, 0)
    t.writeUInt16BE(localPort, 4)
    t.writeUInt32BE(remoteAddress >>> 0, 6)
    t.writeUInt16BE(remotePort, 10)
    const digest = createHash('sha256').update(this.secret).update(t).digest()
    // RFC 6528 3: M ticks every 4 microseconds.
    const m = Math.floor(now * 250)
    return [(m + digest.readUInt32BE(0)) >>> 0, digest.readUInt32BE(4)]
  }
}
