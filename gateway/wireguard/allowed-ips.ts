/**
 * Cryptokey routing table (WireGuard paper 2): IPv4 prefixes -> owner, longest-prefix match.
 * One hash map per prefix length in use, probed from the longest length down: with the usual /32 per
 * peer a lookup is a single Map.get.
 */
import type { IPv4Prefix } from '../../proto/wire/ipv4.ts'

interface LengthTable<T> { prefixLength: number, mask: number, entries: Map<number, T> }

export class AllowedIps<T> {
  private tables: LengthTable<T>[] = []

  /** Inserts or moves a prefix to `owner` (as `wg set ... allowed-ips`: the latest insert wins). */
  insert (prefix: IPv4Prefix, owner: T): void {
    let table = this.tables.find(t => t.prefixLength === prefix.prefixLength)
    if (table === undefined) {
      table = { prefixLength: prefix.prefixLength, mask: prefix.mask, entries: new Map() }
      this.tables.push(table)
      this.tables.sort((a, b) => b.prefixLength - a.prefixLength)
    }
    table.entries.set((prefix.network & prefix.mask) >>> 0, owner)
  }

  /** Owner of the longest prefix containing `address`, or undefined. */
  lookup (address: number): T | undefined {
    const tables = this.tables
    for (let i = 0; i < tables.length; i++) {
      const t = tables[i]
      const owner = t.entries.get((address & t.mask) >>> 0)
      if (owner !== undefined) return owner
    }
    return undefined
  }

  /** Removes every prefix owned by `owner`. */
  removeOwner (owner: T): void {
    for (const t of this.tables) {
      for (const [network, o] of t.entries) if (o === owner) t.entries.delete(network)
    }
    this.tables = this.tables.filter(t => t.entries.size > 0)
  }

  /** Prefixes owned by `owner`, as "a.b.c.d/len" strings. */
  prefixesOf (owner: T): Array<{ network: number, prefixLength: number }> {
    const out: Array<{ network: number, prefixLength: number }> = []
    for (const t of this.tables) {
      for (const [network, o] of t.entries) if (o === owner) out.push({ network, prefixLength: t.prefixLength })
    }
    return out
  }
}
