/**
 * Builds the periodic gateway report from the device's peer status and the edge's certificate
 * states. Between full reports (every `fullEvery`-th, and the first after each hello) only peers
 * and hostnames that changed since the last report control acknowledged are sent, so a quiet fleet
 * costs control almost nothing; a lost report is simply covered by the next one.
 *
 * `lastRxAt` is the time of the first report that saw a peer's received bytes grow: data from the
 * peer shows the tunnel is alive (control's last_seen) even between handshakes.
 */
import { RPC_PROTOCOL_VERSION, type CertificateReport, type GatewayReport, type PeerReport } from '../../proto/rpc/index.ts'
import type { PeerStatus } from '../wireguard/device.ts'

interface Observed { rxBytes: number, lastRxAt: number | null }

export class ReportBuilder {
  readonly gatewayId: string
  readonly fullEvery: number
  #count = 0
  #forceFull = true
  readonly #observed = new Map<string, Observed>()
  /** What control has acknowledged, per peer / hostname (JSON of the entry). */
  #ackedPeers = new Map<string, string>()
  #ackedCertificates = new Map<string, string>()

  constructor (gatewayId: string, fullEvery = 12) {
    this.gatewayId = gatewayId
    this.fullEvery = fullEvery
  }

  /** The next report is a full one (after a hello: control may have lost state). */
  forceFull (): void {
    this.#forceFull = true
  }

  build (peers: PeerStatus[], instanceIdOf: (publicKey: string) => string | undefined, certificates: CertificateReport[], now: number): GatewayReport {
    const full = this.#forceFull || this.#count % this.fullEvery === 0
    this.#count++
    const seen = new Set<string>()
    const out: PeerReport[] = []
    for (const p of peers) {
      seen.add(p.publicKey)
      let o = this.#observed.get(p.publicKey)
      if (o === undefined) {
        o = { rxBytes: p.rxBytes, lastRxAt: null }
        this.#observed.set(p.publicKey, o)
      } else if (p.rxBytes > o.rxBytes) {
        o.rxBytes = p.rxBytes
        o.lastRxAt = now
      }
      const entry: PeerReport = {
        publicKey: p.publicKey,
        lastHandshakeAt: p.lastHandshakeAt === null ? null : new Date(p.lastHandshakeAt).toISOString(),
        lastRxAt: o.lastRxAt === null ? null : new Date(o.lastRxAt).toISOString(),
        // A peer on WireGuard over TLS is reported by its address alone, as control's host:port expects.
        endpoint: p.endpoint?.startsWith('tls:') === true ? p.endpoint.slice(4) : p.endpoint,
        rxBytes: p.rxBytes,
        txBytes: p.txBytes,
      }
      const instanceId = instanceIdOf(p.publicKey)
      if (instanceId !== undefined) entry.instanceId = instanceId
      if (full || this.#ackedPeers.get(p.publicKey) !== JSON.stringify(entry)) out.push(entry)
    }
    for (const key of this.#observed.keys()) if (!seen.has(key)) this.#observed.delete(key)
    const certs = full ? certificates : certificates.filter(c => this.#ackedCertificates.get(c.hostname) !== JSON.stringify(c))
    return { protocol: RPC_PROTOCOL_VERSION, gatewayId: this.gatewayId, sentAt: new Date(now).toISOString(), full, peers: out, certificates: certs }
  }

  /** Control accepted `report`: later reports leave out what did not change since. */
  acknowledge (report: GatewayReport): void {
    if (report.full) {
      this.#ackedPeers = new Map()
      this.#ackedCertificates = new Map()
      this.#forceFull = false
    }
    for (const p of report.peers) this.#ackedPeers.set(p.publicKey, JSON.stringify(p))
    for (const c of report.certificates) this.#ackedCertificates.set(c.hostname, JSON.stringify(c))
  }
}
