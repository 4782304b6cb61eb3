/** Framing of WireGuard messages on a stream: golden bytes, split and coalesced frames, bad frames. */
import t from 'tap'
import { FrameDecoder, MAX_STREAM_MESSAGE_SIZE, encodeFrame } from '../../../gateway/wireguard/stream.ts'

/** A transport message of `size` bytes (type 4, reserved zero), its body a counter so order shows. */
function transport (size: number, tag: number): Buffer {
  const m = Buffer.alloc(size)
  m[0] = 4
  m.writeUInt32LE(tag, 4)
  return m
}

function initiation (): Buffer {
  const m = Buffer.alloc(148)
  m[0] = 1
  return m
}

function decodeAll (decoder: FrameDecoder, chunks: Buffer[]): { messages: Buffer[], error: string | null } {
  const messages: Buffer[] = []
  let error: string | null = null
  for (const chunk of chunks) {
    error = decoder.push(chunk, m => messages.push(Buffer.from(m)))
    if (error !== null) break
  }
  return { messages, error }
}

t.test('encodeFrame writes a big-endian length then the message', async t => {
  const m = transport(32, 7)
  const frame = encodeFrame(m)
  t.equal(frame.length, 34)
  t.same([...frame.subarray(0, 2)], [0x00, 0x20])
  t.ok(frame.subarray(2).equals(m))
  t.throws(() => encodeFrame(Buffer.alloc(0)), RangeError)
  t.throws(() => encodeFrame(Buffer.alloc(MAX_STREAM_MESSAGE_SIZE + 1)), RangeError)
})

t.test('frames arriving one byte at a time decode to the same messages', async t => {
  const sent = [initiation(), transport(32, 1), transport(1452, 2), transport(MAX_STREAM_MESSAGE_SIZE, 3)]
  const bytes = Buffer.concat(sent.map(encodeFrame))
  const decoder = new FrameDecoder()
  const chunks = [...bytes].map(b => Buffer.from([b]))
  const { messages, error } = decodeAll(decoder, chunks)
  t.equal(error, null)
  t.equal(messages.length, sent.length)
  for (let i = 0; i < sent.length; i++) t.ok(messages[i]!.equals(sent[i]!), `message ${i} byte-exact`)
  t.equal(decoder.buffered, 0)
})

t.test('many frames coalesced in one chunk, and a frame split across chunks, decode in order', async t => {
  const sent = Array.from({ length: 50 }, (_, i) => transport(32 + 16 * (i % 10), i))
  const bytes = Buffer.concat(sent.map(encodeFrame))
  const decoder = new FrameDecoder()
  // One cut inside a length prefix, one inside a message.
  const cuts = [0, 35, 1001, bytes.length]
  const chunks = cuts.slice(1).map((end, i) => bytes.subarray(cuts[i], end))
  const { messages, error } = decodeAll(decoder, chunks)
  t.equal(error, null)
  t.same(messages.map(m => m.readUInt32LE(4)), sent.map((_, i) => i))
})

t.test('a partial frame is held until the rest comes', async t => {
  const decoder = new FrameDecoder()
  const frame = encodeFrame(transport(64, 9))
  t.same(decodeAll(decoder, [frame.subarray(0, 40)]).messages, [])
  t.equal(decoder.buffered, 40)
  const { messages } = decodeAll(decoder, [frame.subarray(40)])
  t.equal(messages.length, 1)
  t.equal(messages[0]!.readUInt32LE(4), 9)
})

t.test('a zero length stops decoding as frame_empty', async t => {
  const decoder = new FrameDecoder()
  const { messages, error } = decodeAll(decoder, [Buffer.concat([encodeFrame(transport(32, 1)), Buffer.from([0, 0]), encodeFrame(transport(32, 2))])])
  t.equal(error, 'frame_empty')
  t.equal(messages.length, 1, 'the frame before it was delivered, nothing after')
  t.equal(decoder.push(encodeFrame(transport(32, 3)), () => t.fail('decoded after an error')), 'frame_empty')
})

t.test('a length past the limit stops decoding as frame_oversized before the body arrives', async t => {
  const decoder = new FrameDecoder()
  const header = Buffer.alloc(2)
  header.writeUInt16BE(MAX_STREAM_MESSAGE_SIZE + 1)
  t.equal(decoder.push(header, () => t.fail('delivered')), 'frame_oversized')
  t.equal(decoder.error, 'frame_oversized')
  t.equal(decoder.buffered, 0)
})

t.test('a frame whose message is not a WireGuard message stops decoding as malformed', async t => {
  for (const bad of [
    Buffer.from([9, 0, 0, 0, 1, 2, 3, 4]), // unknown type
    Buffer.from([1, 0, 0, 0, 1, 2, 3, 4]), // initiation of the wrong size
    Buffer.concat([Buffer.from([4, 1, 0, 0]), Buffer.alloc(28)]), // reserved bytes set
    Buffer.from([4, 0, 0]), // shorter than a header
  ]) {
    const decoder = new FrameDecoder()
    const frame = Buffer.concat([Buffer.from([0, bad.length]), bad])
    t.equal(decoder.push(frame, () => t.fail('delivered')), 'malformed', bad.toString('hex'))
  }
})
