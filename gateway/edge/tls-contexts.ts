/**
 * The TLS contexts in memory: a bounded least-recently-used cache keyed by certificate name. A
 * context (the parsed key and chain inside OpenSSL) costs tens of kilobytes; most names of a
 * gateway see no client for hours, so only the ones in use keep theirs and the rest are rebuilt
 * from the certificate store on their next handshake.
 */
import type tls from 'node:tls'

export const DEFAULT_TLS_CONTEXT_CACHE = 1_000

interface CachedContext {
  /** Serial of the certificate the context was built from: a renewed one never matches. */
  serialNumber: string
  context: tls.SecureContext
}

export class TlsContextCache {
  /** Insertion order is recency order: the first key is the least recently used. */
  private readonly entries = new Map<string, CachedContext>()
  private evictedCount = 0

  constructor (readonly capacity: number = DEFAULT_TLS_CONTEXT_CACHE) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new Error(`TLS context cache capacity must be a positive integer, not ${capacity}`)
  }

  /** The context of `name` built from the certificate with `serialNumber`, marked as just used. */
  get (name: string, serialNumber: string): tls.SecureContext | undefined {
    const hit = this.entries.get(name)
    if (hit === undefined || hit.serialNumber !== serialNumber) return undefined
    this.entries.delete(name)
    this.entries.set(name, hit)
    return hit.context
  }

  has (name: string): boolean {
    return this.entries.has(name)
  }

  /** Keep `context` as the most recently used; evict the least recently used beyond capacity. */
  set (name: string, serialNumber: string, context: tls.SecureContext): void {
    this.entries.delete(name)
    this.entries.set(name, { serialNumber, context })
    while (this.entries.size > this.capacity) {
      const oldest = this.entries.keys().next().value as string
      this.entries.delete(oldest)
      this.evictedCount++
    }
  }

  delete (name: string): void {
    this.entries.delete(name)
  }

  get size (): number {
    return this.entries.size
  }

  /** Contexts dropped to stay within capacity since start. */
  get evicted (): number {
    return this.evictedCount
  }
}
