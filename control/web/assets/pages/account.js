// Account (name, email, sign out everywhere) and the operator overview for administrators.
import { api, ApiError, forgetSession } from '../api.js'
import { clear, formatDate, h } from '../dom.js'
import { alertRegion, createForm, describeError, showAlert } from '../forms.js'
import { session } from '../session.js'
import { errorState, loading } from './common.js'

export async function account ({ main, signal, navigate, loadUser }) {
  main.append(h('h1', {}, 'Account'))
  const body = h('div', {}, loading('Loading your account…'))
  main.append(body)
  let user
  try {
    user = await loadUser()
  } catch (err) {
    if (!signal.aborted) clear(body).append(errorState(err, () => navigate('/account', { replace: true })))
    return
  }
  if (signal.aborted) return
  const saved = h('p', { role: 'status', class: 'status' })
  const form = createForm({
    fields: [{ name: 'name', label: 'Name', value: user.name, autocomplete: 'name' }],
    submit: 'Save',
    async onSubmit (values) {
      saved.textContent = ''
      const updated = await api('PATCH', '/user', { name: values.name })
      session.user = { ...session.user, ...updated }
      form.inputs.name.value = updated.name
      saved.textContent = 'Saved.'
    },
  })
  const everywhereAlert = alertRegion()
  const everywhere = h('button', {
    type: 'button',
    class: 'btn btn-danger',
    async onclick () {
      everywhere.disabled = true
      try {
        await api('POST', '/auth/logout-all')
        forgetSession()
        session.user = null
        navigate('/sign-in')
      } catch (err) {
        showAlert(everywhereAlert, describeError(err))
        everywhere.disabled = false
      }
    },
  }, 'Sign out everywhere')
  clear(body).append(
    h('section', { class: 'card' },
      h('h2', {}, 'Profile'),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Email'), h('dd', {}, user.email),
        h('dt', {}, 'Member since'), h('dd', {}, formatDate(user.created_at))),
      form.form, saved),
    h('section', { class: 'card' },
      h('h2', {}, 'Sessions'),
      h('p', {}, 'Signs out every browser and device signed in to your account, this one included.'),
      everywhereAlert,
      everywhere))
}

const OVERVIEW_SECTIONS = [
  ['gateways', 'Gateways'],
  ['instances', 'Instances'],
  ['recent_signups', 'Recent sign-ups'],
  ['paying_accounts', 'Paying accounts'],
  ['cancellations', 'Cancellations'],
  ['webhook_failures', 'Webhook failures'],
  ['expiring_certificates', 'Certificates expiring soon'],
]

const TIME_KEY = /(_at|_seen|_until|expires|_end|_start)$/

function cellText (key, value) {
  if (value === null || value === undefined) return '—'
  if (typeof value === 'string' && TIME_KEY.test(key)) return formatDate(value)
  if (typeof value === 'object') return JSON.stringify(value)
  return String(value)
}

function heading (key) {
  const text = key.replace(/_/g, ' ')
  return text[0].toUpperCase() + text.slice(1)
}

/** Rows of unknown shape as a table whose columns are the union of the rows' keys. */
function overviewTable (title, rows) {
  if (!Array.isArray(rows) || rows.length === 0) return h('p', { class: 'muted' }, 'Nothing to show.')
  const keys = [...new Set(rows.flatMap(row => Object.keys(row ?? {})))]
  return h('div', { class: 'table-wrap' }, h('table', {},
    h('caption', { class: 'visually-hidden' }, title),
    h('thead', {}, h('tr', {}, keys.map(k => h('th', { scope: 'col' }, heading(k))))),
    h('tbody', {}, rows.map(row => h('tr', {}, keys.map(k => h('td', {}, cellText(k, row?.[k]))))))))
}

export async function operator ({ main, signal }) {
  main.append(h('h1', {}, 'Operator'))
  const body = h('div', {}, loading('Loading the overview…'))
  main.append(body)
  let overview
  try {
    overview = await api('GET', '/admin/overview')
  } catch (err) {
    if (signal.aborted) return
    if (err instanceof ApiError && err.code === 'FORBIDDEN') clear(body).append(h('p', { role: 'alert', class: 'alert alert-shown' }, 'This page is for operators. Ask an administrator to grant you the operator role.'))
    else clear(body).append(errorState(err, null, { notFound: 'The operator overview is not available on this server.' }))
    return
  }
  if (signal.aborted) return
  clear(body)
  for (const [key, title] of OVERVIEW_SECTIONS) {
    body.append(h('section', { class: 'card' }, h('h2', {}, title), overviewTable(title, overview?.[key])))
  }
}
