/**
 * Cryptokey routing table (WireGuard paper 2): IPv4 prefixes -> owner, longest-prefix match.
 * One hash map per prefix length in use, probed from the longest length down: with the usual /32 per
 * peer a lookup is a single Map.get.
 */
import type { IPv4Prefix } from '../../proto/wire/ipv4.ts'

interface LengthTable<T> { prefixLength: number, mask: number, entries: Map<number, T> }

/**
 * A prefix as one number, `network * 64 + prefixLength` (38 bits, exact in a double): an owner's
 * usual single prefix is kept as one number instead of an array of objects (10,000 idle peers held
 * about 270 bytes each in that bookkeeping).
 */
type PackedPrefix = number

function pack (network: number, prefixLength: number): PackedPrefix {
  return network * 64 + prefixLength
}

function networkOf (packed: PackedPrefix): number {
  return Math.floor(packed / 64)
}

function lengthOf (packed: PackedPrefix): number {
  return packed % 64
}

export class AllowedIps<T> {
  private tables: LengthTable<T>[] = []
  /** Each owner's prefixes (one, or an array of several): removeOwner and prefixesOf cost the owner's few, not the whole table's. */
  private readonly owned = new Map<T, PackedPrefix | PackedPrefix[]>()

  /** Inserts or moves a prefix to `owner` (as `wg set ... allowed-ips`: the latest insert wins). */
  insert (prefix: IPv4Prefix, owner: T): void {
    let table = this.table(prefix.prefixLength)
    if (table === undefined) {
      table = { prefixLength: prefix.prefixLength, mask: prefix.mask, entries: new Map() }
      this.tables.push(table)
      this.tables.sort((a, b) => b.prefixLength - a.prefixLength)
    }
    const network = (prefix.network & prefix.mask) >>> 0
    const previous = table.entries.get(network)
    if (previous === owner) return
    const packed = pack(network, prefix.prefixLength)
    if (previous !== undefined) this.disown(previous, packed)
    table.entries.set(network, owner)
    const mine = this.owned.get(owner)
    if (mine === undefined) this.owned.set(owner, packed)
    else if (typeof mine === 'number') this.owned.set(owner, [mine, packed])
    else mine.push(packed)
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
    let emptied = false
    for (const packed of typeof mine === 'number' ? [mine] : mine) {
      const table = this.table(lengthOf(packed))
      if (table === undefined) continue
      table.entries.delete(networkOf(packed))
      if (table.entries.size === 0) emptied = true
    }
    if (emptied) this.tables = this.tables.filter(t => t.entries.size > 0)
  }

  /** Prefixes owned by `owner`, longest first. */
  prefixesOf (owner: T): Array<{ network: number, prefixLength: number }> {
    const mine = this.owned.get(owner)
    if (mine === undefined) return []
    return (typeof mine === 'number' ? [mine] : mine)
      .map(p => ({ network: networkOf(p), prefixLength: lengthOf(p) }))
      .sort((a, b) => b.prefixLength - a.prefixLength)
  }

  private table (prefixLength: number): LengthTable<T> | undefined {
    return this.tables.find(t => t.prefixLength === prefixLength)
  }

  /** Takes one prefix out of `owner`'s list (it moved to another owner). */
  private disown (owner: T, packed: PackedPrefix): void {
    const theirs = this.owned.get(owner)
    if (theirs === undefined) return
    if (typeof theirs === 'number') {
      if (theirs === packed) this.owned.delete(owner)
      return
    }
    const i = theirs.indexOf(packed)
    if (i !== -1) theirs.splice(i, 1)
    if (theirs.length === 0) this.owned.delete(owner)
    else if (theirs.length === 1) this.owned.set(owner, theirs[0])
  }
}
