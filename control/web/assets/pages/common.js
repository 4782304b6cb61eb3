// Pieces several pages share: status words, loading and error states, polling, addresses.
import { api, ApiError } from '../api.js'
import { h } from '../dom.js'
import { describeError } from '../forms.js'

export const STATUS_WORDS = { connected: 'Connected', disconnected: 'Disconnected', pending: 'Pending', suspended: 'Suspended' }
export const PLAN_NAMES = { free: 'Free', pro: 'Pro', business: 'Business' }

/** "3 instances", "1 custom domain per instance": what `limits` (the API's PlanLimits) allow. */
export function limitWords (limits) {
  const n = limits.instances
  const d = limits.custom_domains_per_instance
  return {
    instances: `${n} instance${n === 1 ? '' : 's'}`,
    domains: d === 0 ? 'No custom domains' : `${d} custom domain${d === 1 ? '' : 's'} per instance`,
  }
}

/** The plan in force with its limits and usage (GET /billing/subscription); null when it cannot be had. */
export async function subscriptionOrNull () {
  try { return await api('GET', '/billing/subscription') } catch { return null }
}

export function statusBadge (status) {
  return h('span', { class: `badge badge-${status}` }, STATUS_WORDS[status] ?? status)
}

export function loading (text) {
  return h('p', { class: 'muted loading', role: 'status' }, text)
}

/** An error state with a retry button. */
export function errorState (err, retry, context) {
  return h('div', { class: 'error-state' },
    h('p', { role: 'alert', class: 'alert alert-shown' }, ...describeError(err, context)),
    retry ? h('button', { type: 'button', class: 'btn', onclick: retry }, 'Try again') : null)
}

/** Calls `tick` every `ms` until the page is left; failures are passed to `onError`. Bounded by the page's life. */
export function poll (signal, ms, tick, onError = () => {}) {
  let timer = null
  const run = async () => {
    if (signal.aborted) return
    try { await tick() } catch (err) { if (!signal.aborted) onError(err) }
    if (!signal.aborted) timer = setTimeout(run, ms)
  }
  timer = setTimeout(run, ms)
  signal.addEventListener('abort', () => clearTimeout(timer))
}

/**
 * The instance's public URL. Through the edge the dashboard is on https://app.<base>[:port], and
 * instances are on the same HTTPS port; served directly (plain HTTP) the edge's port is unknown.
 */
export function publicUrl (fullDomain) {
  const port = location.protocol === 'https:' && location.port !== '' ? `:${location.port}` : ''
  return `https://${fullDomain}${port}`
}

export function isNotFound (err) {
  return err instanceof ApiError && err.code === 'NOT_FOUND'
}
