/**
 * Metric families that both the gateway and control expose under one name: under `start` they share
 * one registry, so whichever side comes first creates the family and the other reuses it. Only
 * names and label values live here (no client library): this is the contract Grafana reads.
 */

/** Failed tunnel connection attempts, by reason (handshakes at the gateway, registrations at control). */
export const TUNNEL_FAILED_ATTEMPTS = {
  name: 'cc_tunnel_failed_attempts_total',
  help: 'Failed tunnel connection attempts, by reason: invalid_mac, handshake_rejected, unknown_key, cookie_under_load (gateway); register_refused_401/402/409/422 (control)',
  labelNames: ['reason'],
} as const

export type TunnelFailureReason =
  | 'invalid_mac' | 'handshake_rejected' | 'unknown_key' | 'cookie_under_load'
  | 'register_refused_401' | 'register_refused_402' | 'register_refused_409' | 'register_refused_422'
