/**
 * The shape of our log records: each key once per record. pino appends a child's bindings to its
 * parent's, so `logger.child({ module: 'udp' })` under a `module: 'userspace'` logger writes
 * `"module":"userspace","module":"udp"` (JSON.parse keeps the last, log stores differ). Children
 * made here are made from the nearest logger that was not, with the bindings merged: `module`
 * becomes the path (`userspace/udp`), any other key the child's value.
 */
import type { Logger } from 'pino'

interface Lineage {
  /** The logger this family of children is made from (its own bindings are never repeated). */
  base: Logger
  bindings: Record<string, unknown>
}

const lineages = new WeakMap<Logger, Lineage>()

/** A child with `bindings` merged into its parent's (`module` joined with '/'). */
export function childLogger (parent: Logger, bindings: Record<string, unknown>): Logger {
  const lineage = lineages.get(parent) ?? { base: parent, bindings: {} }
  const merged = { ...lineage.bindings, ...bindings }
  const parentModule = lineage.bindings.module
  if (typeof bindings.module === 'string' && typeof parentModule === 'string') merged.module = `${parentModule}/${bindings.module}`
  const child = lineage.base.child(merged, { level: parent.level })
  lineages.set(child, { base: lineage.base, bindings: merged })
  return child
}

/** The logger of a module: `module` is the parent's path and `name` (`userspace/udp`). */
export function moduleLogger (parent: Logger, name: string): Logger {
  return childLogger(parent, { module: name })
}
