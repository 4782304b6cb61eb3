// Forms with a <label> on every field, errors next to their field (the API's 422 details.fields,
// linked with aria-describedby) and a form-level message in a role="alert" region.
import { ApiError } from './api.js'
import { append, clear, h, uniqueId } from './dom.js'

/** Readable sentences (and links) for an API error, for the form-level alert. */
export function describeError (err, context = {}) {
  if (!(err instanceof ApiError)) return ['Something went wrong. Reload the page and try again.']
  const details = err.details ?? {}
  switch (err.code) {
    case 'NETWORK_ERROR':
      return [err.message]
    case 'RATE_LIMITED': {
      const seconds = err.retryAfter ?? details.retry_after
      return [seconds ? `Too many attempts. Try again in ${seconds} second${Number(seconds) === 1 ? '' : 's'}.` : 'Too many attempts. Wait a moment and try again.']
    }
    case 'UNAUTHORIZED':
      return [context.signIn ? 'Email or password is incorrect.' : 'Your session has ended. Sign in again.']
    case 'SUBDOMAIN_TAKEN':
      return [`The subdomain "${details.subdomain ?? ''}" is already in use. Choose another one.`]
    case 'LIMIT_EXCEEDED':
      return [`${sentence(err.message)} To add more, upgrade your plan on the `, h('a', { href: '/billing' }, 'Billing'), ' page.']
    case 'SUBSCRIPTION_REQUIRED':
      return [`${sentence(err.message)} Choose a plan on the `, h('a', { href: '/billing' }, 'Billing'), ' page.']
    case 'FORBIDDEN':
      return [sentence(err.message || 'You are not allowed to do this.')]
    case 'BILLING_NOT_CONFIGURED':
      return ['Billing is not available on this server: every account is on the Free plan.']
    case 'VALIDATION_ERROR':
      return ['Some fields need your attention: see the messages next to them.']
    case 'INTERNAL_ERROR':
    case 'SERVICE_UNAVAILABLE':
    case 'BILLING_PROVIDER_ERROR':
      return ['Something went wrong on our side. Try again in a moment.']
    case 'NOT_FOUND':
      return [context.notFound ?? 'This item no longer exists.']
    default:
      return [sentence(err.message)]
  }
}

function sentence (text) {
  const trimmed = String(text ?? '').trim()
  if (trimmed === '') return ''
  const capital = trimmed[0].toUpperCase() + trimmed.slice(1)
  return /[.!?]$/.test(capital) ? capital : `${capital}.`
}

/** A role="alert" region (present from the start, so screen readers announce what is put in it). */
export function alertRegion () {
  return h('div', { role: 'alert', class: 'alert' })
}

export function showAlert (region, parts) {
  clear(region)
  if (parts === null || parts === undefined || (Array.isArray(parts) && parts.length === 0)) {
    region.classList.remove('alert-shown')
    return
  }
  region.classList.add('alert-shown')
  append(region, [h('p', {}, ...(Array.isArray(parts) ? parts : [parts]))])
}

/**
 * fields: [{ name, label, type, autocomplete, value, hint, checkbox }]
 * Returns { form, inputs, alert, errors, fieldError(name, messages), reset() }.
 */
export function createForm ({ fields, submit, onSubmit, className = 'stack', describe = {} }) {
  const alert = alertRegion()
  const inputs = {}
  const errorEls = {}
  const form = h('form', { class: className, novalidate: true })
  form.append(alert)
  for (const spec of fields) {
    const id = uniqueId(spec.name)
    const errorId = `${id}-error`
    const hintId = spec.hint ? `${id}-hint` : null
    const input = h(spec.multiline ? 'textarea' : 'input', {
      id,
      name: spec.name,
      type: spec.checkbox ? 'checkbox' : (spec.type ?? 'text'),
      autocomplete: spec.autocomplete,
      required: spec.required,
      value: spec.checkbox ? undefined : spec.value,
      checked: spec.checkbox ? spec.value === true : undefined,
      spellcheck: spec.spellcheck,
      inputmode: spec.inputmode,
      autocapitalize: spec.autocapitalize,
    })
    if (hintId) input.setAttribute('aria-describedby', hintId)
    const error = h('p', { id: errorId, class: 'field-error', hidden: true })
    const label = h('label', { for: id }, spec.label)
    const hint = spec.hint ? h('p', { id: hintId, class: 'hint' }, spec.hint) : null
    const wrap = spec.checkbox
      ? h('div', { class: 'field field-check' }, input, label, error)
      : h('div', { class: 'field' }, label, hint, input, spec.after ?? null, error)
    inputs[spec.name] = input
    errorEls[spec.name] = { error, input, hintId }
    form.append(wrap)
  }
  const button = h('button', { type: 'submit', class: 'btn btn-primary' }, submit)
  form.append(h('div', { class: 'actions' }, button))

  const fieldError = (name, messages) => {
    const entry = errorEls[name]
    if (!entry) return false
    const text = (messages ?? []).map(m => sentence(m)).join(' ')
    entry.error.textContent = text
    entry.error.hidden = text === ''
    const describedBy = [entry.hintId, text === '' ? null : entry.error.id].filter(Boolean).join(' ')
    if (describedBy) entry.input.setAttribute('aria-describedby', describedBy)
    else entry.input.removeAttribute('aria-describedby')
    if (text === '') entry.input.removeAttribute('aria-invalid')
    else entry.input.setAttribute('aria-invalid', 'true')
    return true
  }
  const resetErrors = () => {
    for (const name of Object.keys(errorEls)) fieldError(name, [])
    showAlert(alert, null)
  }
  const values = () => Object.fromEntries(Object.entries(inputs).map(([name, input]) => [name, input.type === 'checkbox' ? input.checked : input.value]))

  const ctx = { form, inputs, alert, button, fieldError, resetErrors, values }

  /** Puts a failed request's messages where they belong; returns true when shown. */
  ctx.showError = (err, extra = {}) => {
    if (err instanceof ApiError && err.code === 'VALIDATION_ERROR') {
      const fieldsByName = err.details?.fields ?? {}
      const orphans = []
      let firstInvalid = null
      for (const [name, messages] of Object.entries(fieldsByName)) {
        if (fieldError(name, messages)) firstInvalid ??= inputs[name]
        else orphans.push(...messages.map(m => name === '' ? sentence(m) : `${name}: ${m}`))
      }
      if (firstInvalid && orphans.length === 0) {
        showAlert(alert, describeError(err))
        firstInvalid.focus()
      } else {
        showAlert(alert, orphans.length > 0 ? (extra.orphans?.(orphans) ?? orphans.join(' ')) : describeError(err))
      }
      return
    }
    showAlert(alert, extra.parts?.(err) ?? describeError(err, describe))
  }

  form.addEventListener('submit', async event => {
    event.preventDefault()
    if (button.disabled) return
    resetErrors()
    button.disabled = true
    form.setAttribute('aria-busy', 'true')
    try {
      await onSubmit(values(), ctx)
    } catch (err) {
      ctx.showError(err)
    } finally {
      button.disabled = false
      form.removeAttribute('aria-busy')
    }
  })
  return ctx
}
