/** The stack's counters (gateway/metrics.ts families), created once per stack. */
import type { Metrics, CounterFamily } from '../../metrics.ts'
import { STATE_NAMES } from './state.ts'

export class TcpCounters {
  /** Segments dropped, by reason (bad_checksum, no_connection, out_of_window, ...). */
  readonly dropped: CounterFamily
  /** Segments in and out. */
  readonly segments: CounterFamily
  /** Retransmitted segments by cause (rto, fast, sack, syn, probe). */
  readonly retransmits: CounterFamily
  /** Protocol events (challenge_ack, rst_sent, rst_received, keepalive_abort, duplicate_segment, ...). */
  readonly events: CounterFamily
  /** Connections currently in each state (a gauge: incremented on entry, decremented on exit). */
  readonly connections: CounterFamily
  /** Connections opened (active, passive) and closed (by reason). */
  readonly opened: CounterFamily
  readonly closed: CounterFamily
  /** Event-loop turns that sent data segments to one peer, by how many (BURST_BUCKETS). */
  readonly bursts: CounterFamily

  constructor (metrics: Metrics) {
    this.dropped = metrics.family('tcp_dropped', 'TCP segments dropped, by reason')
    this.segments = metrics.family('tcp_segments', 'TCP segments received (in) and sent (out)')
    this.retransmits = metrics.family('tcp_retransmits', 'TCP segments retransmitted, by cause')
    this.events = metrics.family('tcp_events', 'TCP protocol events')
    this.connections = metrics.family('tcp_connections', 'TCP connections currently in each state', 'gauge')
    this.opened = metrics.family('tcp_connections_opened', 'TCP connections opened, active or passive')
    this.closed = metrics.family('tcp_connections_closed', 'TCP connections closed, by reason')
    this.bursts = metrics.family('tcp_bursts', 'Event-loop turns that sent data segments to one peer, by how many segments (le_N: at most N)')
    for (const name of STATE_NAMES) if (name !== 'LISTEN') this.connections.inc(name, 0)
  }
}

/** Upper bounds of the burst buckets (segments to one peer in one turn); above the last: `over_<last>`. */
export const BURST_BUCKETS = [8, 16, 32, 64, 128, 256] as const

/** The tcp_bursts label for a burst of `segments`. */
export function burstLabel (segments: number): string {
  for (const bound of BURST_BUCKETS) if (segments <= bound) return BURST_LABELS[bound]!
  return BURST_OVER
}

const BURST_LABELS: Record<number, string> = Object.fromEntries(BURST_BUCKETS.map(b => [b, `le_${b}`]))
const BURST_OVER = `over_${BURST_BUCKETS[BURST_BUCKETS.length - 1]}`
