// Small DOM helpers: elements are built with createElement and textContent only (no HTML parsing),
// so nothing from the API or the address bar is ever parsed as markup.

/** h('a', { href: '/x', class: 'btn', onclick: fn }, 'text', child) */
export function h (tag, props = {}, ...children) {
  const el = document.createElement(tag)
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value)
    else if (key === 'class') el.className = value
    else if (key === 'text') el.textContent = value
    else if (key in el && !key.includes('-') && key !== 'list' && key !== 'form') el[key] = value
    else el.setAttribute(key, value === true ? '' : String(value))
  }
  append(el, children)
  return el
}

export function append (el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue
    el.append(child instanceof Node ? child : document.createTextNode(String(child)))
  }
  return el
}

export function clear (el) {
  while (el.firstChild) el.firstChild.remove()
  return el
}

let uid = 0
export function uniqueId (prefix) {
  uid += 1
  return `${prefix}-${uid}`
}

/** Copies text to the clipboard; falls back to selecting a hidden field on browsers without the API. */
export async function copyText (text) {
  try {
    await navigator.clipboard.writeText(text)
    return true
  } catch {
    const area = h('textarea', { class: 'offscreen', readOnly: true, value: text, 'aria-hidden': 'true', tabIndex: -1 })
    document.body.append(area)
    area.select()
    let ok = false
    try { ok = document.execCommand('copy') } catch { ok = false }
    area.remove()
    return ok
  }
}

/** A copy button that says "Copied" in a live region next to it. */
export function copyButton (label, getText) {
  const status = h('span', { class: 'copy-status', role: 'status' })
  const button = h('button', {
    type: 'button',
    class: 'btn btn-small',
    async onclick () {
      const ok = await copyText(getText())
      status.textContent = ok ? 'Copied' : 'Copy failed: select the text and copy it'
      setTimeout(() => { status.textContent = '' }, 4000)
    },
  }, label)
  return h('span', { class: 'copy' }, button, status)
}

/** A modal confirmation dialog; resolves true when the confirm button is pressed. */
export function confirmDialog ({ title, body, confirm, danger = false }) {
  return new Promise(resolve => {
    const titleId = uniqueId('dialog-title')
    const dialog = h('dialog', { class: 'dialog', 'aria-labelledby': titleId })
    const done = value => {
      dialog.close()
      dialog.remove()
      resolve(value)
    }
    append(dialog, [
      h('h2', { id: titleId }, title),
      ...(Array.isArray(body) ? body : [body]).map(text => h('p', {}, text)),
      h('div', { class: 'actions' },
        h('button', { type: 'button', class: danger ? 'btn btn-danger' : 'btn btn-primary', onclick: () => done(true) }, confirm),
        h('button', { type: 'button', class: 'btn', onclick: () => done(false) }, 'Cancel')),
    ])
    dialog.addEventListener('cancel', () => { dialog.remove(); resolve(false) })
    document.body.append(dialog)
    dialog.showModal()
  })
}

export function formatDate (iso) {
  if (iso === null || iso === undefined) return '—'
  const date = new Date(iso)
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString()
}

export function timeAgo (iso, now = Date.now()) {
  if (iso === null || iso === undefined) return 'Never'
  const seconds = Math.round((now - new Date(iso).getTime()) / 1000)
  if (!Number.isFinite(seconds)) return String(iso)
  if (seconds < 10) return 'Just now'
  if (seconds < 60) return `${seconds} seconds ago`
  const minutes = Math.round(seconds / 60)
  if (minutes < 60) return minutes === 1 ? '1 minute ago' : `${minutes} minutes ago`
  const hours = Math.round(minutes / 60)
  if (hours < 48) return hours === 1 ? '1 hour ago' : `${hours} hours ago`
  return new Date(iso).toLocaleDateString()
}
