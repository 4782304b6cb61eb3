/**
 * Counters for the gateway: monotonic named counters grouped by family (e.g. `packets_dropped` by
 * reason). Cheap enough for the packet path: one Map lookup and an add.
 */
export class CounterFamily {
  readonly name: string
  readonly help: string
  private readonly values = new Map<string, number>()

  constructor (name: string, help: string) {
    this.name = name
    this.help = help
  }

  inc (label: string, by = 1): void {
    this.values.set(label, (this.values.get(label) ?? 0) + by)
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
}

export class Metrics {
  private readonly families = new Map<string, CounterFamily>()

  family (name: string, help: string): CounterFamily {
    let f = this.families.get(name)
    if (f === undefined) {
      f = new CounterFamily(name, help)
      this.families.set(name, f)
    }
    return f
  }

  snapshot (): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {}
    for (const [name, f] of this.families) out[name] = f.snapshot()
    return out
  }

  /** Prometheus text exposition (counters only). */
  toPrometheus (prefix = 'cc_'): string {
    const lines: string[] = []
    for (const f of this.families.values()) {
      lines.push(`# HELP ${prefix}${f.name} ${f.help}`, `# TYPE ${prefix}${f.name} counter`)
      for (const [label, value] of Object.entries(f.snapshot())) {
        lines.push(`${prefix}${f.name}{reason="${label.replace(/["\\\n]/g, '_')}"} ${value}`)
      }
    }
    return lines.join('\n') + '\n'
  }
}
