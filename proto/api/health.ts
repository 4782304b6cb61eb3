/**
 * GET /health (liveness: the database answers) and GET /ready (readiness: every component, with
 * why). /ready answers 200 with a Readiness body when every component is `ok` or `not_configured`,
 * else 503 SERVICE_UNAVAILABLE whose `details` is the same Readiness body.
 */

/** `not_configured`: the component is off on this server (no Stripe key, no gateway RPC); not a failure. */
export type ComponentStatus = 'ok' | 'failing' | 'not_configured'

/** Components every control reports; `start` adds the in-process gateway's two listeners. */
export const READY_COMPONENTS = ['database', 'gateways', 'stripe_webhooks', 'certificates'] as const
export const GATEWAY_LISTENER_COMPONENTS = ['wireguard', 'https'] as const
export type ReadyComponent = typeof READY_COMPONENTS[number] | typeof GATEWAY_LISTENER_COMPONENTS[number]

export interface ComponentReadiness {
  status: ComponentStatus
  /** Why, in words. */
  detail: string
  /** RFC 3339 time of this process's last check that found the component `ok` (null: never). */
  checked_at: string | null
}

export interface Readiness {
  status: 'ready' | 'not_ready'
  /** Components that are `failing`, in READY_COMPONENTS then GATEWAY_LISTENER_COMPONENTS order. */
  failing: ReadyComponent[]
  components: Partial<Record<ReadyComponent, ComponentReadiness>>
}

/** Certificates whose not-after falls within this many days make `certificates` fail (renewal is due at a third of the lifetime left). */
export const READY_CERTIFICATE_EXPIRY_DAYS = 14
/** Stripe webhook failures not yet resolved by a retry within this window make `stripe_webhooks` fail. */
export const READY_WEBHOOK_FAILURE_WINDOW_SECONDS = 3600
/** A gateway silent for longer than this counts as retired, not as down. */
export const READY_GATEWAY_RETIRED_AFTER_SECONDS = 24 * 3600
