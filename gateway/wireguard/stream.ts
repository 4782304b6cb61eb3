/**
 * WireGuard messages carried over a byte stream (TLS on the HTTPS port, when UDP is blocked): each
 * message is one frame, a 2-byte big-endian length and the message itself.
 *
 *   frame = length (uint16, big-endian, 1..MAX_STREAM_MESSAGE_SIZE) || WireGuard message
 *
 * The stream only frames datagrams; authentication stays WireGuard's own. The decoder is sans-IO:
 * fed chunks as they arrive (a frame may be split anywhere, or many may share one chunk), it hands
 * each complete message on and stops at the first bad frame, naming why; the caller counts that and
 * closes the stream (a stream cannot resynchronise after a bad length).
 */
import { messageType, MESSAGE_TRANSPORT_HEADER_SIZE } from '../../proto/wire/wireguard.ts'
import { AEAD_TAG_LEN } from '../../proto/noise/constants.ts'
import { WireError } from '../../proto/wire/errors.ts'

/** Bytes of the length prefix. */
export const FRAME_HEADER_SIZE = 2
/**
 * Our limit on one framed message: a transport message (16-byte header, 16-byte tag) around a
 * 9216-byte packet, beyond any MTU a peer of ours uses. Longer lengths are refused as oversized.
 */
export const MAX_STREAM_MESSAGE_SIZE = MESSAGE_TRANSPORT_HEADER_SIZE + 9216 + AEAD_TAG_LEN

/** Why a stream was given up (the label it is counted under). */
export type FrameError = 'frame_empty' | 'frame_oversized' | 'malformed'

/** One frame around `message` (a fresh buffer). Throws for a length no decoder would accept. */
export function encodeFrame (message: Uint8Array): Buffer {
  if (message.length === 0 || message.length > MAX_STREAM_MESSAGE_SIZE) throw new RangeError(`cannot frame a message of ${message.length} bytes`)
  const frame = Buffer.allocUnsafe(FRAME_HEADER_SIZE + message.length)
  frame.writeUInt16BE(message.length, 0)
  frame.set(message, FRAME_HEADER_SIZE)
  return frame
}

export class FrameDecoder {
  private pending: Buffer = Buffer.alloc(0)
  private failed: FrameError | null = null

  /** The first bad frame's reason once one was seen (then nothing more is decoded). */
  get error (): FrameError | null {
    return this.failed
  }

  /** Bytes held for a frame not yet complete. */
  get buffered (): number {
    return this.pending.length
  }

  /**
   * Feeds one chunk; calls `onMessage` for every complete, well-formed message in order. Returns
   * null, or the reason decoding stopped (every later call returns it too and decodes nothing).
   * A message is a view of the chunk (or of a copy): the receiver may keep and modify it.
   */
  push (chunk: Buffer, onMessage: (message: Buffer) => void): FrameError | null {
    if (this.failed !== null) return this.failed
    let buf = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk])
    while (buf.length >= FRAME_HEADER_SIZE) {
      const length = buf.readUInt16BE(0)
      if (length === 0) return this.fail('frame_empty')
      if (length > MAX_STREAM_MESSAGE_SIZE) return this.fail('frame_oversized')
      if (buf.length < FRAME_HEADER_SIZE + length) break
      const message = buf.subarray(FRAME_HEADER_SIZE, FRAME_HEADER_SIZE + length)
      buf = buf.subarray(FRAME_HEADER_SIZE + length)
      // The same length and type checks the device applies to a UDP datagram, here fatal.
      try {
        messageType(message)
      } catch (err) {
        if (err instanceof WireError) return this.fail('malformed')
        throw err
      }
      onMessage(message)
    }
    // What is left is at most one partial frame: copied so the chunk it came in can go.
    this.pending = buf.length === 0 ? Buffer.alloc(0) : Buffer.from(buf)
    return null
  }

  private fail (reason: FrameError): FrameError {
    this.failed = reason
    this.pending = Buffer.alloc(0)
    return reason
  }
}
