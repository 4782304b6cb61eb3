/**
 * The gateway's metrics on a prom-client registry (one per Metrics, so several gateways in one
 * process never collide; `start` hands control and the gateway the same one).
 *
 * Counter families (`packets_dropped` by reason, ...) stay plain in-process maps, cheap enough for
 * the packet path (one Map lookup and an add); each is exposed as `cc_<name>{reason}` by a
 * prom-client collector that copies the map at scrape time. Gauges that are facts of the moment
 * (peers, active tunnels) are computed at scrape time too; histograms are prom-client's own.
 */
import { Counter, Gauge, Histogram, Registry } from 'prom-client'
import { sharedCounter } from '../proto/metrics.ts'

export { exposition } from '../proto/metrics.ts'

export const PREFIX = 'cc_'

export class CounterFamily {
  readonly name: string
  readonly help: string
  private readonly values = new Map<string, number>()
  private mirrorTo: ((label: string, by: number) => void) | null = null

  constructor (name: string, help: string) {
    this.name = name
    this.help = help
  }

  inc (label: string, by = 1): void {
    this.values.set(label, (this.values.get(label) ?? 0) + by)
    if (this.mirrorTo !== null) this.mirrorTo(label, by)
  }

  get (label: string): number {
    return this.values.get(label) ?? 0
  }

  total (): number {
    let sum = 0
    for (const v of this.values.values()) sum += v
    return sum
  }

  snapshot (): Record<string, number> {
    return Object.fromEntries(this.values)
  }

  /** Every later increment is also passed to `to` (a coarser family elsewhere). */
  mirror (to: (label: string, by: number) => void): void {
    this.mirrorTo = to
  }
}

/** A family's type in the exposition: a counter only grows; a gauge (e.g. connections by state) goes both ways. */
export type FamilyKind = 'counter' | 'gauge'

export interface MetricsOptions {
  /** Shared with other parts of the process (`start`); default: a registry of its own. */
  registry?: Registry
}

export class Metrics {
  readonly registry: Registry
  private readonly families = new Map<string, CounterFamily>()

  constructor (options: MetricsOptions = {}) {
    this.registry = options.registry ?? new Registry()
  }

  family (name: string, help: string, kind: FamilyKind = 'counter'): CounterFamily {
    let f = this.families.get(name)
    if (f === undefined) {
      const family = new CounterFamily(name, help)
      f = family
      this.families.set(name, family)
      const common = { name: `${PREFIX}${name}`, help, labelNames: ['reason'], registers: [this.registry] }
      if (kind === 'counter') {
        new Counter({ ...common, collect () { this.reset(); for (const [reason, value] of Object.entries(family.snapshot())) this.inc({ reason }, value) } })
      } else {
        new Gauge({ ...common, collect () { this.reset(); for (const [reason, value] of Object.entries(family.snapshot())) this.set({ reason }, value) } })
      }
    }
    return f
  }

  snapshot (): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {}
    for (const [name, f] of this.families) out[name] = f.snapshot()
    return out
  }

  /**
   * A gauge read at scrape time: `read` returns the value, or one value per label set. Registered
   * once per name (a second call returns the first gauge and ignores `read`).
   */
  gauge<L extends string> (name: string, help: string, labelNames: L[], read: () => number | Array<[Partial<Record<L, string>>, number]>): Gauge<L> {
    const existing = this.registry.getSingleMetric(name) as Gauge<L> | undefined
    if (existing !== undefined) return existing
    return new Gauge<L>({
      name,
      help,
      labelNames,
      registers: [this.registry],
      collect () {
        this.reset()
        const value = read()
        if (typeof value === 'number') this.set(value)
        else for (const [labels, v] of value) this.set(labels, v)
      },
    })
  }

  histogram (name: string, help: string, buckets: number[]): Histogram {
    const existing = this.registry.getSingleMetric(name) as Histogram | undefined
    return existing ?? new Histogram({ name, help, buckets, registers: [this.registry] })
  }

  /** A counter another part of the process may also count into (proto/metrics.ts): created once per registry. */
  sharedCounter<L extends string> (spec: { name: string, help: string, labelNames: readonly L[] }): Counter<L> {
    return sharedCounter(this.registry, spec)
  }
}
