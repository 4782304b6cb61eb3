// The instance list (live status every 5 s) and the new-instance form (subdomain checked as the user types).
import { api, ApiError } from '../api.js'
import { clear, h, timeAgo } from '../dom.js'
import { createForm, showAlert } from '../forms.js'
import { session } from '../session.js'
import { errorState, loading, PLAN_NAMES, poll, statusBadge, subscriptionOrNull } from './common.js'

const STATUS_REFRESH_MS = 5000
/** The list answer has no full_domain; one detail call tells the base domain. */
let baseDomain = null

async function learnBaseDomain (instances) {
  if (baseDomain !== null || instances.length === 0) return
  const first = instances[0]
  const details = await api('GET', `/instances/${encodeURIComponent(first.id)}`)
  if (details.full_domain.startsWith(`${details.subdomain}.`)) baseDomain = details.full_domain.slice(details.subdomain.length + 1)
}

export function addressOf (instance) {
  if (instance.full_domain) return instance.full_domain
  return baseDomain === null ? instance.subdomain : `${instance.subdomain}.${baseDomain}`
}

export async function instanceList ({ main, signal }) {
  main.append(h('div', { class: 'page-head' }, h('h1', {}, 'Instances'), h('a', { href: '/instances/new', class: 'btn btn-primary' }, 'New instance')))
  const usage = h('p', { class: 'muted usage' })
  const body = h('div', {}, loading('Loading instances…'))
  main.append(usage, body)
  let shown = ''
  // The plan's limits from the API (once per visit); the count from the list, which refreshes.
  let plan = null

  const drawUsage = count => {
    if (plan === null) return
    const { instances: allowed } = plan.limits
    clear(usage).append(`${count} of ${allowed} instances on the ${PLAN_NAMES[plan.plan] ?? plan.plan} plan.`)
    if (count >= allowed) usage.append(' To add more, upgrade on the ', h('a', { href: '/billing' }, 'Billing'), ' page.')
  }

  const draw = instances => {
    drawUsage(instances.length)
    const key = JSON.stringify(instances.map(i => [i.id, i.name, i.subdomain, i.status, i.last_seen, i.tunnel_ip, i.custom_domain]))
    if (key === shown) {
      // Only the "ago" texts move.
      for (const cell of body.querySelectorAll('[data-seen]')) cell.textContent = timeAgo(cell.dataset.seen || null)
      return
    }
    shown = key
    clear(body)
    if (instances.length === 0) {
      body.append(h('div', { class: 'empty' },
        h('p', { class: 'empty-title' }, 'No instances yet'),
        h('p', {}, 'An instance connects one Erugo container to the internet. Create one, then paste its settings into your container.'),
        h('a', { href: '/instances/new', class: 'btn' }, 'Create your first instance')))
      return
    }
    const rows = instances.map(i => h('tr', {},
      h('th', { scope: 'row' }, h('a', { href: `/instances/${encodeURIComponent(i.id)}` }, i.name)),
      h('td', {}, addressOf(i), i.custom_domain ? h('div', { class: 'muted' }, i.custom_domain) : null),
      h('td', {}, statusBadge(i.status)),
      h('td', { 'data-seen': i.last_seen ?? '' }, timeAgo(i.last_seen)),
      h('td', { class: 'mono' }, i.tunnel_ip)))
    body.append(h('div', { class: 'table-wrap' }, h('table', {},
      h('caption', {}, 'Your instances'),
      h('thead', {}, h('tr', {}, ['Name', 'Address', 'Status', 'Last seen', 'Tunnel IP'].map(c => h('th', { scope: 'col' }, c)))),
      h('tbody', {}, rows))))
  }

  const load = async () => {
    if (plan === null) plan = await subscriptionOrNull()
    const { instances } = await api('GET', '/instances')
    try { await learnBaseDomain(instances) } catch { /* addresses fall back to the subdomain */ }
    if (!signal.aborted) draw(instances)
  }
  try {
    await load()
  } catch (err) {
    if (signal.aborted) return
    clear(body).append(errorState(err, () => { clear(body).append(loading('Loading instances…')); shown = ''; load().catch(e => clear(body).append(errorState(e))) }))
  }
  poll(signal, STATUS_REFRESH_MS, load)
}

