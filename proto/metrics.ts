/**
 * What the gateway and control expose alike: families both count into under one name (under
 * `start` they share one registry, so whichever side comes first creates the family and the other
 * reuses it), Node's process metrics (once per process), and the text exposition of a registry.
 * The names here are the contract docker/grafana/cloud-connect.json reads.
 */
import { Counter, Registry, collectDefaultMetrics } from 'prom-client'

/** Failed tunnel connection attempts, by reason (handshakes at the gateway, registrations at control). */
export const TUNNEL_FAILED_ATTEMPTS = {
  name: 'cc_tunnel_failed_attempts_total',
  help: 'Failed tunnel connection attempts, by reason: invalid_mac, handshake_rejected, unknown_key, cookie_under_load (gateway); register_refused_401/402/409/422 (control)',
  labelNames: ['reason'],
} as const

export type TunnelFailureReason =
  | 'invalid_mac' | 'handshake_rejected' | 'unknown_key' | 'cookie_under_load'
  | 'register_refused_401' | 'register_refused_402' | 'register_refused_409' | 'register_refused_422'

/** The counter `spec` of `registry`, created on first use. */
export function sharedCounter<L extends string> (registry: Registry, spec: { name: string, help: string, labelNames: readonly L[] }): Counter<L> {
  const existing = registry.getSingleMetric(spec.name) as Counter<L> | undefined
  return existing ?? new Counter<L>({ name: spec.name, help: spec.help, labelNames: [...spec.labelNames], registers: [registry] })
}

let processRegistry: Registry | null = null

/**
 * Node's own metrics (event-loop lag, heap, GC, CPU), once per process however many listeners
 * serve them: prom-client's collectors install observers that are never removed.
 */
export function processMetrics (): Registry {
  if (processRegistry === null) {
    processRegistry = new Registry()
    // Unprefixed (process_*, nodejs_*): the names Node.js dashboards already know.
    collectDefaultMetrics({ register: processRegistry })
  }
  return processRegistry
}

/** The Prometheus text exposition of `registry` plus the process metrics. */
export async function exposition (registry: Registry): Promise<{ contentType: string, text: string }> {
  const merged = Registry.merge([processMetrics(), registry])
  return { contentType: merged.contentType, text: await merged.metrics() }
}
