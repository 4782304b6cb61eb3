// Pieces several pages share: status words, loading and error states, polling, addresses.
import { ApiError } from '../api.js'
import { h } from '../dom.js'
import { describeError } from '../forms.js'

export const STATUS_WORDS = { connected: 'Connected', disconnected: 'Disconnected', pending: 'Pending', suspended: 'Suspended' }
export const PLAN_NAMES = { free: 'Free', pro: 'Pro', business: 'Business' }

/**
 * The plans' limits as the server's control/services/plans.ts sets them (the API does not
 * publish them yet): instances per account, custom domains per instance.
 */
export const PLAN_LIMITS = { free: { instances: 1, domains: 0 }, pro: { instances: 3, domains: 1 }, business: { instances: 10, domains: 5 } }

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
