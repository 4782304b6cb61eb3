// Billing: plan and usage, Checkout in a new tab with the page polling until the plan changes,
// the Stripe portal, and the pages Checkout returns to.
import { api, isSignedIn } from '../api.js'
import { clear, formatDate, h } from '../dom.js'
import { alertRegion, describeError, showAlert } from '../forms.js'
import { session } from '../session.js'
import { errorState, limitWords, loading, PLAN_NAMES } from './common.js'

/** The spec's Checkout flow polls every 3 s; we stop after 30 minutes. */
const DEFAULT_POLL_MS = 3000
const POLL_FOR_MS = 30 * 60 * 1000

const STATUS_TEXT = {
  none: null,
  active: 'Active',
  trialing: 'Trial',
  past_due: 'Payment overdue: update your payment method in Manage billing',
  canceled: 'Cancelled',
  incomplete: 'Waiting for the first payment',
  unpaid: 'Unpaid: update your payment method in Manage billing',
}

/** Opens a tab synchronously (inside the click, so it is not blocked), pointed at the URL once known. */
function openTab () {
  const tab = window.open('', '_blank')
  if (tab) tab.opener = null
  return {
    go (url) {
      if (tab && !tab.closed) { tab.location.href = url; return true }
      return false
    },
    close () { if (tab && !tab.closed) tab.close() },
  }
}

