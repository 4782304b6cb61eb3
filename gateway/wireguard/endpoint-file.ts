/**
 * Each peer's last endpoint, kept in a file so that a restarted gateway can initiate to its peers
 * itself (paper 5.1: either side may initiate) instead of waiting for each to notice the lost
 * session (up to KEEPALIVE_TIMEOUT + REKEY_TIMEOUT on their side, then a retransmission).
 *
 * Written rarely: an endpoint change (roaming, paper 2.1, or a peer's first handshake) schedules one
 * write of the whole file `flushDelayMs` later, so a burst of changes costs one write; close()
 * writes what is pending at once. The write goes to a temporary file renamed over the old one, so
 * a crash leaves the previous version, never half a file. Stream endpoints (WireGuard over TLS)
 * are not kept: nothing can be sent to them once their connection is gone.
 *
 *   {"version":1,"savedAt":"<ISO time>","endpoints":{"<base64 public key>":["198.18.0.2",51820]}}
 */
import { readFileSync } from 'node:fs'
import { isIP } from 'node:net'
import type { Logger } from 'pino'
import { writeAtomic, writeAtomicSync } from '../atomic-write.ts'
import type { Endpoint, Peer } from './peer.ts'
import { isStreamAddress } from './streams.ts'

const FILE_VERSION = 1

export class EndpointFile {
  readonly file: string
  private readonly flushDelayMs: number
  private readonly logger: Logger | undefined
  /** Endpoints read at start whose peers have not been added yet (control mode adds them later). */
  private readonly stored: Map<string, Endpoint>
  private readonly current: () => Iterable<Peer>
  private timer: NodeJS.Timeout | null = null
  private writing: Promise<void> | null = null
  private dirty = false
  writes = 0

  /** `current`: the device's peers, read at each write. A missing or unreadable file is an empty one. */
  constructor (file: string, current: () => Iterable<Peer>, options: { flushDelayMs: number, logger?: Logger }) {
    this.file = file
    this.current = current
    this.flushDelayMs = options.flushDelayMs
    this.logger = options.logger
    this.stored = readEndpoints(file, options.logger)
  }

  get size (): number { return this.stored.size }

  /** The stored endpoint of this peer, once (later calls: undefined). */
  take (name: string): Endpoint | undefined {
    const endpoint = this.stored.get(name)
    if (endpoint !== undefined) this.stored.delete(name)
    return endpoint
  }

  /** A peer's endpoint changed: write within flushDelayMs (one write for every change until then). */
  changed (): void {
    this.dirty = true
    if (this.timer !== null || this.writing !== null) return
    this.timer = setTimeout(() => { this.timer = null; void this.write() }, this.flushDelayMs)
    this.timer.unref()
  }

  /** Writes what is pending now (at shutdown). */
  close (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    if (!this.dirty) return
    this.dirty = false
    try {
      writeAtomicSync(this.file, this.serialize())
      this.writes++
    } catch (err) {
      this.logger?.warn({ err, file: this.file }, 'cannot write the peers\' endpoints')
    }
  }

  private async write (): Promise<void> {
    this.dirty = false
    this.writing = (async () => {
      try {
        await writeAtomic(this.file, this.serialize())
        this.writes++
      } catch (err) {
        this.logger?.warn({ err, file: this.file }, 'cannot write the peers\' endpoints')
      }
    })()
    await this.writing
    this.writing = null
    if (this.dirty) { this.dirty = false; this.changed() }
  }

  private serialize (): string {
    const endpoints: Record<string, [string, number]> = {}
    for (const [name, e] of this.stored) endpoints[name] = [e.address, e.port]
    for (const peer of this.current()) {
      const e = peer.endpoint
      if (e !== null && !isStreamAddress(e.address)) endpoints[peer.name] = [e.address, e.port]
    }
    return JSON.stringify({ version: FILE_VERSION, savedAt: new Date().toISOString(), endpoints })
  }
}

function readEndpoints (file: string, logger: Logger | undefined): Map<string, Endpoint> {
  const out = new Map<string, Endpoint>()
  let parsed: unknown
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8'))
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') logger?.warn({ err, file }, 'ignoring an unreadable endpoints file')
    return out
  }
  const endpoints = (parsed as { version?: unknown, endpoints?: unknown }).endpoints
  if ((parsed as { version?: unknown }).version !== FILE_VERSION || typeof endpoints !== 'object' || endpoints === null) {
    logger?.warn({ file }, 'ignoring an endpoints file of another version')
    return out
  }
  for (const [name, value] of Object.entries(endpoints)) {
    // Untrusted as any file: only [address, port] pairs with a plausible port are taken.
    if (!Array.isArray(value) || typeof value[0] !== 'string' || isIP(value[0]) === 0 || !Number.isInteger(value[1]) || value[1] < 1 || value[1] > 65535) continue
    out.set(name, { address: value[0], port: value[1] })
  }
  return out
}
