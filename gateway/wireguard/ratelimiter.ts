/**
 * Token-bucket limiter of handshake messages per source IP (wireguard-go device/ratelimiter.go
 * semantics: 20 per second with a burst of 5, idle entries forgotten). Applied to handshakes that
 * carry a valid MAC2 while the device is under load (paper 5.3).
 */
import { RATELIMIT_BURST, RATELIMIT_PACKETS_PER_SECOND } from './limits.ts'

interface Bucket { tokens: number, lastAt: number }

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>()
  /** Token units are milliseconds of "credit": one packet costs 1000/rate ms. */
  private readonly packetCost: number
  private readonly maxTokens: number

  constructor (packetsPerSecond = RATELIMIT_PACKETS_PER_SECOND, burst = RATELIMIT_BURST) {
    this.packetCost = 1000 / packetsPerSecond
    this.maxTokens = this.packetCost * burst
  }

  /** True if a handshake from `sourceIp` may be processed at `now` (and charges for it). */
  allow (sourceIp: string, now: number): boolean {
    const bucket = this.buckets.get(sourceIp)
    if (bucket === undefined) {
      this.buckets.set(sourceIp, { tokens: this.maxTokens - this.packetCost, lastAt: now })
      return true
    }
    bucket.tokens = Math.min(this.maxTokens, bucket.tokens + Math.max(0, now - bucket.lastAt))
    bucket.lastAt = now
    // Compare with a small epsilon: 1000/20 is exact, but other rates are not.
    if (bucket.tokens + 1e-9 >= this.packetCost) {
      bucket.tokens -= this.packetCost
      return true
    }
    return false
  }

  /** Forgets sources idle for more than `idleMs` (their bucket would be full again anyway). */
  collect (now: number, idleMs = 1_000): void {
    for (const [ip, bucket] of this.buckets) if (now - bucket.lastAt > idleMs) this.buckets.delete(ip)
  }

  get size (): number { return this.buckets.size }
}