export async function billing ({ main, signal }) {
  main.append(h('h1', {}, 'Billing'))
  const alert = alertRegion()
  const live = h('div', { role: 'status', class: 'status' })
  const body = h('div', {}, loading('Loading your plan…'))
  main.append(alert, live, body)
  let subscription

  // Every plan's limits, from the API (GET /billing/plans); they do not change while the page is open.
  let plans = []

  const draw = sub => {
    subscription = sub
    const { limits, usage } = sub
    const status = STATUS_TEXT[sub.status]
    const paid = sub.plan !== 'free'
    const domains = limits.custom_domains_per_instance === 0
      ? 'Not included'
      : `${usage.custom_domains} in use, up to ${limits.custom_domains_per_instance} per instance`
    clear(body).append(
      h('section', { class: 'card' },
        h('h2', {}, 'Current plan'),
        h('p', { class: 'plan-name' }, PLAN_NAMES[sub.plan] ?? sub.plan),
        h('dl', { class: 'facts' },
          h('dt', {}, 'Instances'), h('dd', {}, `${usage.instances} of ${limits.instances} instances`),
          h('dt', {}, 'Custom domains'), h('dd', {}, domains),
          status ? [h('dt', {}, 'Subscription'), h('dd', {}, status)] : null,
          sub.current_period_end ? [h('dt', {}, sub.cancel_at_period_end ? 'Ends on' : 'Renews on'), h('dd', {}, formatDate(sub.current_period_end))] : null,
          sub.payment_method ? [h('dt', {}, 'Payment method'), h('dd', {}, `${sub.payment_method.brand} ending in ${sub.payment_method.last4}`)] : null),
        usage.instances > limits.instances
          ? h('p', { class: 'note' }, `You have more instances than your plan allows: the newest ${usage.instances - limits.instances} ${usage.instances - limits.instances === 1 ? 'is' : 'are'} suspended (not served) until you upgrade or delete some.`)
          : null),
      h('section', { class: 'card' },
        h('h2', {}, 'Plans'),
        h('ul', { class: 'plans' },
          plans.map(({ plan, ...planLimits }) => {
            const words = limitWords(planLimits)
            return h('li', { class: plan === sub.plan ? 'plan current' : 'plan' },
              h('h3', {}, PLAN_NAMES[plan] ?? plan, plan === sub.plan ? ' (your plan)' : ''),
              h('p', {}, words.instances),
              h('p', {}, words.domains),
              plan !== 'free' && !paid ? h('button', { type: 'button', class: 'btn btn-primary', onclick: () => subscribe(plan) }, `Subscribe to ${PLAN_NAMES[plan] ?? plan}`) : null)
          })),
        paid || sub.status !== 'none'
          ? h('p', {}, h('button', { type: 'button', class: 'btn', onclick: manage }, 'Manage billing'), ' ', h('span', { class: 'muted' }, 'Change plan, payment method, invoices or cancel, in the Stripe portal.'))
          : null))
  }

  const load = async () => {
    const [sub, catalogue] = await Promise.all([api('GET', '/billing/subscription'), api('GET', '/billing/plans')])
    plans = catalogue.plans
    if (!signal.aborted) draw(sub)
    return sub
  }

  const subscribe = async plan => {
    showAlert(alert, null)
    const tab = openTab()
    let checkout
    try {
      checkout = await api('POST', '/billing/checkout', { plan })
    } catch (err) {
      tab.close()
      showAlert(alert, describeError(err))
      return
    }
    if (!tab.go(checkout.checkout_url)) {
      clear(live).append(h('p', {}, 'Open the payment page: ', h('a', { href: checkout.checkout_url, target: '_blank', rel: 'noopener noreferrer' }, 'Stripe Checkout'), '.'))
    } else {
      clear(live).append(h('p', {}, 'Complete the payment in the new tab. This page updates by itself when it is done.'))
    }
    waitForChange(subscription, checkout.poll_interval)
  }

  let waiting = false
  // pollMs: the checkout answer's poll_interval, in milliseconds (the API's unit).
  const waitForChange = (before, pollMs) => {
    if (waiting) return
    waiting = true
    const ms = Number.isFinite(pollMs) && pollMs > 0 ? pollMs : DEFAULT_POLL_MS
    const until = Date.now() + POLL_FOR_MS
    const tick = async () => {
      if (signal.aborted) return
      try {
        const sub = await api('GET', '/billing/subscription')
        if (signal.aborted) return
        if (sub.plan !== before.plan || sub.status !== before.status) {
          waiting = false
          draw(sub)
          clear(live).append(h('p', { class: 'ok' }, `You are now on the ${PLAN_NAMES[sub.plan] ?? sub.plan} plan.`))
          if (session.user) session.user.subscription_plan = sub.plan
          return
        }
      } catch { /* a missed poll is retried */ }
      if (Date.now() < until) setTimeout(tick, ms)
      else { waiting = false; clear(live).append(h('p', {}, 'Still waiting for the payment. Reload this page once you have paid.')) }
    }
    setTimeout(tick, ms)
  }

  const manage = async () => {
    showAlert(alert, null)
    const tab = openTab()
    try {
      const { portal_url: url } = await api('POST', '/billing/portal', {})
      if (!tab.go(url)) clear(live).append(h('p', {}, 'Open the ', h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, 'billing portal'), '.'))
      else clear(live).append(h('p', {}, 'The billing portal opened in a new tab. This page updates when your plan changes.'))
      waitForChange(subscription, DEFAULT_POLL_MS)
    } catch (err) {
      tab.close()
      showAlert(alert, describeError(err))
    }
  }

  try {
    await load()
  } catch (err) {
    if (!signal.aborted) clear(body).append(errorState(err, () => load().catch(e => clear(body).append(errorState(e)))))
  }
}

function checkoutReturn (main, title, message) {
  main.append(h('div', { class: 'narrow' },
    h('h1', {}, title),
    h('p', {}, message),
    isSignedIn() ? h('p', {}, h('a', { href: '/billing', class: 'btn' }, 'Go to Billing')) : h('p', {}, h('a', { href: '/sign-in' }, 'Sign in'), ' to see your plan.')))
}

/** Checkout's success_url (the session id in the query is not needed: the plan comes from the webhook). */
export function billingSuccess ({ main }) {
  checkoutReturn(main, 'Payment successful', 'Payment successful! You can close this tab and return to your Erugo admin panel, or to the Billing page: your plan updates there by itself in a moment.')
}

export function billingCancel ({ main }) {
  checkoutReturn(main, 'Payment cancelled', 'Payment cancelled. You can close this tab and try again from your Erugo admin panel or the Billing page. Nothing was charged.')
}

