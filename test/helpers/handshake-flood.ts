/**
 * A bounded flood of WireGuard handshake initiations with a valid mac1 (WireGuard paper 5.4.4,
 * 5.4.7) from many UDP source ports, to put a responder "under load". The rest of each message is
 * random: a responder checks only mac1 before its load decision, so under load it must answer with
 * cookie replies (type 3), which are counted when their receiver index is one we sent.
 *
 *   node bin/run-ts.js test/helpers/handshake-flood.ts '{"target":"198.18.0.1:51820",
 *     "serverPublicKey":"base64","count":20000,"durationMs":5000,"sockets":200}'
 *
 * Prints one JSON line: { sent, cookieReplies, responses, otherReplies, sockets, elapsedMs }.
 * Bounded: at most `count` messages (<= 1,000,000) within `durationMs` (<= 60 s), then `waitMs`.
 */
import { createSocket, type Socket } from 'node:dgram'
import { randomFillSync } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { pathToFileURL } from 'node:url'
import { resolve } from 'node:path'
import { decodeKey, mac1Key, writeMac1 } from '../../proto/noise/index.ts'

export interface FloodOptions {
  target: string
  serverPublicKey: string
  count: number
  durationMs: number
  /** Distinct source ports (one socket each). */
  sockets?: number
  /** How long to keep counting replies after the last send. */
  waitMs?: number
}

export interface FloodResult {
  sent: number
  cookieReplies: number
  responses: number
  otherReplies: number
  sockets: number
  elapsedMs: number
}

const INITIATION_SIZE = 148
const MAC1_OFFSET = 116 // then mac1 (16 bytes) and mac2 (16, left zero: no cookie held)

export async function flood (o: FloodOptions): Promise<FloodResult> {
  const count = Math.min(Math.max(0, Math.floor(o.count)), 1_000_000)
  const durationMs = Math.min(Math.max(1, o.durationMs), 60_000)
  const socketCount = Math.min(Math.max(1, o.sockets ?? 200), 4096)
  const colon = o.target.lastIndexOf(':')
  const host = o.target.slice(0, colon)
  const port = Number(o.target.slice(colon + 1))
  const key = mac1Key(decodeKey(o.serverPublicKey))

  const sentIndices = new Set<number>()
  const result: FloodResult = { sent: 0, cookieReplies: 0, responses: 0, otherReplies: 0, sockets: socketCount, elapsedMs: 0 }
  const onMessage = (msg: Buffer): void => {
    const type = msg.length >= 8 ? msg.readUInt32LE(0) : -1
    if (type === 3 && msg.length === 64 && sentIndices.has(msg.readUInt32LE(4))) result.cookieReplies++
    else if (type === 2 && msg.length === 92 && sentIndices.has(msg.readUInt32LE(8))) result.responses++
    else result.otherReplies++
  }
  const sockets: Socket[] = []
  for (let i = 0; i < socketCount; i++) {
    const s = createSocket('udp4')
    s.on('message', onMessage)
    s.on('error', () => { /* ENOBUFS and the like: the flood is best effort */ })
    await new Promise<void>(resolve => s.bind(0, resolve))
    sockets.push(s)
  }

  // Built before the clock starts, so the send rate measures the responder, not our MAC code.
  const messages = Buffer.alloc(count * INITIATION_SIZE)
  randomFillSync(messages)
  for (let i = 0; i < count; i++) {
    const m = messages.subarray(i * INITIATION_SIZE, (i + 1) * INITIATION_SIZE)
    m.writeUInt32LE(1, 0) // type 1, reserved zero; then random sender index, ephemeral, static, timestamp
    m.fill(0, MAC1_OFFSET)
    sentIndices.add(m.readUInt32LE(4))
    writeMac1(m, key)
  }

  // Paced to finish in 80% of the duration, so a slow tick does not push the tail past the bound.
  const paceMs = durationMs * 0.8
  const start = Date.now()
  while (result.sent < count) {
    const elapsed = Date.now() - start
    if (elapsed > durationMs) break
    const due = Math.min(count, Math.ceil(count * Math.min(1, (elapsed + 10) / paceMs)))
    const batch = Math.min(due - result.sent, 500)
    for (let i = 0; i < batch; i++) {
      const i = result.sent
      sockets[i % socketCount].send(messages, i * INITIATION_SIZE, INITIATION_SIZE, port, host)
      result.sent++
    }
    await sleep(batch > 0 ? 0 : 2)
  }
  result.elapsedMs = Date.now() - start
  await sleep(Math.min(Math.max(0, o.waitMs ?? 1500), 10_000))
  for (const s of sockets) s.close()
  return result
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  const result = await flood(JSON.parse(process.argv[2] ?? '{}') as FloodOptions)
  process.stdout.write(JSON.stringify(result) + '\n')
}