const CHECK_DELAY_MS = 350

export function newInstance ({ main, signal, navigate }) {
  const availability = h('div', { class: 'availability', role: 'status', 'aria-live': 'polite' })
  const form = createForm({
    fields: [
      { name: 'name', label: 'Name', hint: 'For you, e.g. "Family photos".' },
      { name: 'subdomain', label: 'Subdomain', hint: 'Your instance\'s address: lower-case letters, digits and hyphens.', spellcheck: false, autocapitalize: 'none', autocomplete: 'off', after: availability },
    ],
    submit: 'Create instance',
    async onSubmit (values, ctx) {
      try {
        const created = await api('POST', '/instances', { name: values.name, subdomain: values.subdomain })
        session.freshTokens.set(created.instance.id, created.credentials.instance_token)
        navigate(`/instances/${encodeURIComponent(created.instance.id)}`)
      } catch (err) {
        if (err instanceof ApiError && err.code === 'SUBDOMAIN_TAKEN') {
          showAlert(ctx.alert, `The subdomain "${err.details.subdomain ?? values.subdomain}" is already in use. Choose another one.`)
          showAvailability(err.details.subdomain ?? values.subdomain, false, err.details.suggestions ?? [])
          return
        }
        throw err
      }
    },
  })
  const subdomain = form.inputs.subdomain

  const showAvailability = (label, available, suggestions = []) => {
    clear(availability)
    if (available) {
      availability.append(h('p', { class: 'ok' }, `${label} is available`))
      return
    }
    availability.append(h('p', { class: 'bad' }, `${label} is taken`))
    if (suggestions.length > 0) {
      availability.append(h('p', {}, 'Free alternatives:'), h('div', { class: 'suggestions' }, suggestions.map(s =>
        h('button', { type: 'button', class: 'btn btn-small', onclick () { subdomain.value = s; subdomain.focus(); check() } }, s))))
    }
  }

  let timer = null
  let asked = 0
  const check = async () => {
    clearTimeout(timer)
    const label = subdomain.value.trim().toLowerCase()
    form.fieldError('subdomain', [])
    if (label === '') { clear(availability); return }
    const mine = ++asked
    try {
      const answer = await api('GET', `/subdomains/check?subdomain=${encodeURIComponent(label)}`)
      if (mine !== asked || signal.aborted) return
      showAvailability(answer.subdomain, answer.available, answer.suggestions ?? [])
    } catch (err) {
      if (mine !== asked || signal.aborted) return
      clear(availability)
      if (err instanceof ApiError && err.code === 'VALIDATION_ERROR') form.fieldError('subdomain', err.details?.fields?.subdomain ?? [err.message])
      else form.showError(err)
    }
  }
  subdomain.addEventListener('input', () => {
    clearTimeout(timer)
    timer = setTimeout(check, CHECK_DELAY_MS)
  })
  signal.addEventListener('abort', () => clearTimeout(timer))

  // Says up front when the plan has no room (the API refuses with 403 LIMIT_EXCEEDED, shown in the form's alert).
  const room = h('p', { class: 'note', hidden: true })
  subscriptionOrNull().then(sub => {
    if (signal.aborted || sub === null || sub.usage.instances < sub.limits.instances) return
    const n = sub.limits.instances
    room.append(`Your ${PLAN_NAMES[sub.plan] ?? sub.plan} plan allows ${n} instance${n === 1 ? '' : 's'} and you have ${sub.usage.instances}: to create another, upgrade on the `, h('a', { href: '/billing' }, 'Billing'), ' page or delete an instance.')
    room.hidden = false
  })

  main.append(h('div', { class: 'narrow' },
    h('p', {}, h('a', { href: '/instances' }, '← Instances')),
    h('h1', {}, 'New instance'),
    room,
    form.form))
}
