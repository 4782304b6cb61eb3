/**
 * Cryptokey routing table (WireGuard paper 2): IPv4 prefixes -> owner, longest-prefix match.
 * One hash map per prefix length in use, probed from the longest length down: with the usual /32 per
 * peer a lookup is a single Map.get.
 */
import type { IPv4Prefix } from '../../proto/wire/ipv4.ts'

interface LengthTable<T> { prefixLength: number, mask: number, entries: Map<number, T> }

export class AllowedIps<T> {
  private tables: LengthTable<T>[] = []
  /** Each owner's prefixes: removeOwner and prefixesOf cost the owner's few, not the whole table's. */
  private readonly owned = new Map<T, Array<{ table: LengthTable<T>, network: number }>>()

  /** Inserts or moves a prefix to `owner` (as `wg set ... allowed-ips`: the latest insert wins). */
  insert (prefix: IPv4Prefix, owner: T): void {
    let table = this.tables.find(t => t.prefixLength === prefix.prefixLength)
    if (table === undefined) {
      table = { prefixLength: prefix.prefixLength, mask: prefix.mask, entries: new Map() }
      this.tables.push(table)
      this.tables.sort((a, b) => b.prefixLength - a.prefixLength)
    }
    const network = (prefix.network & prefix.mask) >>> 0
    const previous = table.entries.get(network)
    if (previous === owner) return
    if (previous !== undefined) {
      const theirs = this.owned.get(previous) ?? []
      const i = theirs.findIndex(p => p.table === table && p.network === network)
      if (i !== -1) theirs.splice(i, 1)
      if (theirs.length === 0) this.owned.delete(previous)
    }
    table.entries.set(network, owner)
    let mine = this.owned.get(owner)
    if (mine === undefined) this.owned.set(owner, mine = [])
    mine.push({ table, network })
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
    const mine = this.owned.get(owner)
    if (mine === undefined) return
    this.owned.delete(owner)
    for (const { table, network } of mine) table.entries.delete(network)
    if (mine.some(p => p.table.entries.size === 0)) this.tables = this.tables.filter(t => t.entries.size > 0)
  }

  /** Prefixes owned by `owner`, longest first. */
  prefixesOf (owner: T): Array<{ network: number, prefixLength: number }> {
    return (this.owned.get(owner) ?? [])
      .map(p => ({ network: p.network, prefixLength: p.table.prefixLength }))
      .sort((a, b) => b.prefixLength - a.prefixLength)
  }
}
